"""The task journal: what is recorded when, for every way a create can end, and picking up after.

The crash test (kill -9 at random moments) is in test_journal_crash.py; two
processes on one file in test_journal_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pathlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sora_async import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    CreateRecord,
    JournalError,
    PollPolicy,
    RetryPolicy,
    SoraClient,
    SoraError,
    SQLiteJournal,
    Task,
    TaskFailedError,
    TaskStatus,
    WaitTimeoutError,
    _journal_sqlite,
)
from sora_async._cadence_store import StoredCadence
from sora_async._journal_sqlite import MIGRATIONS, SCHEMA_VERSION, migrate
from sora_async.testing import FakeSoraServer, Fault

from .conftest import eventually

KEY = "sk-journal-test-8c41"
FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
QUICK = RetryPolicy(initial_delay=0.01, max_delay=0.02)
SAMPLES = pathlib.Path(__file__).parent / "samples"
DEAD = f"{socket.gethostname()}:999999999:"  # a pid no process has
API = "http://127.0.0.1:9"  # the API root snapshots are recorded under


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


def client_for(server: FakeSoraServer, journal: Any, **options: Any) -> SoraClient:
    options.setdefault("poll", FAST_POLL)
    options.setdefault("retry", QUICK)
    return SoraClient(KEY, base_url=server.url, journal=journal, **options)


def rows(path: pathlib.Path, sql: str) -> list[tuple[Any, ...]]:
    """What another connection (another process) reads from the journal file now."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def committed(path: pathlib.Path, sql: str) -> list[tuple[Any, ...]] | None:
    """`rows`, or None while the journal has not made its tables yet."""
    try:
        return rows(path, sql)
    except sqlite3.OperationalError:
        return None


# --- creates: the intent before, the answer after --------------------------------------


