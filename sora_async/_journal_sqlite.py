"""`SQLiteJournal`: the default task journal, one SQLite file (standard library `sqlite3`).

Durability. The database runs in WAL mode with `synchronous=FULL`: every
commit is on the disk (the WAL fsynced) before it returns, so a record
survives `kill -9`, an OOM kill and a power cut alike. Commits are batched
so that this costs little:

- a create's intent, its answer and each finished download are committed
  before the call goes on (the create leaves only once its intent is on
  disk); writes that arrive while a commit is on the journal's thread go
  together in the next one, so concurrent callers share commits;
- snapshots seen by polls are buffered in memory and committed together
  every `flush_interval` seconds (0.5 s by default): polling 10,000 tasks
  costs one fsync per interval, not one per poll. A crash loses at most
  the changes of the last interval, which the next poll sees again.

All SQLite work runs on one thread the journal owns, never on the event
loop. Several processes may share one file: SQLite's locks serialise their
writes (a writer waits up to `busy_timeout` seconds), and download claims
name their process, so two processes never save the same file. A process
of this host is asked whether it still runs; one of another host (another
machine, or a container with its own hostname) cannot be, so its unanswered
creates count as in doubt after `SENDING_LEASE` seconds and its download
claims are taken over after `CLAIM_LEASE`. WAL needs a local file system;
do not put the journal on a network share.

The schema is versioned with `PRAGMA user_version`; `MIGRATIONS[n]` brings
version n to n + 1, and each runs in one transaction when a journal is
opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import msgspec

from ._cadence_store import StoredCadence, checked
from ._errors import JournalError
from ._journal import (
    ClaimResult,
    CreateRecord,
    CreateState,
    DownloadRecord,
    Journal,
    TaskRecord,
    process_alive,
    this_process,
)
from ._models import Task

__all__ = ["DEFAULT_FLUSH_INTERVAL", "MIGRATIONS", "SCHEMA_VERSION", "SQLiteJournal"]

logger = logging.getLogger("sora_async")

_T = TypeVar("_T")

DEFAULT_FLUSH_INTERVAL = 0.5
"""Seconds a buffered snapshot may wait before it is committed."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the first schema.
    (
        """CREATE TABLE creates (
            ref TEXT PRIMARY KEY,
            format TEXT NOT NULL,
            prompt TEXT NOT NULL,
            options TEXT NOT NULL,
            sent_at REAL NOT NULL,
            owner TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('sending', 'created', 'refused', 'in_doubt')),
            task_id TEXT,
            error TEXT NOT NULL DEFAULT '',
            answered_at REAL
        )""",
        "CREATE INDEX creates_task ON creates (task_id)",
        """CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            format TEXT NOT NULL,
            status TEXT NOT NULL,
            progress TEXT NOT NULL DEFAULT '',
            percent REAL,
            fail_reason TEXT NOT NULL DEFAULT '',
            final INTEGER NOT NULL DEFAULT 0,
            first_seen REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX tasks_final ON tasks (final, first_seen)",
        """CREATE TABLE changes (
            task_id TEXT NOT NULL,
            at REAL NOT NULL,
            status TEXT NOT NULL,
            progress TEXT NOT NULL,
            percent REAL
        )""",
        "CREATE INDEX changes_task ON changes (task_id)",
        """CREATE TABLE downloads (
            task_id TEXT NOT NULL,
            variant TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER,
            state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
            owner TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (task_id, variant)
        )""",
    ),
    # 1 -> 2: which API each record belongs to. A task is (API root, task id): a journal may
    # hold tasks of a test server, which hands out the same ids on every start, beside the real
    # API's, and each client resumes only its own. "" for older records: unknown, taken as any
    # client's, and adopted by the first client that sees the task.
    (
        "ALTER TABLE creates ADD COLUMN base_url TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE tasks_2 (
            base_url TEXT NOT NULL DEFAULT '',
            task_id TEXT NOT NULL,
            format TEXT NOT NULL,
            status TEXT NOT NULL,
            progress TEXT NOT NULL DEFAULT '',
            percent REAL,
            fail_reason TEXT NOT NULL DEFAULT '',
            final INTEGER NOT NULL DEFAULT 0,
            first_seen REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (base_url, task_id)
        )""",
        "INSERT INTO tasks_2 SELECT '', task_id, format, status, progress, percent, fail_reason, final, "
        "first_seen, updated_at FROM tasks",
        "DROP TABLE tasks",
        "ALTER TABLE tasks_2 RENAME TO tasks",
        "CREATE INDEX tasks_final ON tasks (final, first_seen)",
        "CREATE INDEX tasks_id ON tasks (task_id)",
        "ALTER TABLE changes ADD COLUMN base_url TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE downloads_2 (
            base_url TEXT NOT NULL DEFAULT '',
            task_id TEXT NOT NULL,
            variant TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER,
            state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
            owner TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (base_url, task_id, variant)
        )""",
        "INSERT INTO downloads_2 SELECT '', task_id, variant, path, size, state, owner, at FROM downloads",
        "DROP TABLE downloads",
        "ALTER TABLE downloads_2 RENAME TO downloads",
    ),
    # 2 -> 3: the gateway's refresh cadence learned for each API root (`save_cadence`), so that
    # a process started later polls just after its sweeps from the start. Periods and spreads in
    # seconds, the other columns Unix times; a row read back is checked (`StoredCadence.valid`).
    (
        """CREATE TABLE cadence (
            base_url TEXT PRIMARY KEY,
            period REAL NOT NULL,
            phase REAL NOT NULL,
            spread REAL NOT NULL,
            learned_at REAL NOT NULL,
            verified_at REAL NOT NULL
        )""",
    ),
)
"""`MIGRATIONS[n]`: the statements that bring a journal from schema version n to n + 1."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this sora_async writes."""

