"""The crash test: kill -9 a batch of 50 `generate` calls at chosen moments, then resume from the journal.

A child process (tests/journal_child.py, mode "batch") creates 50 tasks, 10
at a time, against a fake server that lives in this process, and downloads
each finished one. The server kills the child with SIGKILL at one moment per
test: before any create, as the first create arrives, just after the server
made the Nth task (its answer never read), after the last create and K polls,
or halfway through the Mth video. Then this process (another process than
the dead one) resumes from the journal: `in_doubt`, `resume`,
`download_pending`. N, K and M are drawn from a seeded random, so a run is
repeatable.

The checks, after each kill:

- every task the server made is accounted for exactly once: the journal
  knows it (and it ends finished or failed), or its create is in doubt;
- no prompt reached the server twice, and none left without its record;
- every create without a recorded answer is reported in doubt;
- only complete files are under final names; the only partial files are
  downloads' temporary names; no video recorded as saved is fetched again.

`python -m tests.test_journal_crash [SEED]` prints the table of outcomes by
kill point (`pytest -s` prints each row too).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import pathlib
import random
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from sora_async import PollPolicy, RetryPolicy, SoraClient, SoraError, Task, TaskFailedError
from sora_async.testing import FAILURE_TIMELINE, FakeSoraServer, FakeTask

from .conftest import eventually
from .journal_child import KEY, prompt
from .journal_support import VIDEO, Child, drop, files, integrity, serve_video, task_of_video

SEED = 20250611
COUNT = 50
CONCURRENCY = 10
FAILING = 5  # of the 50 prompts end in FAILURE
FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
QUICK = RetryPolicy(initial_delay=0.01, max_delay=0.02)

POINTS = ("ready", "first-create", "mid-creates", "polling", "download")
"""Where the child is killed: after it said it was ready, before any create; as its first
create arrives, before the server makes anything; once the server made task N (1 <= N <= 49)
and before its answer was read; at poll K (1 <= K <= 8) after the last create was answered;
halfway through the transfer of video M (1 <= M <= 30)."""


@dataclasses.dataclass
class Row:
    """What one crash and its resume came to."""

    point: str
    moment: str
    sent: int = 0
    """Creates that reached the server."""
    created: int = 0
    """Tasks the server made."""
    in_doubt: int = 0
    """Creates reported in doubt after the kill."""
    doubt_made: int = 0
    """Of those, the ones whose task the server did make (billed, with no id in the journal)."""
    pending: int = 0
    """Unfinished tasks in the journal after the kill."""
    finished: int = 0
    failed: int = 0
    saved_before: int = 0
    """Complete files under their final names after the kill."""
    saved_by_resume: int = 0
    """Videos `download_pending` fetched."""
    partial: int = 0
    """Temporary files the kill left (never under a final name)."""
    sent_twice: int = 0
    """Prompts that reached the server more than once."""
    partial_final: int = 0
    """Files under a final name that are not the whole video."""
    unaccounted: int = 0
    """Tasks the server made that the journal neither knows nor holds in doubt."""


COLUMNS = (
    ("kill point", "point"),
    ("moment", "moment"),
    ("sent", "sent"),
    ("created", "created"),
    ("in doubt", "in_doubt"),
    ("(made)", "doubt_made"),
    ("pending", "pending"),
    ("finished", "finished"),
    ("failed", "failed"),
    ("saved before", "saved_before"),
    ("saved by resume", "saved_by_resume"),
    ("partial", "partial"),
)


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    cells = [[str(getattr(row, field)) for _, field in COLUMNS] for row in rows]
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, (title, _) in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join(
        [line([title for title, _ in COLUMNS]), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    )


class Crash:
    """The server's side of one crash: it logs every create by prompt, makes the chosen
    prompts fail, serves videos slowly and kills the child at the chosen moment."""

    def __init__(self, server: FakeSoraServer, point: str, seed: int) -> None:
        draw = random.Random(f"{seed}:{point}")
        self.server = server
        self.point = point
        low, high = {"mid-creates": (1, COUNT - 1), "polling": (1, 8), "download": (1, 30)}.get(point, (1, 1))
        self.at = draw.randint(low, high)
        self.failing = {prompt("prompt", n) for n in draw.sample(range(COUNT), FAILING)}
        self.pid: int | None = None
        self.killed = asyncio.Event()
        self.moment = ""
        self.resuming = False
        self.posted: collections.Counter[str] = collections.Counter()
        """Creates that arrived, by prompt (both processes)."""
        self.answered = 0
        self.polls_after_creates = 0
        self.fetched: collections.Counter[str] = collections.Counter()
        """Videos fetched by the killed child, by task id."""
        self.refetched: collections.Counter[str] = collections.Counter()
        """Videos fetched by the resuming process, by task id."""
        server.app.middlewares.append(self.middleware)

    def kill(self, moment: str) -> None:
        assert self.pid is not None
        if self.killed.is_set():
            return
        os.kill(self.pid, signal.SIGKILL)
        self.moment = moment
        self.killed.set()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/sora/v1/videos":
            return await self.create(request, handler)
        video = task_of_video(request.path)
        if video is not None:
            return await self.video(request, video)
        if request.path.startswith("/sora/v1/videos/") and not self.resuming and self.answered == COUNT:
            self.polls_after_creates += 1
            if self.point == "polling" and self.polls_after_creates == self.at:
                self.kill(f"poll {self.at} after create {COUNT}")
        return await handler(request)

    async def create(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        text = json.loads(await request.read())["prompt"]  # the handler reads the cached body again
        self.posted[text] += 1
        if self.point == "first-create" and not self.resuming:
            self.kill("create 1 arrived, unanswered")
            drop(request)
        response = await handler(request)
        task = self.task(text)
        if task is not None and text in self.failing:
            task.timeline = FAILURE_TIMELINE  # not polled yet: its answer is still on its way
        self.answered += 1
        if self.point == "mid-creates" and self.answered == self.at:
            self.kill(f"task {self.at} made, answer unread")
        return response

    async def video(self, request: web.Request, task_id: str) -> web.StreamResponse:
        if self.resuming:
            self.refetched[task_id] += 1
            return await serve_video(request)
        self.fetched[task_id] += 1
        if self.point != "download" or self.fetched.total() != self.at:
            return await serve_video(request)

        async def midway() -> None:
            await asyncio.sleep(0.05)  # the child writes what it has
            self.kill(f"video {self.at} half sent")
            drop(request)

        return await serve_video(request, midway=midway)

    def task(self, text: str) -> FakeTask | None:
        return next((task for task in self.server.tasks.values() if task.prompt == text), None)


async def crash_and_resume(point: str, root: pathlib.Path, seed: int = SEED) -> Row:
    """Run the batch in a child, kill it at `point`, resume here, check everything; return the row."""
    journal = root / "jobs.sqlite3"
    folder = root / "videos"
    folder.mkdir()
    server = FakeSoraServer(api_key=KEY, seed=seed)
    crash = Crash(server, point, seed)
    async with server:
        child = await Child.start(
            "batch", server.url, str(journal), str(folder), str(COUNT), str(CONCURRENCY)
        )
        crash.pid = child.pid
        await child.ready()
        if point == "ready":
            crash.kill("after ready, before any create")
        else:
            child.go()
        await child.killed_when(crash.killed)
        # Its connections are closed: nothing it sent before dying is still to be handled.
        await eventually(lambda: server.open_connections == 0)

        crash.resuming = True
        sent = crash.posted.total()
        saved_files, partial = await asyncio.to_thread(files, folder)
        async with SoraClient(
            KEY, base_url=server.url, journal=journal, poll=FAST_POLL, retry=QUICK
        ) as client:
            assert client.journal is not None
            pending = await client.pending()
            before = await client.journal.tasks()
            doubt = await client.in_doubt()
            outcomes: dict[str, Task | SoraError] = {}
            async with client.resume(timeout=60) as waiting:
                async for task_id, outcome in waiting:
                    assert task_id not in outcomes
                    outcomes[task_id] = outcome
            saved = await client.download_pending(folder, timeout=60)
            after = await client.journal.tasks()
            creates = await client.journal.creates()
            assert await client.in_doubt() == doubt
            assert await client.pending() == []
        made = {task_id: task.prompt for task_id, task in server.tasks.items()}
        final = {task_id: task.timeline[-1][0] for task_id, task in server.tasks.items()}

    # No create was sent twice, none left without its record, and the resume sent none.
    assert all(n == 1 for n in crash.posted.values()), crash.posted.most_common(3)
    assert crash.posted.total() == sent
    assert len(set(made.values())) == len(made)
    intents = collections.Counter(create.prompt for create in creates)
    assert all(n == 1 for n in intents.values()), "one record per intent"
    assert set(crash.posted) <= set(intents), "a create left without its record"

    # Every create without an answer is in doubt; every answered one names its task.
    assert {create.state for create in creates} <= {"created", "in_doubt"}
    assert {c.ref for c in doubt} == {c.ref for c in creates if c.state != "created"}
    assert all(c.state == "in_doubt" and c.task_id is None for c in doubt)
    for create in creates:
        if create.state == "created":
            assert create.task_id is not None
            assert made[create.task_id] == create.prompt
    doubted = {c.prompt for c in doubt}

    # Every task the server made is accounted for exactly once: known, or its create in doubt.
    known = [task.task_id for task in after]
    assert len(known) == len(set(known))
    assert {task.task_id for task in before} == set(known), "the resume found a task of its own"
    assert set(known) <= set(made)
    assert set(known) == {c.task_id for c in creates if c.state == "created"}
    assert len(creates) == len(known) + len(doubt) >= sent, "each create sent is created or in doubt"
    for task_id, text in made.items():
        assert (task_id in known) != (text in doubted), (task_id, text)
    assert {task.task_id for task in pending} == set(outcomes)
    for task in after:
        assert task.status == final[task.task_id]
        ended = outcomes.get(task.task_id)
        if task.status == "FAILURE" and ended is not None:
            assert isinstance(ended, TaskFailedError)
        elif ended is not None:
            assert isinstance(ended, Task)

    # Only complete files under final names, each recorded once; no saved video fetched again.
    finished = {task.task_id for task in after if task.status == "SUCCESS"}
    names = {f"{task_id}_source.mp4": task_id for task_id in finished}
    recorded_before = {task.task_id for task in before if task.downloads}
    assert set(saved_files) <= set(names), "a final name no finished task has"
    assert all(content == VIDEO for content in saved_files.values()), "a partial file under a final name"
    final_files, temporary = await asyncio.to_thread(files, folder)
    assert set(final_files) == set(names)
    assert all(content == VIDEO for content in final_files.values())
    assert temporary == {}, "the resume left a temporary file (it removes those of the videos it saves)"
    assert all(size <= len(VIDEO) for size in partial.values())  # whole when killed before the link
    for task in after:
        if task.task_id in finished:
            [record] = task.downloads
            assert record.path == str(folder / f"{task.task_id}_source.mp4")
            assert record.size == len(VIDEO)
        else:
            assert task.downloads == ()
    assert all(n == 1 for n in crash.refetched.values())
    assert not set(crash.refetched) & recorded_before
    assert set(saved) == finished - recorded_before
    assert all(isinstance(path, pathlib.Path) for path in saved.values())
    assert integrity(journal) == "ok"

    row = Row(
        point=point,
        moment=crash.moment,
        sent=sent,
        created=len(made),
        in_doubt=len(doubt),
        doubt_made=len(doubted & set(made.values())),
        pending=len(pending),
        finished=len(finished),
        failed=sum(task.status == "FAILURE" for task in after),
        saved_before=len(saved_files),
        saved_by_resume=crash.refetched.total(),
        partial=len(partial),
    )
    row.sent_twice = sum(n > 1 for n in crash.posted.values())
    row.partial_final = sum(content != VIDEO for content in final_files.values())
    row.unaccounted = sum((task_id not in known) and (text not in doubted) for task_id, text in made.items())
    return row


@pytest.mark.parametrize("point", POINTS)
async def test_a_batch_killed_at_any_moment_resumes_with_nothing_lost_or_doubled(
    point: str, tmp_path: pathlib.Path
) -> None:
    row = await crash_and_resume(point, tmp_path)
    print("\n" + table([row]))
    # At every kill point: no create sent twice for one intent, no partial file under a final
    # name, every task made upstream known to the journal or its create in doubt.
    assert (row.sent_twice, row.partial_final, row.unaccounted) == (0, 0, 0)
    # What each kill point is about happened.
    if point == "ready":
        assert (row.sent, row.in_doubt, row.pending) == (0, 0, 0)
    elif point == "first-create":
        assert row.in_doubt >= 1, "the create on its way is in doubt"
        assert row.created < COUNT
    elif point == "mid-creates":
        assert row.doubt_made >= 1, "the task made just before the kill is in doubt"
    elif point == "polling":
        assert row.created == COUNT == 50
        assert row.pending >= 1
        # Each ended, once; or its answer had not reached the journal and its create is in doubt.
        assert row.finished + row.failed + row.doubt_made == COUNT
    elif point == "download":
        assert row.partial >= 1, "the kill left a temporary file"
        assert row.saved_by_resume >= 1


async def crash_table(seed: int = SEED) -> str:
    """Every kill point once, in a temporary folder: the table for the issue note."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for point in POINTS:
            folder = pathlib.Path(root) / point
            folder.mkdir()
            rows.append(await crash_and_resume(point, folder, seed))
    return table(rows)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the resume's warning about creates in doubt is in the table
    print(asyncio.run(crash_table(int(sys.argv[1]) if len(sys.argv) > 1 else SEED)))