async def test_the_intent_is_on_disk_before_the_create_reaches_the_server(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    seen_by_server: list[list[tuple[Any, ...]]] = []

    def on_request(method: str, route: str, status: int, seconds: float) -> None:
        # Called as the server answers, before the client has read the answer: another
        # process reading the file now sees the intent, and no task id yet.
        if method == "POST":
            seen_by_server.append(rows(path, "SELECT prompt, state, task_id FROM creates"))

    async with (
        FakeSoraServer(api_key=KEY, on_request=on_request) as server,
        client_for(server, path) as client,
    ):
        task_id = await client.create_video("a lighthouse in fog", timeout=10)
    assert seen_by_server == [[("a lighthouse in fog", "sending", None)]]
    assert rows(path, "SELECT prompt, state, task_id FROM creates") == [
        ("a lighthouse in fog", "created", task_id)
    ]


# Every way a sent create can end, on both formats: (injected answer, the error raised, the
# state recorded). "refused": the API answered with an error that creates nothing, or the
# request provably never left; "in_doubt": it was sent and no usable answer came.
ENDINGS = [
    pytest.param(Fault(400, {"code": "invalid_request", "message": "bad size"}), BadRequestError,
                 "refused", "refused", id="400"),
    pytest.param(Fault(401, {"code": "invalid_key", "message": "no"}), SoraError,
                 "refused", "refused", id="401"),
    pytest.param(Fault(429, {"error": {"message": "slow down", "type": "rate_limit"}}), SoraError,
                 "refused", "in_doubt", id="429"),
    pytest.param(Fault(500, {"error": {"message": "upstream", "type": "server_error"}}), SoraError,
                 "in_doubt", "in_doubt", id="500"),
    pytest.param(Fault(502, "<html>bad gateway</html>", content_type="text/html"), SoraError,
                 "in_doubt", "in_doubt", id="502-html"),
    pytest.param(Fault(200, "{not json"), SoraError, "in_doubt", "in_doubt", id="malformed-200"),
    pytest.param(Fault.reset(), APIConnectionError, "in_doubt", "in_doubt", id="reset"),
    pytest.param(Fault(200, {}, delay=5.0), APITimeoutError, "in_doubt", "in_doubt", id="timeout"),
]  # fmt: skip


@pytest.mark.parametrize("api", ["reverse", "openai"])
@pytest.mark.parametrize(("fault", "error", "reverse_state", "openai_state"), ENDINGS)
async def test_every_way_a_create_ends_is_recorded_and_nothing_is_resent(
    server: FakeSoraServer,
    tmp_path: pathlib.Path,
    api: str,
    fault: Fault,
    error: type[BaseException],
    reverse_state: str,
    openai_state: str,
) -> None:
    path = tmp_path / "jobs.sqlite3"
    server.inject(fault, route="create", times=10)
    async with client_for(server, path, timeout=0.5, max_retries=0) as client:
        create_video = (
            client.create_video("a kite over dunes")
            if api == "reverse"
            else client.videos.create("a kite over dunes", model="sora-2")
        )
        with pytest.raises(error) as raised:
            await create_video
        state = reverse_state if api == "reverse" else openai_state
        [create] = await client.journal.creates()  # type: ignore[union-attr]
        assert (create.prompt, create.state, create.task_id) == ("a kite over dunes", state, None)
        assert create.error.startswith(type(raised.value).__name__)
        in_doubt = await client.in_doubt()
    assert [c.ref for c in in_doubt] == ([create.ref] if state == "in_doubt" else [])
    assert server.requests["create"] == 1
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert (f"create {create.ref} is recorded in the journal as in doubt" in notes) == (state == "in_doubt")


async def test_a_create_refused_at_connect_is_recorded_as_refused(tmp_path: pathlib.Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "jobs.sqlite3"
    async with SoraClient(
        KEY, base_url=f"http://127.0.0.1:{port}", journal=path, max_retries=1, retry=QUICK
    ) as client:
        with pytest.raises(APIConnectionError) as raised:
            await client.create_video("a kite")
        assert raised.value.request_sent is False
        [create] = await client.journal.creates()  # type: ignore[union-attr]
        assert create.state == "refused"
        assert await client.in_doubt() == []


async def test_a_create_that_never_left_the_budget_leaves_no_record(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path, max_concurrency=1) as client:
        server.inject(Fault(200, {}, delay=2.0), route="query")
        slow = asyncio.ensure_future(client.get_task("task_holding_the_only_slot"))
        await eventually(lambda: server.polls("task_holding_the_only_slot") == 1)  # it holds the slot
        with pytest.raises(APITimeoutError) as raised:
            await client.create_video("a kite", timeout=0.3)
        assert raised.value.request_sent is False
        assert await client.journal.creates() == []  # type: ignore[union-attr]
        slow.cancel()
        with pytest.raises((asyncio.CancelledError, SoraError)):
            await slow
    assert server.requests["create"] == 0


@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_a_create_cancelled_or_closed_in_flight_is_in_doubt_and_recorded_under_cancellation(
    server: FakeSoraServer, tmp_path: pathlib.Path, how: str
) -> None:
    path = tmp_path / "jobs.sqlite3"
    server.inject(Fault(200, {}, delay=5.0), route="create")
    client = client_for(server, path)
    create = asyncio.ensure_future(client.generate("a kite at dusk"))
    await eventually(lambda: server.requests["create"] == 1)
    if how == "cancel":
        create.cancel()
    else:
        await client.aclose()
    with pytest.raises((asyncio.CancelledError, SoraError)):
        await create
    await client.aclose()
    [record] = rows(path, "SELECT prompt, state FROM creates")
    assert record == ("a kite at dusk", "in_doubt")


async def test_a_journal_that_cannot_be_written_stops_the_create_before_it_is_sent(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    async with client_for(server, tmp_path / "no such folder" / "jobs.sqlite3") as client:
        with pytest.raises(JournalError) as raised:
            await client.generate("a kite")
    assert "no such folder" in str(raised.value)
    assert server.requests["create"] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"this is not a database, it is a shopping list\n" * 100, "not a database"), (None, "newer")],
)
async def test_a_file_that_is_not_our_journal_is_refused_with_a_typed_error(
    server: FakeSoraServer, tmp_path: pathlib.Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "jobs.sqlite3"
    if content is not None:
        path.write_bytes(content)
    else:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    async with client_for(server, path) as client:
        with pytest.raises(JournalError, match=message):
            await client.create_video("a kite")
    assert server.requests["create"] == 0
    if content is not None:
        assert path.read_bytes() == content  # left as it was


def test_a_folder_or_a_non_path_is_refused_at_construction(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="folder"):
        SoraClient(KEY, journal=tmp_path)
    with pytest.raises(TypeError, match="journal must be a path or a Journal"):
        SoraClient(KEY, journal=42)  # type: ignore[arg-type]


async def test_the_journal_never_holds_the_key(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        task = await client.generate("a kite", timeout=10)
        await client.download(task, tmp_path)
        await client.videos.generate("a kite", model="sora-2", timeout=10)
    for file in tmp_path.glob("jobs.sqlite3*"):
        assert KEY.encode() not in file.read_bytes()
    assert KEY not in repr(SQLiteJournal(path))


# --- what a wait records -------------------------------------------------------------


async def test_every_change_a_wait_sees_is_recorded_once_with_its_time(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    seen: list[tuple[str, str]] = []
    async with client_for(server, path) as client:
        task = await client.generate(
            "a kite", timeout=10, on_progress=lambda t: seen.append((t.status.value, t.progress))
        )
        assert task.status is TaskStatus.SUCCESS
    changes = rows(path, "SELECT status, progress, at FROM changes ORDER BY at")
    assert [(status, progress) for status, progress, _ in changes] == seen
    assert all(a[2] <= b[2] for a, b in itertools.pairwise(changes))
    assert server.polls(task.task_id) > len(seen) or len(seen) >= 2


async def test_a_task_only_waited_on_is_recorded_too(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    [task_id] = server.add_tasks(1, failure_rate=1.0)
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        with pytest.raises(TaskFailedError):
            await client.wait_until_done(task_id, timeout=10)
        [record] = await client.journal.tasks()  # type: ignore[union-attr]
    assert (record.task_id, record.status, record.prompt, record.ref) == (task_id, "FAILURE", "", None)
    assert record.fail_reason


async def test_snapshots_are_committed_together_not_one_commit_per_poll(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3", flush_interval=0.2)
    commits: list[int] = []
    original = _journal_sqlite._write_rows

    def counting(db: sqlite3.Connection, batch: list[Any]) -> None:
        commits.append(len(batch))
        original(db, batch)

    monkeypatch.setattr(_journal_sqlite, "_write_rows", counting)
    for n in range(10_000):
        journal.record_snapshot(Task(task_id=f"task_{n:05}", status=TaskStatus.QUEUED, progress="20%"), API)
    assert commits == []  # nothing on the event loop's path
    # The flush interval passes: committed, in one batch, without anyone asking.
    await eventually(lambda: committed(journal.path, "SELECT count(*) FROM tasks") == [(10_000,)])
    assert commits == [10_000]
    # unchanged snapshots are not written again
    for n in range(10_000):
        journal.record_snapshot(Task(task_id=f"task_{n:05}", status=TaskStatus.QUEUED, progress="20%"), API)
    await journal.aclose()
    assert commits == [10_000]
    assert rows(journal.path, "SELECT count(*) FROM changes") == [(10_000,)]


async def test_a_snapshot_reaches_the_disk_within_the_flush_interval_without_a_close(
    tmp_path: pathlib.Path,
) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3", flush_interval=0.1)
    await journal.flush()  # opened
    journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.IN_PROGRESS, progress="40%"), API)
    deadline = time.monotonic() + 5
    while rows(journal.path, "SELECT status FROM tasks") != [("IN_PROGRESS",)]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await journal.aclose()


async def test_a_final_status_is_never_overwritten_by_an_older_snapshot(tmp_path: pathlib.Path) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.SUCCESS, progress="100%"), API)
    await journal.flush()
    journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.IN_PROGRESS, progress="90%"), API)
    await journal.aclose()
    assert rows(journal.path, "SELECT status, progress FROM tasks") == [("SUCCESS", "100%")]


