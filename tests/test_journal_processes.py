"""Two processes on one journal file: SQLite's locks keep it whole, and download claims keep
each video to one fetch (tests/journal_child.py is the other process)."""

from __future__ import annotations

import asyncio
import collections
import pathlib
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from sora_async import PollPolicy, RetryPolicy, SoraClient, SQLiteJournal
from sora_async._journal import this_process
from sora_async.testing import DEFAULT_TIMELINE, FakeSoraServer

from .conftest import eventually
from .journal_child import KEY, prompt
from .journal_support import VIDEO, Child, files, integrity, rows, serve_video, task_of_video

FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
QUICK = RetryPolicy(initial_delay=0.01, max_delay=0.02)


class VideoHost:
    """Serves the fake video host's files slowly, counts fetches by task id, and can hold
    every transfer until `release` (so a process is caught holding its claims)."""

    def __init__(self, server: FakeSoraServer, *, pause: float = 0.002) -> None:
        self.pause = pause
        self.fetched: collections.Counter[str] = collections.Counter()
        self.released = asyncio.Event()
        self.released.set()
        server.app.middlewares.append(self.middleware)

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        task_id = task_of_video(request.path)
        if task_id is None:
            return await handler(request)
        self.fetched[task_id] += 1
        await self.released.wait()
        return await serve_video(request, pause=self.pause)


async def finish_tasks(server: FakeSoraServer, journal: pathlib.Path, count: int) -> list[str]:
    """`count` finished tasks in the journal, none downloaded yet."""
    async with SoraClient(KEY, base_url=server.url, journal=journal, poll=FAST_POLL, retry=QUICK) as client:
        done = await asyncio.gather(*(client.generate(prompt("setup", n), timeout=30) for n in range(count)))
    return [task.task_id for task in done]


def pid_of(owner: str) -> int:
    """The pid in a journal owner (host:pid:start)."""
    return int(owner.split(":")[1])


async def test_two_processes_downloading_pending_fetch_each_video_once(tmp_path: pathlib.Path) -> None:
    journal, folder = tmp_path / "jobs.sqlite3", tmp_path / "videos"
    server = FakeSoraServer(api_key=KEY)
    host = VideoHost(server, pause=0.03)  # 150 ms a video: the two processes overlap
    async with server:
        ids = await finish_tasks(server, journal, 16)
        children = [await Child.start("download", server.url, str(journal), str(folder)) for _ in range(2)]
        for child in children:
            await child.ready()
        for child in children:
            child.go()
        first, second = [await child.result() for child in children]

    assert first, "both processes saved videos"
    assert second, "both processes saved videos"
    assert not set(first) & set(second)
    assert set(first) | set(second) == set(ids)
    assert not [what for what in (*first.values(), *second.values()) if what.startswith("error")]
    assert host.fetched == collections.Counter(ids), "a video fetched twice"
    final, temporary = files(folder)
    assert temporary == {}
    assert final == {f"{task_id}_source.mp4": VIDEO for task_id in ids}
    assert integrity(journal) == "ok"
    saved = rows(journal, "SELECT task_id, variant, state, size, owner FROM downloads")
    assert len(saved) == len(ids)
    by_pid = {children[0].pid: set(first), children[1].pid: set(second)}
    for task_id, variant, state, size, owner in saved:
        assert (variant, state, size) == ("source", "done", len(VIDEO))
        assert task_id in by_pid[pid_of(owner)], "recorded by the process that saved it"


async def test_two_processes_recording_at_once_keep_every_record(tmp_path: pathlib.Path) -> None:
    # Both open a new journal file at once, then create, poll and commit snapshots every
    # 10 ms, each on its own 25 tasks.
    journal = tmp_path / "jobs.sqlite3"
    async with FakeSoraServer(api_key=KEY) as server:
        children = [
            await Child.start("generate", server.url, str(journal), side, "25") for side in ("left", "right")
        ]
        for child in children:
            await child.ready()
        for child in children:
            child.go()
        made = [await child.result() for child in children]
        polls = {task_id: server.polls(task_id) for task_id in server.tasks}

    assert integrity(journal) == "ok"
    maker = {
        task_id: child.pid for child, tasks in zip(children, made, strict=True) for task_id in tasks.values()
    }
    assert len(maker) == len(polls) == 50
    records = SQLiteJournal(journal)
    try:
        tasks = await records.tasks()
        creates = await records.creates()
    finally:
        await records.aclose()
    assert {(task.task_id, task.status, task.prompt) for task in tasks} == {
        (task_id, "SUCCESS", text) for side in made for text, task_id in side.items()
    }
    assert {(c.prompt, c.state, c.task_id) for c in creates} == {
        (text, "created", task_id) for side in made for text, task_id in side.items()
    }
    for create in creates:
        assert create.task_id is not None
        assert pid_of(create.owner) == maker[create.task_id]
    # Every status change each process saw, once and in order: one per poll.
    changes = collections.defaultdict(list)
    for task_id, status, progress in rows(
        journal, "SELECT task_id, status, progress FROM changes ORDER BY rowid"
    ):
        changes[task_id].append((status, progress))
    assert changes == {task_id: list(DEFAULT_TIMELINE) for task_id in maker}
    assert set(polls.values()) == {len(DEFAULT_TIMELINE)}


async def test_a_download_claim_held_by_a_killed_process_is_taken_over(tmp_path: pathlib.Path) -> None:
    journal, folder = tmp_path / "jobs.sqlite3", tmp_path / "videos"
    server = FakeSoraServer(api_key=KEY)
    host = VideoHost(server)
    async with server:
        ids = await finish_tasks(server, journal, 3)
        host.hold()
        child = await Child.start("download", server.url, str(journal), str(folder))
        await child.ready()
        child.go()
        await eventually(lambda: host.fetched.total() == 3, timeout=30)  # it holds three claims
        claims = rows(journal, "SELECT task_id, state, owner FROM downloads")
        assert {(task_id, state, pid_of(owner)) for task_id, state, owner in claims} == {
            (task_id, "claimed", child.pid) for task_id in ids
        }
        async with SoraClient(
            KEY, base_url=server.url, journal=journal, poll=FAST_POLL, retry=QUICK
        ) as client:
            assert await client.download_pending(folder) == {}, "the claims of a live process are kept"
            assert host.fetched.total() == 3
            child.kill()
            _, err = await child.process.communicate()
            assert child.process.returncode == -signal.SIGKILL, err.decode()
            host.release()
            saved = await client.download_pending(folder)

    assert saved == {task_id: folder / f"{task_id}_source.mp4" for task_id in ids}
    assert host.fetched == collections.Counter(dict.fromkeys(ids, 2))
    assert rows(journal, "SELECT task_id, state, owner FROM downloads ORDER BY task_id") == [
        (task_id, "done", this_process()) for task_id in sorted(ids)
    ]
    final, temporary = files(folder)
    assert final == {f"{task_id}_source.mp4": VIDEO for task_id in ids}
    assert temporary == {}, "the killed process's temporary files are removed once its claims are taken over"
    assert integrity(journal) == "ok"