_Row = tuple[str, str, str, str, "float | None", str, int, float, str]
"""A buffered snapshot: task id, format, status, progress, percent, fail reason, final, time, base URL."""


class SQLiteJournal(Journal):
    """A task journal in one SQLite file; see the module docstring for durability.

    Opened on first use (the file and its tables are created then; the
    folder must exist). Pass it to `SoraClient(journal=...)`, or pass the
    path and let the client make one.

    It also keeps the gateway's refresh cadence learned for each API root
    (`load_cadence`, `save_cadence`): a save is a durable write, a load a
    read, and both raise `JournalError` as the other methods do.

    Args:
        path: The database file.
        flush_interval: Seconds a buffered snapshot may wait for its commit.
        busy_timeout: Seconds a write waits for another process's lock
            before failing with `JournalError`.

    Raises:
        ValueError: `path` is a folder, or a number is not positive.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = pathlib.Path(path)
        if self.path.is_dir():
            raise ValueError(f"journal path {str(self.path)!r} is a folder; name a file inside it")
        if not flush_interval > 0 or not busy_timeout > 0:
            raise ValueError("flush_interval and busy_timeout must be positive numbers of seconds")
        self.flush_interval = float(flush_interval)
        self.busy_timeout = float(busy_timeout)
        self._db: sqlite3.Connection | None = None  # used only on the journal's thread
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        # Event loop side: what waits for the next batch, and whether one is on the thread.
        self._rows: list[_Row] = []  # snapshots
        self._ops: list[_Op] = []  # awaited work: durable writes and reads
        self._busy: asyncio.AbstractEventLoop | None = None  # the loop whose batch is on the thread
        self._failed: list[_Row] = []  # journal thread side: snapshots whose commit failed
        self._seen: dict[str, tuple[str, str]] = {}  # unfinished task -> last (status, progress)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteJournal({str(self.path)!r})"

    # --- writing ------------------------------------------------------------

    async def record_create(self, create: CreateRecord) -> None:
        await self._run(_insert_create, create)

    async def record_answer(
        self, ref: str, state: CreateState, *, task_id: str | None = None, error: str = ""
    ) -> None:
        await self._run(_update_create, ref, state, task_id, error)

    def record_snapshot(self, task: Task, base_url: str) -> None:
        seen = (task.status.value, task.progress)
        if self._seen.get(task.task_id) == seen:
            return
        final = task.status.is_terminal
        if final:
            self._seen.pop(task.task_id, None)
        else:
            self._seen[task.task_id] = seen
        self._rows.append(
            (
                task.task_id,
                task.format,
                seen[0],
                seen[1],
                task.percent,
                task.fail_reason,
                final,
                time.time(),
                base_url,
            )
        )
        loop = asyncio.get_running_loop()
        if (self._timer is None or self._timer_loop is not loop) and not self._closed:
            # (A timer of a loop that has ended never fires: the client may be used again
            # under a second asyncio.run.)
            self._timer = loop.call_later(self.flush_interval, self._flush_later, loop)
            self._timer_loop = loop

    async def record_not_found(self, task_id: str, reason: str, *, base_url: str) -> None:
        await self._run(_not_found, base_url, task_id, reason)

    async def claim_download(self, task_id: str, variant: str, path: str, *, base_url: str) -> ClaimResult:
        return await self._run(_claim, base_url, task_id, variant, path)

    async def release_download(self, task_id: str, variant: str, *, base_url: str) -> None:
        await self._run(_release, base_url, task_id, variant)

    async def record_download(
        self, task_id: str, variant: str, path: str, size: int | None, *, base_url: str
    ) -> None:
        await self._run(_insert_download, base_url, task_id, variant, path, size)

    async def flush(self) -> None:
        if self._closed and not self._rows:
            return  # closing flushed everything
        await self._run(_nothing)

    async def aclose(self) -> None:
        if self._closed:
            return
        try:
            await self.flush()
        except JournalError as exc:  # the records waiting were only snapshots: say so, go on
            logger.error("journal %s closed with snapshots not written: %s", self.path, exc)
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            thread = self._thread
            if thread is not None:
                await asyncio.wrap_future(thread.submit(self._disconnect))
                thread.shutdown(wait=False)

    # --- reading ------------------------------------------------------------

    async def tasks(
        self,
        *,
        pending: bool = False,
        failed: bool = False,
        since: float | None = None,
        base_url: str | None = None,
    ) -> list[TaskRecord]:
        return await self._run(_select_tasks, pending, failed, since, base_url)

    async def creates(self, *, in_doubt: bool = False, base_url: str | None = None) -> list[CreateRecord]:
        return await self._run(_select_creates, in_doubt, base_url)

    async def forget(self, ids: Iterable[str]) -> list[str]:
        found = await self._run(_delete, list(ids))
        for task_id in found:
            self._seen.pop(task_id, None)
        return found

    # --- the refresh cadence ------------------------------------------------------

    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        """The valid cadence last saved for the API at `base_url`, or None (none saved, or a row
        that is not valid: `StoredCadence.valid`).

        Raises:
            JournalError: The journal is closed or cannot be opened or read, as for `tasks`.
        """
        return await self._run(_select_cadence, base_url)

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:
        """Durably remember `cadence` for the API at `base_url`, replacing the one saved before.

        An invalid cadence (`StoredCadence.valid`) is not saved (logged at DEBUG).

        Raises:
            JournalError: The journal is closed or cannot be opened or written, as for
                `record_not_found`. Remembering is an optimisation: a caller may log it and go on.
        """
        valid = checked(cadence)
        if valid is None:
            logger.debug(
                "cadence for %s not saved in journal %s: invalid values %r", base_url, self.path, cadence
            )
            return
        await self._run(_upsert_cadence, base_url, valid)

    # --- batches: the event loop's side -------------------------------------------

    async def _run(self, work: Callable[..., _T], *args: Any) -> _T:
        """Do `work(db, *args)` on the journal's thread in the next batch, and return its result.

        A batch is one transaction (one commit, one fsync) holding the
        buffered snapshots and every piece of work that arrived while the
        one before was on the thread: concurrent creates share commits.
        Work whose caller was cancelled before its batch started is skipped.
        """
        if self._closed:
            raise JournalError(f"journal {str(self.path)!r} is closed", path=str(self.path))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._ops.append(_Op(work, args, future))
        if self._busy is not loop:
            # Nothing on the thread, or the batch of a loop that has ended, whose completion
            # will never run: the thread takes batches in order, so submitting is safe.
            self._submit(loop)
        return cast(_T, await future)

    def _flush_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer: commit the buffered snapshots; nobody awaits it."""
        self._timer = None
        if not self._closed and self._rows and self._busy is not loop:
            self._submit(loop)

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand everything waiting to the journal's thread as one batch."""
        rows, self._rows = self._rows, []
        ops, self._ops = self._ops, []
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sora-journal")
        self._busy = loop
        live = [op for op in ops if not op.future.done()]  # a cancelled caller's work is skipped
        done = self._thread.submit(self._batch, rows, [(op.work, op.args) for op in live])

        def report(_: concurrent.futures.Future[list[_Outcome]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has ended: nobody is waiting
                loop.call_soon_threadsafe(self._finished, loop, done, live)

        done.add_done_callback(report)

    def _finished(
        self, loop: asyncio.AbstractEventLoop, done: concurrent.futures.Future[list[_Outcome]], ops: list[_Op]
    ) -> None:
        try:
            outcomes: list[_Outcome] = done.result()
        except BaseException as exc:  # the whole batch failed: it could not open, lock or commit
            outcomes = [(False, exc)] * len(ops)
        for op, (ok, value) in zip(ops, outcomes, strict=True):
            if op.future.done():
                continue  # its caller was cancelled meanwhile
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(cast(BaseException, value))
        self._busy = None
        if self._ops or (self._rows and self._timer is None):
            self._submit(loop)

    # --- batches: the journal's thread --------------------------------------------

    def _batch(
        self, rows: list[_Row], ops: list[tuple[Callable[..., Any], tuple[Any, ...]]]
    ) -> list[_Outcome]:
        """One transaction: the snapshots (with any that failed before), then each piece of
        work in its own savepoint, so that one that fails does not undo the others."""
        rows = self._failed + rows
        self._failed = []
        try:
            db = self._connect()
            writes = bool(rows) or any(work not in _READS for work, _ in ops)
            if not writes:
                return [_do(db, work, args, self.path) for work, args in ops]
            with _transaction(db):
                if rows:
                    _write_rows(db, rows)
                return [_do(db, work, args, self.path) for work, args in ops]
        except (sqlite3.Error, JournalError) as exc:
            self._failed = rows
            if rows:
                logger.warning("journal %s: %d snapshots not recorded yet (%s)", self.path, len(rows), exc)
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"journal {str(self.path)!r}: {exc}", path=str(self.path)) from exc

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        path = str(self.path)
        try:
            db = sqlite3.connect(path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path!r}: {exc}", path=path) from exc
        try:
            # Before anything is changed in someone else's file; in one read transaction, so
            # that another process creating the journal meanwhile is seen whole or not at all.
            db.execute("BEGIN")
            try:
                _check_ours(db)
            finally:
                db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise JournalError(f"cannot open journal {path!r}: {exc}", path=path) from exc
        except JournalError:
            db.close()
            raise
        self._db = db
        return db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class _Op:
    """Awaited work waiting for its batch."""

    __slots__ = ("args", "future", "work")

    def __init__(self, work: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.work = work
        self.args = args
        self.future = future


_Work = tuple[Callable[..., Any], tuple[Any, ...]]
"""A function of the connection and its other arguments."""

_Outcome = tuple[bool, Any]
"""(True, the work's result) or (False, the JournalError it ended with)."""


def _do(
    db: sqlite3.Connection, work: Callable[..., Any], args: tuple[Any, ...], path: pathlib.Path
) -> _Outcome:
    db.execute("SAVEPOINT work")
    try:
        value = work(db, *args)
    except sqlite3.Error as exc:
        db.execute("ROLLBACK TO work")
        db.execute("RELEASE work")
        error = JournalError(f"journal {str(path)!r}: {exc}", path=str(path))
        error.__cause__ = exc
        return False, error
    db.execute("RELEASE work")
    return True, value


def _write_rows(db: sqlite3.Connection, rows: list[_Row]) -> None:
    """The snapshots, in two statements whatever their number (one JSON parameter each):
    the thread hands the GIL back twice, not twice per row."""
    data = msgspec.json.encode(rows)
    if db.execute("SELECT 1 FROM tasks WHERE base_url = '' LIMIT 1").fetchone() is not None:
        db.execute(_ADOPT_TASKS, (data, data))  # only while records older than schema 2 remain
    db.execute(_INSERT_CHANGES, (data,))
    db.execute(_UPSERT_TASKS, (data,))


def _insert_create(db: sqlite3.Connection, create: CreateRecord) -> None:
    db.execute(
        "INSERT OR IGNORE INTO creates (ref, format, prompt, options, sent_at, owner, state, base_url) "
        "VALUES (?, ?, ?, ?, ?, ?, 'sending', ?)",
        (
            create.ref,
            create.format,
            create.prompt,
            json.dumps(create.options),
            create.sent_at,
            create.owner,
            create.base_url,
        ),
    )


def _update_create(
    db: sqlite3.Connection, ref: str, state: CreateState, task_id: str | None, error: str
) -> None:
    now = time.time()
    db.execute(
        "UPDATE creates SET state = ?, task_id = ?, error = ?, answered_at = ? WHERE ref = ?",
        (state, task_id, error, now, ref),
    )
    if task_id is not None:
        # An id the server handed out before (a fake server started again on the same port):
        # the new task takes the record over; the old create keeps no task.
        reused = db.execute(
            "UPDATE creates SET task_id = NULL, error = 'the server handed its task id out again' "
            "WHERE task_id = ? AND ref != ? AND base_url = (SELECT base_url FROM creates WHERE ref = ?)",
            (task_id, ref, ref),
        ).rowcount
        if reused:
            for table in ("tasks", "changes", "downloads"):
                db.execute(
                    f"DELETE FROM {table} WHERE task_id = ? "  # noqa: S608  # constant table names
                    "AND base_url = (SELECT base_url FROM creates WHERE ref = ?)",
                    (task_id, ref),
                )
        db.execute(
            "INSERT INTO tasks (base_url, task_id, format, status, first_seen, updated_at) "
            "SELECT base_url, ?, format, 'SUBMITTED', ?, ? FROM creates WHERE ref = ? "
            "ON CONFLICT (base_url, task_id) DO NOTHING",
            (task_id, now, now, ref),
        )


def _not_found(db: sqlite3.Connection, base_url: str, task_id: str, reason: str) -> None:
    """Unfinished still (another key or base URL may know it), but said to be unknown."""
    now = time.time()
    updated = db.execute(
        "UPDATE tasks SET status = 'NOT_FOUND', fail_reason = ?, updated_at = ? "
        "WHERE base_url IN (?, '') AND task_id = ? AND final = 0 AND status != 'NOT_FOUND'",
        (reason, now, base_url, task_id),
    ).rowcount
    if updated:
        db.execute(
            "INSERT INTO changes (base_url, task_id, at, status, progress, percent) "
            "SELECT base_url, task_id, ?, 'NOT_FOUND', progress, percent FROM tasks "
            "WHERE base_url IN (?, '') AND task_id = ?",
            (now, base_url, task_id),
        )


def _claim(db: sqlite3.Connection, base_url: str, task_id: str, variant: str, path: str) -> ClaimResult:
    """Inside the batch's `BEGIN IMMEDIATE`: no other process writes between the read and the write.

    A claim of another host is taken over once it is `CLAIM_LEASE` seconds old."""
    me = this_process()
    now = time.time()
    row = db.execute(
        "SELECT state, owner, at FROM downloads WHERE base_url = ? AND task_id = ? AND variant = ?",
        (base_url, task_id, variant),
    ).fetchone()
    if row is not None:
        state, owner, at = row
        if state == "done":
            return "done"
        if owner != me and process_alive(owner, since=at, lease=CLAIM_LEASE, now=now):
            return "busy"
    db.execute(
        "INSERT OR REPLACE INTO downloads (base_url, task_id, variant, path, size, state, owner, at) "
        "VALUES (?, ?, ?, ?, NULL, 'claimed', ?, ?)",
        (base_url, task_id, variant, path, me, now),
    )
    return "claimed"


def _release(db: sqlite3.Connection, base_url: str, task_id: str, variant: str) -> None:
    db.execute(
        "DELETE FROM downloads WHERE base_url = ? AND task_id = ? AND variant = ? AND state = 'claimed' "
        "AND owner = ?",
        (base_url, task_id, variant, this_process()),
    )


def _insert_download(
    db: sqlite3.Connection, base_url: str, task_id: str, variant: str, path: str, size: int | None
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO downloads (base_url, task_id, variant, path, size, state, owner, at) "
        "VALUES (?, ?, ?, ?, ?, 'done', ?, ?)",
        (base_url, task_id, variant, path, size, this_process(), time.time()),
    )


def _select_tasks(
    db: sqlite3.Connection, pending: bool, failed: bool, since: float | None, base_url: str | None
) -> list[TaskRecord]:
    where = []
    if pending and failed:
        where.append("(t.final = 0 OR t.status = 'FAILURE')")
    elif pending:
        where.append("t.final = 0")
    elif failed:
        where.append("t.status = 'FAILURE'")
    params: list[object] = []
    if since is not None:
        where.append("t.first_seen >= ?")
        params.append(since)
    if base_url is not None:
        where.append("t.base_url IN (?, '')")
        params.append(base_url)
    # The clauses are constants chosen above; values are bound parameters.
    clause = " WHERE " + " AND ".join(where) if where else ""
    sql = _SELECT_TASKS.format(where=clause)
    downloads: dict[tuple[str, str], list[DownloadRecord]] = {}
    for url, task_id, variant, path, size, at in db.execute(
        "SELECT base_url, task_id, variant, path, size, at FROM downloads WHERE state = 'done' ORDER BY at"
    ):
        downloads.setdefault((url, task_id), []).append(
            DownloadRecord(task_id=task_id, variant=variant, path=path, size=size, at=at)
        )
    return [
        TaskRecord(
            task_id=row[0],
            format=row[1],
            status=row[2],
            progress=row[3],
            percent=row[4],
            fail_reason=row[5],
            first_seen=row[6],
            updated_at=row[7],
            prompt=row[8] or "",
            ref=row[9],
            base_url=row[10],
            downloads=tuple(downloads.get((row[10], row[0]), ())),
        )
        for row in db.execute(sql, params)
    ]


def _select_creates(db: sqlite3.Connection, in_doubt: bool, base_url: str | None) -> list[CreateRecord]:
    where = ["state IN ('sending', 'in_doubt')"] if in_doubt else []
    params = []
    if base_url is not None:
        where.append("base_url IN (?, '')")
        params.append(base_url)
    # The clauses are constants chosen above; values are bound parameters.
    sql = _SELECT_CREATES.format(where=" WHERE " + " AND ".join(where) if where else "")
    records = []
    for ref, fmt, prompt, options, sent_at, owner, state, task_id, error, answered_at, url in db.execute(
        sql, params
    ):
        if state == "sending" and not process_alive(owner, since=sent_at, lease=SENDING_LEASE):
            state = "in_doubt"
            error = error or "the process that sent it ended before the answer was recorded"
        elif in_doubt and state == "sending":
            continue  # still in flight in a live process
        records.append(
            CreateRecord(
                ref=ref,
                format=fmt,
                prompt=prompt,
                options=json.loads(options),
                sent_at=sent_at,
                state=state,
                task_id=task_id,
                error=error,
                answered_at=answered_at,
                owner=owner,
                base_url=url,
            )
        )
    return records


def _delete(db: sqlite3.Connection, ids: list[str]) -> list[str]:
    found = []
    for ident in ids:
        hits = 0
        for table in ("tasks", "changes", "downloads"):
            hits += db.execute(f"DELETE FROM {table} WHERE task_id = ?", (ident,)).rowcount  # noqa: S608
        hits += db.execute("DELETE FROM creates WHERE task_id = ? OR ref = ?", (ident, ident)).rowcount
        if hits:
            found.append(ident)
    return found


def _select_cadence(db: sqlite3.Connection, base_url: str) -> StoredCadence | None:
    row = db.execute(
        "SELECT period, phase, spread, learned_at, verified_at FROM cadence WHERE base_url = ?", (base_url,)
    ).fetchone()
    if row is None:
        return None
    names = ("period", "phase", "spread", "learned_at", "verified_at")
    cadence = checked(dict(zip(names, row, strict=True)))
    if cadence is None:
        logger.debug("journal: the cadence saved for %s is not valid: %r", base_url, row)
    return cadence


def _upsert_cadence(db: sqlite3.Connection, base_url: str, cadence: StoredCadence) -> None:
    db.execute(
        "INSERT INTO cadence (base_url, period, phase, spread, learned_at, verified_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (base_url) DO UPDATE SET period = excluded.period, "
        "phase = excluded.phase, spread = excluded.spread, learned_at = excluded.learned_at, "
        "verified_at = excluded.verified_at",
        (base_url, cadence.period, cadence.phase, cadence.spread, cadence.learned_at, cadence.verified_at),
    )


def _nothing(db: sqlite3.Connection) -> None:
    """The work of `flush`: none beyond committing the snapshots of its batch."""


_READS: frozenset[Callable[..., Any]] = frozenset({_select_tasks, _select_creates, _select_cadence, _nothing})
"""Work that writes nothing: a batch of only these takes no write lock."""

SENDING_LEASE = 900.0
"""Seconds after which a create still "sending" from another host (another machine, or a
container with its own hostname, whose process cannot be asked) is in doubt: no create takes
that long."""

CLAIM_LEASE = 1800.0
"""Seconds after which a download claim of a process on another host is taken over."""

_SELECT_CREATES = (
    "SELECT ref, format, prompt, options, sent_at, owner, state, task_id, error, answered_at, base_url "
    "FROM creates{where} ORDER BY sent_at, ref"
)
_SELECT_TASKS = (
    "SELECT t.task_id, t.format, t.status, t.progress, t.percent, t.fail_reason, t.first_seen, "
    "t.updated_at, c.prompt, c.ref, t.base_url FROM tasks t "
    "LEFT JOIN creates c ON c.task_id = t.task_id AND c.base_url IN (t.base_url, '')"
    "{where} ORDER BY t.first_seen, t.task_id"
)
# A snapshot row in JSON: [task id, format, status, progress, percent, fail reason, final, time,
# base URL].
_ADOPT_TASKS = (  # a task recorded before records named their API is the first client's to see it
    "UPDATE tasks SET base_url = (SELECT json_extract(value, '$[8]') FROM json_each(?) "
    "WHERE json_extract(value, '$[0]') = tasks.task_id) "
    "WHERE base_url = '' AND task_id IN (SELECT json_extract(value, '$[0]') FROM json_each(?))"
)
_INSERT_CHANGES = (
    "INSERT INTO changes (base_url, task_id, at, status, progress, percent) "
    "SELECT json_extract(value, '$[8]'), json_extract(value, '$[0]'), json_extract(value, '$[7]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]') "
    "FROM json_each(?) AS row WHERE NOT EXISTS (SELECT 1 FROM tasks "
    "WHERE base_url = json_extract(row.value, '$[8]') AND task_id = json_extract(row.value, '$[0]') "
    "AND final = 1)"
)
_UPSERT_TASKS = (
    "INSERT INTO tasks (task_id, format, status, progress, percent, fail_reason, final, first_seen, "
    "updated_at, base_url) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
    "json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'), "
    "json_extract(value, '$[7]'), json_extract(value, '$[8]') FROM json_each(?) WHERE true "
    "ON CONFLICT (base_url, task_id) DO UPDATE SET status = excluded.status, progress = excluded.progress, "
    "percent = excluded.percent, fail_reason = excluded.fail_reason, final = excluded.final, "
    "updated_at = excluded.updated_at WHERE tasks.final = 0"
)


class _transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on error): takes the write lock first,
    so two processes never deadlock upgrading a read to a write."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _check_ours(db: sqlite3.Connection) -> None:
    """Refuse, before anything in the file is changed, a database of a newer sora_async, or of
    something else: tables without a schema version, or a version without our tables.

    Raises:
        JournalError: It is one of those.
    """
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal has schema version {version}, written by a newer sora_async; "
            f"this one reads up to version {SCHEMA_VERSION}"
        )
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if (version == 0 and tables) or (version > 0 and not {"creates", "tasks", "changes"} <= tables):
        raise JournalError(
            "the file is a SQLite database of something else, not a sora_async journal; choose another file"
        )


def migrate(db: sqlite3.Connection) -> None:
    """Bring the journal's schema to `SCHEMA_VERSION`, one transaction per step.

    Raises:
        JournalError: The file was written by a newer sora_async.
    """
    while True:
        with _transaction(db):
            _check_ours(db)
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal has schema version {version}, written by a newer sora_async; "
                    f"this one reads up to version {SCHEMA_VERSION}"
                )
            if version == SCHEMA_VERSION:
                return
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