async def test_a_closed_journal_refuses_writes_with_a_typed_error(tmp_path: pathlib.Path) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    await journal.aclose()
    await journal.aclose()  # safe to repeat
    with pytest.raises(JournalError, match="closed"):
        await journal.record_answer("ref", "created", task_id="task_1")


# --- picking up after ----------------------------------------------------------------


async def test_pending_resume_and_download_pending_pick_up_both_formats(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as first:  # created, never waited for: a crash
        reverse = [await first.create_video(f"a kite {n}") for n in range(3)]
        openai = await first.videos.create("a kite 3", model="sora-2")
    async with client_for(server, path) as second:
        pending = await second.pending()
        assert [(p.task_id, p.prompt) for p in pending] == [
            *((task_id, f"a kite {n}") for n, task_id in enumerate(reverse)),
            (openai, "a kite 3"),
        ]
        async with second.resume(timeout=20) as outcomes:
            done = {task_id: outcome async for task_id, outcome in outcomes}
        assert set(done) == {*reverse, openai}
        assert all(isinstance(outcome, Task) for outcome in done.values())
        assert done[openai].format == "openai"  # type: ignore[union-attr]
        assert await second.pending() == []
        saved = await second.download_pending(tmp_path / "videos")
        assert sorted(p.name for p in saved.values()) == sorted(  # type: ignore[union-attr]
            [*(f"{t}_source.mp4" for t in reverse), f"{openai}_video.mp4"]
        )
        assert await second.download_pending(tmp_path / "videos") == {}  # nothing twice
        records = {r.task_id: r for r in await second.journal.tasks()}  # type: ignore[union-attr]
    assert all(len(r.downloads) == 1 and r.downloads[0].size for r in records.values())


async def test_resume_under_a_deadline_leaves_the_unfinished_pending(
    tmp_path: pathlib.Path,
) -> None:
    async with FakeSoraServer(api_key=KEY, advance="clock", step_seconds=3600) as server:
        path = tmp_path / "jobs.sqlite3"
        async with client_for(server, path) as first:
            task_id = await first.create_video("a slow kite")
        async with client_for(server, path) as second:
            started = time.monotonic()
            async with second.resume(timeout=0.5) as outcomes:
                [(got, outcome)] = [item async for item in outcomes]
            assert time.monotonic() - started < 5
            assert (got, type(outcome)) == (task_id, WaitTimeoutError)
            assert [p.task_id for p in await second.pending()] == [task_id]


async def test_a_failed_download_gives_its_claim_back(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        task = await client.generate("a kite", timeout=10)
        server.inject(Fault(500, "no"), route="cdn")
        failed = await client.download_pending(tmp_path / "videos")
        assert isinstance(failed[task.task_id], SoraError)
        saved = await client.download_pending(tmp_path / "videos")
    assert saved[task.task_id] == tmp_path / "videos" / f"{task.task_id}_source.mp4"


async def test_a_file_saved_by_a_run_that_died_before_recording_it_is_taken_as_saved(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        task = await client.generate("a kite", timeout=10)
        bytes_before = await client.download_bytes(task)
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / f"{task.task_id}_source.mp4").write_bytes(bytes_before)
    async with client_for(server, path) as client:
        saved = await client.download_pending(folder)
        [record] = await client.journal.tasks()  # type: ignore[union-attr]
    assert saved == {task.task_id: folder / f"{task.task_id}_source.mp4"}
    assert record.downloads[0].size == len(bytes_before)


async def test_creates_of_a_process_that_died_are_in_doubt_and_can_be_forgotten(
    tmp_path: pathlib.Path,
) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    sent = CreateRecord(ref="a" * 32, format="reverse", prompt="a kite", sent_at=time.time(), owner=DEAD)
    alive = CreateRecord(ref="b" * 32, format="reverse", prompt="a kite", sent_at=time.time(), owner="")
    await journal.record_create(sent)
    from sora_async._journal import this_process

    await journal.record_create(CreateRecord(**{**msgspec_fields(alive), "owner": this_process()}))
    [doubt] = await journal.creates(in_doubt=True)
    assert (doubt.ref, doubt.state) == (sent.ref, "in_doubt")
    assert "ended before the answer was recorded" in doubt.error
    assert await journal.forget([sent.ref, "task_nobody"]) == [sent.ref]
    assert await journal.creates(in_doubt=True) == []
    await journal.aclose()


def msgspec_fields(record: CreateRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__struct_fields__}


async def test_without_a_journal_the_journal_methods_say_how_to_get_one() -> None:
    async with SoraClient(KEY) as client:
        for call in (client.pending, client.in_doubt):
            with pytest.raises(ValueError, match="journal=PATH"):
                await call()
        with pytest.raises(ValueError, match="journal=PATH"):
            client.resume()


# --- the schema ----------------------------------------------------------------------


def test_a_journal_of_the_first_schema_version_opens_and_keeps_its_records(tmp_path: pathlib.Path) -> None:
    """tests/samples/journal_v1.sql was written by the first version; every later migration
    must open it and keep what it holds, and it then keeps what later versions keep (the
    refresh cadence, from version 3)."""
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript((SAMPLES / "journal_v1.sql").read_text())
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    db.close()
    cadence = StoredCadence(period=15.0, phase=1795900005.0, spread=2.0, learned_at=1795900100.0,
                            verified_at=1795900200.0)  # fmt: skip

    async def read() -> None:
        journal = SQLiteJournal(path)
        [task] = await journal.tasks(base_url="https://api.cometapi.com")  # "": any client's
        assert (task.task_id, task.status, task.prompt) == ("task_01v1", "SUCCESS", "a kite from v1")
        assert task.base_url == ""
        assert task.downloads[0].path == "/videos/task_01v1_source.mp4"
        [create] = await journal.creates()
        assert create.options == {"model": "sora-2", "seconds": "4"}
        assert await journal.load_cadence("https://api.cometapi.com") is None
        await journal.save_cadence("https://api.cometapi.com", cadence)
        assert await journal.load_cadence("https://api.cometapi.com") == cadence
        await journal.aclose()

    asyncio.run(read())
    assert rows(path, "SELECT base_url, period, verified_at FROM cadence") == [
        ("https://api.cometapi.com", 15.0, 1795900200.0)
    ]


def test_migrations_run_in_order_once_each() -> None:
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as db:
        migrate(db)
        migrate(db)  # a second open changes nothing
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (len(MIGRATIONS),)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"creates", "tasks", "changes", "downloads", "cadence"}


def test_a_journal_used_under_a_second_event_loop_still_commits_on_its_own(tmp_path: pathlib.Path) -> None:
    """A client may be used again under a second asyncio.run; the first loop's timer never fires."""
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3", flush_interval=0.05)

    async def queued() -> None:
        journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.QUEUED, progress=""), API)

    async def in_progress() -> None:
        journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.IN_PROGRESS, progress=""), API)
        expected = [("QUEUED",), ("IN_PROGRESS",)]
        await eventually(lambda: committed(journal.path, "SELECT status FROM changes") == expected)

    asyncio.run(queued())  # the loop ends before the timer fires
    asyncio.run(in_progress())  # committed by this loop's timer, nobody asking
    asyncio.run(journal.aclose())


