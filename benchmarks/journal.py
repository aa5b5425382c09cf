"""The task journal's cost: client CPU per poll, fsyncs, time per create and disk bytes per task.

One FakeSoraServer (advance="poll": one timeline step per answered poll)
runs in its own process on the second core; this process, pinned to the
first, runs two clients on it: one with `journal=` (a `SQLiteJournal`,
counting its commits) and one without. They never share a task: the
journal client polls the 10,000 tasks it created, the other polls 10,000
twins the server made with the same timelines.

1. Creates, alternated: one at a time (wall and CPU time per create), then
   100 at once (wall time and the journal's commits per 100). The journal
   client goes on to create its 10,000 tasks.
2. CPU per poll, alternated: both clients poll their 10,000 tasks in rounds
   of 500 `get_task` calls (64 in flight), taking turns and swapping who
   goes first every round. A journal round ends with `flush()`, so the
   commits its polls caused are paid inside it. The first pass over the
   10,000 is the extreme case (every poll sees a new state); the second is
   the realistic mix, where a quarter of the polls see a change.
3. Disk: the journal client waits for its 10,000 tasks with `as_completed`
   (four more polls each, each a change, the last SUCCESS), saves one file
   of each and closes; the journal's files are then measured. To keep the
   run short, 1,000 files are fetched by `download`; the other 9,000 get
   the record `download` writes (absolute path, size) through
   `Journal.record_download`, without the transfer.

Every task's timeline: QUEUED 20%, then (one task in four) IN_PROGRESS 25%
or the same QUEUED 20% again, then IN_PROGRESS 40%, 60%, 80%, SUCCESS.
With its create's answer (SUBMITTED) that is 6-7 states over 6 polls, and
5.25 recorded changes per task on average.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sora_async import PollPolicy, SoraClient, SQLiteJournal, Task
from sora_async._journal_sqlite import _READS
from sora_async.testing import FakeSoraServer

from ._harness import admin, median, pin_to, python_process

COUNT = 10_000
"""Tasks per client."""
ROUND = 500
"""Polls per client per round of the CPU comparison."""
IN_FLIGHT = 64
"""Concurrent polls in a round (as poll_cpu.py's c=64)."""
DOWNLOADS = 1_000
"""Tasks whose file is fetched by `download`; the others get the same record directly."""
PROMPT = (
    "A paper boat drifting down a rainy city street at golden hour, reflections in the puddles, "
    "slow dolly shot"
)
FAST_POLL = PollPolicy(initial_interval=0.001, max_interval=0.001, jitter=0.0)

State = tuple[str, str]
_T = TypeVar("_T")
_R = TypeVar("_R")


def timeline(n: int) -> list[State]:
    """The states of the n-th task, one per poll; one task in four moves on its second poll."""
    first = ("QUEUED", "20%")
    second = ("IN_PROGRESS", "25%") if n % 4 == 0 else first
    return [
        first,
        second,
        ("IN_PROGRESS", "40%"),
        ("IN_PROGRESS", "60%"),
        ("IN_PROGRESS", "80%"),
        ("SUCCESS", "100%"),
    ]


def twin_id(n: int) -> str:
    return f"task_twin{n:05d}"


async def serve() -> None:
    """The server process: every create gets the next timeline, and the twins are ready."""
    async with FakeSoraServer(advance="poll") as server:
        for n in range(COUNT + 2_000):  # the creates of both clients, timing rounds included
            server.script_next(timeline(n))
        for n in range(COUNT):
            server.add_task(twin_id(n), timeline=timeline(n), prompt=PROMPT)
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class CountingJournal(SQLiteJournal):
    """A SQLiteJournal that counts its commits (one WAL fsync each under synchronous=FULL),
    the snapshot rows they carried, and the CPU time of its thread.

    Every write reaches the disk in a batch, one transaction on the journal's
    thread; wrapping `_batch` costs nothing per poll, where a sqlite3 trace
    callback would cost a call per statement. A batch of only reads takes
    no write lock and commits nothing, and is not counted.
    """

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(path)
        self.commits = 0
        self.rows = 0
        self.thread_cpu = 0.0

    def _batch(self, rows: list[Any], ops: list[Any]) -> Any:
        started = time.thread_time()
        try:
            return super()._batch(rows, ops)
        finally:
            self.thread_cpu += time.thread_time() - started
            if rows or any(work not in _READS for work, _ in ops):
                self.commits += 1
                self.rows += len(rows)


async def in_flight(call: Callable[[_T], Awaitable[_R]], items: Sequence[_T], concurrency: int) -> list[_R]:
    """`call` on each item, at most `concurrency` at a time; the results in order."""
    results: list[Any] = [None] * len(items)
    order = iter(enumerate(items))

    async def worker() -> None:
        for index, item in order:
            results[index] = await call(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def creates(
    clients: dict[str, SoraClient], journal: CountingJournal, rounds: int, per_round: int
) -> dict[str, Any]:
    """Creates one at a time and 100 at once, alternated; µs and ms per client, commits per create."""
    sequential: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    batch: dict[str, list[float]] = {name: [] for name in clients}
    commits_seq: list[int] = []
    commits_batch: list[int] = []
    for client in clients.values():  # open the session and the journal
        for _ in range(3):
            await client.create_video(PROMPT)
    for number in range(rounds):
        names = list(clients) if number % 2 == 0 else list(reversed(clients))
        for name in names:
            client = clients[name]
            before = journal.commits
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(per_round):
                await client.create_video(PROMPT)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            sequential[name].append((wall / per_round * 1e6, cpu / per_round * 1e6))
            if name == "journal":
                commits_seq.append(journal.commits - before)
    for number in range(rounds):
        names = list(clients) if number % 2 == 0 else list(reversed(clients))
        for name in names:
            client = clients[name]
            before = journal.commits
            wall = time.perf_counter()
            await asyncio.gather(*(client.create_video(PROMPT) for _ in range(100)))
            batch[name].append((time.perf_counter() - wall) * 1e3)
            if name == "journal":
                commits_batch.append(journal.commits - before)
    return {
        "wall_us": {name: median([s[0] for s in runs]) for name, runs in sequential.items()},
        "cpu_us": {name: median([s[1] for s in runs]) for name, runs in sequential.items()},
        "ratio": median(
            [j[0] / n[0] for j, n in zip(sequential["journal"], sequential["none"], strict=True)]
        ),
        "commits_per_create": sum(commits_seq) / (rounds * per_round),
        "batch_ms": {name: median(runs) for name, runs in batch.items()},
        "batch_commits": median([float(c) for c in commits_batch]),
        "made": 3 + rounds * (per_round + 100),
    }


async def poll_pass(
    clients: dict[str, SoraClient], ids: dict[str, list[str]], journal: CountingJournal
) -> dict[str, Any]:
    """One poll of each of the 10,000 tasks per client, in alternating rounds of ROUND."""
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    thread: list[float] = []
    walls: list[float] = []
    commits = rows = 0
    rounds = COUNT // ROUND
    for number in range(rounds):
        names = list(clients) if number % 2 == 0 else list(reversed(clients))
        for name in names:
            client = clients[name]
            chunk = ids[name][number * ROUND : (number + 1) * ROUND]
            commits_before, rows_before, thread_before = journal.commits, journal.rows, journal.thread_cpu
            started, wall = time.process_time(), time.perf_counter()
            await in_flight(client.get_task, chunk, IN_FLIGHT)
            if client.journal is not None:
                await client.journal.flush()  # pay for this round's commits inside it
            cpu[name].append((time.process_time() - started) / len(chunk) * 1e6)
            if name == "journal":
                walls.append(time.perf_counter() - wall)
                thread.append((journal.thread_cpu - thread_before) / len(chunk) * 1e6)
                commits += journal.commits - commits_before
                rows += journal.rows - rows_before
    polls = rounds * ROUND
    ratios = [j / n for j, n in zip(cpu["journal"], cpu["none"], strict=True)]
    return {
        "cpu_us": {name: median(values) for name, values in cpu.items()},
        "ratio": median(ratios),
        "quartiles": statistics.quantiles(ratios, n=4)[::2],
        "thread_us": median(thread),
        "changes_per_poll": rows / polls,
        "commits_per_10k": commits / polls * 10_000,
        "timer_commits_per_10k": sum(walls) / polls * 10_000 / journal.flush_interval,
        "rounds": rounds,
    }


async def finish(
    client: SoraClient, journal: CountingJournal, ids: list[str], url: str, folder: str
) -> dict[str, Any]:
    """Wait for every task with as_completed, download one file of each, close; measure the files."""
    requests = admin(url, "/_fake/stats")["requests"]
    commits = journal.commits
    done: list[Task] = []
    cpu, wall = time.process_time(), time.perf_counter()
    async for _, outcome in client.as_completed(ids, concurrency=IN_FLIGHT, poll=FAST_POLL, timeout=600):
        assert isinstance(outcome, Task), outcome
        done.append(outcome)
    await journal.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    polls = admin(url, "/_fake/stats")["requests"] - requests
    wait = {"polls": polls, "cpu_us": cpu / polls * 1e6, "wall_s": wall, "commits": journal.commits - commits}
    downloads = pathlib.Path(folder, "videos")  # made by main()
    fetch, record = done[:DOWNLOADS], done[DOWNLOADS:]
    commits = journal.commits
    started = time.perf_counter()
    saved = await in_flight(functools.partial(client.download, dest=downloads), fetch, 32)
    fetched: dict[str, Any] = {"wall_s": time.perf_counter() - started, "commits": journal.commits - commits}
    # The rest get the record download() writes (absolute path, size) without the transfer.
    size = await asyncio.to_thread(os.path.getsize, saved[0])
    assert str(saved[0]) == f"{downloads}/{fetch[0].task_id}_source.mp4", saved[0]

    def record_download(task: Task) -> Awaitable[None]:
        path = f"{downloads}/{task.task_id}_source.mp4"
        return journal.record_download(task.task_id, "source", path, size, base_url=client.base_url)

    commits = journal.commits
    started = time.perf_counter()
    await in_flight(record_download, record, 32)
    fetched.update(fetched=len(fetch), recorded=len(record), record_s=time.perf_counter() - started)
    fetched["record_commits"] = journal.commits - commits
    await client.aclose()
    await journal.aclose()
    files = {suffix or "db": _size(journal.path, suffix) for suffix in ("", "-wal", "-shm")}
    return {"wait": wait, "downloads": fetched, "files": files, **_contents(journal.path)}


def _size(path: pathlib.Path, suffix: str) -> int:
    target = path.with_name(path.name + suffix)
    return target.stat().st_size if target.exists() else 0


def _contents(path: pathlib.Path) -> dict[str, Any]:
    """Row counts, and bytes per table and index where SQLite has the dbstat table."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("creates", "tasks", "changes", "downloads")
        }
        try:
            pages = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.Error:
            pages = {}
    return {"rows": rows, "pages": pages}


async def run(url: str, folder: str, create_rounds: int) -> dict[str, Any]:
    journal = CountingJournal(pathlib.Path(folder, "journal.db"))
    clients = {
        "journal": SoraClient("bench-key", base_url=url, journal=journal, poll=FAST_POLL),
        "none": SoraClient("bench-key", base_url=url, poll=FAST_POLL),
    }
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    try:
        made = await creates(clients, journal, create_rounds, per_round=25)
        started = time.perf_counter()
        journal_client = clients["journal"]
        await in_flight(journal_client.create_video, [PROMPT] * (COUNT - made["made"]), 100)
        made["rest_s"] = time.perf_counter() - started
        made["rest"] = COUNT - made["made"]
        phases["creates"], clock = time.perf_counter() - clock, time.perf_counter()
        records = await journal.tasks()
        ids = {"journal": [r.task_id for r in records], "none": [twin_id(n) for n in range(COUNT)]}
        assert len(ids["journal"]) == COUNT, len(ids["journal"])
        extreme = await poll_pass(clients, ids, journal)
        realistic = await poll_pass(clients, ids, journal)
        phases["polls"], clock = time.perf_counter() - clock, time.perf_counter()
        await clients.pop("none").aclose()
        disk = await finish(clients.pop("journal"), journal, ids["journal"], url, folder)
        phases["disk"] = time.perf_counter() - clock
    finally:
        for client in clients.values():  # those not closed yet, on an error
            await client.aclose()
        await journal.aclose()
    return {"creates": made, "extreme": extreme, "realistic": realistic, "disk": disk, "phases": phases}


def main(create_rounds: int = 8) -> list[str]:
    """Run the journal benchmarks; print and return their markdown lines."""
    pin_to(0)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="sora-journal-bench-") as folder,
        python_process(["-m", "benchmarks.journal", "--serve"], cpu=1) as url,
    ):
        pathlib.Path(folder, "videos").mkdir()
        result = asyncio.run(run(url, folder, create_rounds))
    elapsed = time.monotonic() - started
    lines = _table(result, create_rounds)
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result["phases"].items())
    lines.append(f"- this benchmark took {elapsed:.0f} s ({phases})")
    print("\n".join(lines))
    return lines


def _table(result: dict[str, Any], create_rounds: int) -> list[str]:
    real, extreme, made, disk = result["realistic"], result["extreme"], result["creates"], result["disk"]
    files = disk["files"]
    wall, cpu, batch = made["wall_us"], made["cpu_us"], made["batch_ms"]
    total = sum(files.values())
    rows = disk["rows"]
    lines = [
        f"### CPU per poll, {COUNT:,} tasks per client (median of {real['rounds']} alternating rounds "
        f"of {ROUND:,} get_task, {IN_FLIGHT} in flight)",
        "",
        "| mix | changes per poll | no journal µs/poll | journal µs/poll (its thread) "
        "| journal / none (quartiles) "
        "| commits per 10,000 polls (counted; at one per 0.5 s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, figures in (
        ("realistic: 1 poll in 4 a change (~5 states over ~20 polls)", real),
        ("extreme: every poll a change", extreme),
    ):
        lines.append(
            f"| {label} | {figures['changes_per_poll']:.2f} | {figures['cpu_us']['none']:.1f} "
            f"| {figures['cpu_us']['journal']:.1f} ({figures['thread_us']:.1f}) | {figures['ratio']:.3f} "
            f"({figures['quartiles'][0]:.2f}-{figures['quartiles'][1]:.2f}) "
            f"| {figures['commits_per_10k']:.1f}; {figures['timer_commits_per_10k']:.1f} |"
        )
    lines += [
        "",
        f"- goal: journal / none <= 1.10 per poll in the realistic mix: "
        f"{'met' if real['ratio'] <= 1.10 else 'missed'} ({real['ratio']:.3f})",
        "",
        f"### Creates (medians of {create_rounds} alternating rounds)",
        "",
        "| creates | no journal | journal | journal / none | journal commits |",
        "| --- | --- | --- | --- | --- |",
        f"| one at a time, wall µs per create | {wall['none']:.0f} | {wall['journal']:.0f} "
        f"| {made['ratio']:.2f} | {made['commits_per_create']:.2f} per create |",
        f"| one at a time, CPU µs per create | {cpu['none']:.0f} | {cpu['journal']:.0f} "
        f"| {cpu['journal'] / cpu['none']:.2f} | |",
        f"| 100 at once, wall ms per 100 | {batch['none']:.0f} | {batch['journal']:.0f} "
        f"| {batch['journal'] / batch['none']:.2f} | {made['batch_commits']:.0f} per 100 |",
        "",
        f"- the other {made['rest']:,} creates, 100 in flight: {made['rest_s']:.1f} s "
        f"({made['rest'] / made['rest_s']:.0f} creates/s)",
        "",
        f"### Disk: {COUNT:,} tasks from create to SUCCESS, one download each",
        "",
        "| journal files after close | bytes per task | creates | tasks | changes | downloads |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {total / 1e6:.2f} MB (db {files['db']:,} B, wal {files['-wal']:,} B) | {total / COUNT:,.0f} "
        f"| {rows['creates']:,} | {rows['tasks']:,} | {rows['changes']:,} "
        f"({rows['changes'] / COUNT:.2f} per task) | {rows['downloads']:,} |",
        "",
    ]
    if disk["pages"]:
        share = ", ".join(
            f"{name} {size / COUNT:,.0f}"
            for name, size in sorted(disk["pages"].items(), key=lambda p: -p[1])
            if size >= COUNT
        )
        lines += [f"- bytes per task by table and index (dbstat): {share}", ""]
    wait, fetched = disk["wait"], disk["downloads"]
    lines += [
        f"- the wait to SUCCESS (as_completed, {wait['polls']:,} polls, every one a change): "
        f"{wait['cpu_us']:.1f} µs CPU per poll with the journal, {wait['commits']} commits in "
        f"{wait['wall_s']:.1f} s",
        f"- downloads, 32 in flight: {fetched['fetched']:,} by `download` in {fetched['wall_s']:.1f} s "
        f"({fetched['commits']:,} commits); the other {fetched['recorded']:,} records written by "
        f"`Journal.record_download` in {fetched['record_s']:.1f} s ({fetched['record_commits']:,} commits)",
    ]
    return lines


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        asyncio.run(serve())
    else:
        main()