async def test_download_pending_ends_each_download_by_its_timeout(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        task = await client.generate("a kite", timeout=10)
        server.inject(Fault(200, b"x", content_type="video/mp4", delay=5.0), route="cdn")
        started = time.monotonic()
        result = await client.download_pending(tmp_path / "videos", timeout=0.5)
        assert time.monotonic() - started < 5
        assert isinstance(result[task.task_id], TimeoutError)
        assert list((tmp_path / "videos").iterdir()) == []  # nothing under a final name
        again = await client.download_pending(tmp_path / "videos", timeout=10)  # the claim was given back
    assert again == {task.task_id: tmp_path / "videos" / f"{task.task_id}_source.mp4"}


async def test_a_journal_locked_by_another_process_past_busy_timeout_stops_the_create(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = SQLiteJournal(path, busy_timeout=0.2)
    await journal.flush()  # created
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        async with client_for(server, journal) as client:
            started = time.monotonic()
            with pytest.raises(JournalError, match="locked"):
                await client.create_video("a kite")
            assert time.monotonic() - started < 5
    finally:
        other.execute("ROLLBACK")
        other.close()
        await journal.aclose()
    assert server.requests["create"] == 0


async def test_concurrent_creates_share_commits(
    server: FakeSoraServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every create waits for two durable writes (its intent, its answer); concurrent ones share
    a commit (one fsync) instead of paying one each."""
    batches: list[int] = []
    original = SQLiteJournal._batch

    def counting(self: SQLiteJournal, rows: list[Any], ops: list[Any]) -> Any:
        batches.append(len(ops))
        return original(self, rows, ops)

    monkeypatch.setattr(SQLiteJournal, "_batch", counting)
    async with client_for(server, tmp_path / "jobs.sqlite3") as client:
        ids = await asyncio.gather(*(client.create_video(f"a kite {n}") for n in range(100)))
        creates = await client.journal.creates()  # type: ignore[union-attr]
    assert {c.task_id for c in creates} == set(ids)
    assert sum(batches) >= 200
    assert len(batches) <= 100  # at most half of the 200 writes' commits


async def test_a_closed_borrowed_journal_does_not_break_the_client_close(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    client = client_for(server, journal)
    await client.create_video("a kite")
    await journal.aclose()
    await client.aclose()
    await client.aclose()


async def test_a_client_resumes_only_the_tasks_of_its_own_api(tmp_path: pathlib.Path) -> None:
    """One journal, two servers (a test server beside the real API, say): each client's pending,
    in_doubt, resume and download_pending see its own records only."""
    path = tmp_path / "jobs.sqlite3"
    async with FakeSoraServer(api_key=KEY) as one, FakeSoraServer(api_key=KEY, seed=7) as two:
        async with client_for(one, path) as first, client_for(two, path) as second:
            mine = await first.create_video("a kite on one")
            theirs = await second.create_video("a kite on two")
            assert [t.task_id for t in await first.pending()] == [mine]
            assert [t.task_id for t in await second.pending()] == [theirs]
            async with first.resume(timeout=10) as outcomes:
                assert [task_id async for task_id, _ in outcomes] == [mine]
            assert set(await first.download_pending(tmp_path / "one")) == {mine}
            assert [t.task_id for t in await second.pending()] == [theirs]
        assert one.polls(theirs) == 0
        assert two.polls(mine) == 0


async def test_a_task_the_gateway_says_it_does_not_know_stays_pending_and_a_later_snapshot_wins(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    """A resume told "task_not_exist" (another key, a passing error, an expired task) notes it as
    NOT_FOUND and keeps the task: nothing is dropped on one answer, and the next snapshot wins."""
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        task_id = await client.create_video("a kite")
        not_found = Fault(400, {"code": "task_not_exist", "message": "task_not_exist", "data": None})
        server.inject(not_found, route="query", task_id=task_id)
        async with client.resume(timeout=10) as outcomes:
            [(got, outcome)] = [item async for item in outcomes]
        assert (got, type(outcome).__name__) == (task_id, "TaskNotFoundError")
        [noted] = await client.pending()
        assert (noted.task_id, noted.status, noted.is_terminal) == (task_id, "NOT_FOUND", False)
        assert "task_not_exist" in noted.fail_reason
        async with client.resume(timeout=10) as outcomes:
            [(got, outcome)] = [item async for item in outcomes]
        assert isinstance(outcome, Task)
        assert await client.pending() == []
        [record] = await client.journal.tasks()  # type: ignore[union-attr]
    assert record.status == "SUCCESS"
    statuses = [status for (status,) in rows(path, "SELECT status FROM changes ORDER BY at")]
    assert statuses[0] == "NOT_FOUND"
    assert statuses[-1] == "SUCCESS"


async def test_download_pending_saves_only_what_was_created_here_unless_asked(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    looked_at = server.add_task(timeline=[("SUCCESS", "100%")])
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        await client.get_task(looked_at)
        created = await client.generate("a kite", timeout=10)
        assert set(await client.download_pending(tmp_path / "v")) == {created.task_id}
        assert set(await client.download_pending(tmp_path / "v", only_created=False)) == {looked_at}


async def test_the_same_task_id_on_two_servers_is_two_tasks(tmp_path: pathlib.Path) -> None:
    """A fake server hands out the same ids on every start: a task is (API root, task id)."""
    path = tmp_path / "jobs.sqlite3"
    async with FakeSoraServer(api_key=KEY) as one, FakeSoraServer(api_key=KEY) as two:
        async with client_for(one, path) as first:
            done = await first.generate("a kite on the first server", timeout=10)
            await first.download(done, tmp_path / "one")
        async with client_for(two, path) as second:
            again = await second.create_video("a kite on the second server")
            assert again == done.task_id  # the same id
            [pending] = await second.pending()
            assert (pending.task_id, pending.prompt, pending.status) == (
                again,
                "a kite on the second server",
                "SUBMITTED",
            )
            async with second.resume(timeout=10) as outcomes:
                assert [task_id async for task_id, _ in outcomes] == [again]
            assert set(await second.download_pending(tmp_path / "two")) == {again}
        urls = (one.url, two.url)
    journal = SQLiteJournal(path)
    records = await journal.tasks()
    await journal.aclose()
    assert sorted((r.base_url, r.prompt, r.status, len(r.downloads)) for r in records) == sorted(
        [
            (urls[0], "a kite on the first server", "SUCCESS", 1),
            (urls[1], "a kite on the second server", "SUCCESS", 1),
        ]
    )


async def test_records_of_another_host_are_trusted_for_a_lease_then_taken_over(
    tmp_path: pathlib.Path,
) -> None:
    """A container has its own hostname and pids: its process cannot be asked, so its records
    are trusted for a while only."""
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    elsewhere = "another-host-or-container:4242:77"
    now = time.time()
    for ref, age in (("young", 60.0), ("old", _journal_sqlite.SENDING_LEASE + 60.0)):
        await journal.record_create(
            CreateRecord(
                ref=ref, format="reverse", prompt=f"a {ref} kite", sent_at=now - age, owner=elsewhere
            )
        )
    assert [c.ref for c in await journal.creates(in_doubt=True)] == ["old"]
    await journal.aclose()
    path = tmp_path / "jobs.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        for task_id, age in (("task_young", 60.0), ("task_old", _journal_sqlite.CLAIM_LEASE + 60.0)):
            db.execute(
                "INSERT INTO downloads (base_url, task_id, variant, path, size, state, owner, at) "
                "VALUES (?, ?, 'source', '/v', NULL, 'claimed', ?, ?)",
                (API, task_id, elsewhere, now - age),
            )
        db.commit()
    journal = SQLiteJournal(path)
    assert await journal.claim_download("task_young", "source", "/v", base_url=API) == "busy"
    assert await journal.claim_download("task_old", "source", "/v", base_url=API) == "claimed"
    await journal.aclose()


def test_a_batch_on_the_thread_when_its_event_loop_ends_does_not_stall_the_next_loop(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = SQLiteJournal(path, flush_interval=0.05)
    asyncio.run(journal.flush())  # created
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the timer's batch will wait for this lock on the thread

    async def first() -> None:
        journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.QUEUED, progress=""), API)
        await eventually(lambda: journal._busy is not None)  # the timer fired; its batch waits on the thread

    asyncio.run(first())
    other.execute("ROLLBACK")
    other.close()

    async def second() -> list[str]:
        return [task.status for task in await asyncio.wait_for(journal.tasks(), 10)]

    assert asyncio.run(second()) == ["QUEUED"]
    asyncio.run(journal.aclose())


async def test_a_database_of_something_else_is_refused_and_left_as_it_was(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    before = path.read_bytes()
    journal = SQLiteJournal(path)
    with pytest.raises(JournalError, match="not a sora_async journal"):
        await journal.tasks()
    await journal.aclose()
    assert path.read_bytes() == before
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]


async def test_a_download_to_a_device_is_not_recorded_as_saved(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with client_for(server, path) as client:
        task = await client.generate("a kite", timeout=10)
        await client.download(task, os.devnull)
        saved = await client.download_pending(tmp_path / "videos")
    assert set(saved) == {task.task_id}  # /dev/null kept nothing


async def test_a_task_id_handed_out_again_by_a_restarted_server_is_the_new_task(
    tmp_path: pathlib.Path,
) -> None:
    """A fake server started again on the same port repeats its ids: the new create's task takes
    the record over, so it is pending (and resumed), not hidden behind the old one's SUCCESS."""
    path = tmp_path / "jobs.sqlite3"
    async with FakeSoraServer(api_key=KEY) as first:
        port = int(first.url.rsplit(":", 1)[1])
        async with client_for(first, path) as client:
            old = await client.generate("the first kite", timeout=10)
            await client.download(old, tmp_path / "one")
    async with FakeSoraServer(api_key=KEY, port=port) as again, client_for(again, path) as client:
        new = await client.create_video("the second kite")
        assert new == old.task_id
        [pending] = await client.pending()
        assert (pending.task_id, pending.prompt, pending.downloads) == (new, "the second kite", ())
        async with client.resume(timeout=10) as outcomes:
            assert [task_id async for task_id, _ in outcomes] == [new]
        assert set(await client.download_pending(tmp_path / "two")) == {new}
        creates = {c.prompt: c for c in await client.journal.creates()}  # type: ignore[union-attr]
    assert creates["the first kite"].task_id is None
    assert "handed its task id out again" in creates["the first kite"].error


@pytest.mark.parametrize("version", [1, 2, 3, 9])
async def test_a_database_of_something_else_with_a_schema_version_is_refused_untouched(
    tmp_path: pathlib.Path, version: int
) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
    before = path.read_bytes()
    journal = SQLiteJournal(path)
    with pytest.raises(JournalError, match=r"something else|newer"):
        await journal.tasks()
    await journal.aclose()
    assert path.read_bytes() == before
