"""`SQLiteJournal`: the default task journal, one SQLite file (standard library `sqlite3`).

Durability. The database runs in WAL mode with `synchronous=FULL`: every
commit is on the disk (the WAL fsynced) before it returns, so a record
survives `kill -9`, an OOM kill and a power cut alike. Commits are batched
so that this costs little:

- a create's intent, its answer and each finished download are committed
  before the call goes on (the create leaves only once its intent is on
  disk); concurrent callers share one commit;
- snapshots seen by polls are buffered in memory and committed together
  every `flush_interval` seconds (0.5 s by default): polling 10,000 tasks
  costs one fsync per interval, not one per poll. A crash loses at most
  the changes of the last interval, which the next poll sees again.

All SQLite work runs on one thread the journal owns, never on the event
loop. Several processes may share one file: SQLite's locks serialise their
writes (a writer waits up to `busy_timeout` seconds), and download claims
name their process, so two processes never save the same file. WAL needs a
local file system; do not put the journal on a network share.

The schema is versioned with `PRAGMA user_version`; `MIGRATIONS[n]` brings
version n to n + 1, and each runs in one transaction when a journal is
opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

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
)
"""`MIGRATIONS[n]`: the statements that bring a journal from schema version n to n + 1."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this sora_async writes."""

_Row = tuple[str, str, str, str, "float | None", str, int, float]
"""A buffered snapshot: task id, format, status, progress, percent, fail reason, final, time."""


class SQLiteJournal(Journal):
    """A task journal in one SQLite file; see the module docstring for durability.

    Opened on first use (the file and its tables are created then; the
    folder must exist). Pass it to `SoraClient(journal=...)`, or pass the
    path and let the client make one.

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
        self._rows: list[_Row] = []  # snapshots waiting for a commit (event loop side)
        self._failed: list[_Row] = []  # snapshots whose commit failed (journal thread side)
        self._seen: dict[str, tuple[str, str]] = {}  # unfinished task -> last (status, progress)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteJournal({str(self.path)!r})"

    # --- writing ------------------------------------------------------------

    async def record_create(self, create: CreateRecord) -> None:
        await self._run(self._insert_create, create)

    async def record_answer(
        self, ref: str, state: CreateState, *, task_id: str | None = None, error: str = ""
    ) -> None:
        await self._run(self._update_create, ref, state, task_id, error)

    def record_snapshot(self, task: Task) -> None:
        seen = (task.status.value, task.progress)
        if self._seen.get(task.task_id) == seen:
            return
        final = task.status.is_terminal
        if final:
            self._seen.pop(task.task_id, None)
        else:
            self._seen[task.task_id] = seen
        self._rows.append(
            (task.task_id, task.format, seen[0], seen[1], task.percent, task.fail_reason, final, time.time())
        )
        loop = asyncio.get_running_loop()
        if (self._timer is None or self._timer_loop is not loop) and not self._closed:
            # (A timer of a loop that has ended never fires: the client may be used again
            # under a second asyncio.run.)
            self._timer = loop.call_later(self.flush_interval, self._flush_later)
            self._timer_loop = loop

    async def claim_download(self, task_id: str, variant: str, path: str) -> ClaimResult:
        return await self._run(self._claim, task_id, variant, path)

    async def release_download(self, task_id: str, variant: str) -> None:
        await self._run(self._release, task_id, variant)

    async def record_download(self, task_id: str, variant: str, path: str, size: int | None) -> None:
        await self._run(self._insert_download, task_id, variant, path, size)

    async def flush(self) -> None:
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
        self, *, pending: bool = False, failed: bool = False, since: float | None = None
    ) -> list[TaskRecord]:
        return await self._run(self._select_tasks, pending, failed, since)

    async def creates(self, *, in_doubt: bool = False) -> list[CreateRecord]:
        return await self._run(self._select_creates, in_doubt)

    async def forget(self, ids: Iterable[str]) -> list[str]:
        found = await self._run(_delete, list(ids))
        for task_id in found:
            self._seen.pop(task_id, None)
        return found

    # --- the journal's thread -------------------------------------------------

    async def _run(self, work: Callable[..., _T], *args: Any) -> _T:
        """Commit the buffered snapshots, then do `work`, on the journal's thread."""
        if self._closed:
            raise JournalError(f"journal {str(self.path)!r} is closed", path=str(self.path))
        rows, self._rows = self._rows, []
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sora-journal")
        future = self._thread.submit(self._then, rows, work, args)
        return await asyncio.wrap_future(future)

    def _flush_later(self) -> None:
        """The timer's commit of buffered snapshots; it runs without anyone awaiting it."""
        self._timer = None
        if self._closed or not self._rows:
            return
        rows, self._rows = self._rows, []
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sora-journal")
        self._thread.submit(self._then, rows, None, ())

    def _then(self, rows: list[_Row], work: Callable[..., _T] | None, args: tuple[Any, ...]) -> _T:
        """Commit `rows` (and any that failed before), then run `work` (None: the timer's
        flush, which nobody awaits, so its failures are logged and its rows kept)."""
        try:
            db = self._connect()
        except JournalError as exc:
            self._failed.extend(rows)
            if work is None:
                logger.warning("snapshots kept in memory: %s", exc)
            raise
        if rows or self._failed:
            self._commit_rows(db, rows)
        if work is None:
            return None  # type: ignore[return-value]  # nobody reads the timer's result
        try:
            return work(db, *args)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {str(self.path)!r}: {exc}", path=str(self.path)) from exc

    def _commit_rows(self, db: sqlite3.Connection, rows: list[_Row]) -> None:
        rows = self._failed + rows
        self._failed = []
        try:
            with _transaction(db):
                db.executemany(_INSERT_CHANGE, [(r[0], r[7], r[2], r[3], r[4], r[0]) for r in rows])
                db.executemany(_UPSERT_TASK, [(*r[:7], r[7], r[7]) for r in rows])
        except sqlite3.Error as exc:
            self._failed = rows
            logger.warning(
                "the journal %s could not record %d snapshots (%s); kept", self.path, len(rows), exc
            )

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        path = str(self.path)
        try:
            db = sqlite3.connect(path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path!r}: {exc}", path=path) from exc
        try:
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

    def _insert_create(self, db: sqlite3.Connection, create: CreateRecord) -> None:
        with _transaction(db):
            db.execute(
                "INSERT OR IGNORE INTO creates (ref, format, prompt, options, sent_at, owner, state) "
                "VALUES (?, ?, ?, ?, ?, ?, 'sending')",
                (
                    create.ref,
                    create.format,
                    create.prompt,
                    json.dumps(create.options),
                    create.sent_at,
                    create.owner,
                ),
            )

    def _update_create(
        self, db: sqlite3.Connection, ref: str, state: CreateState, task_id: str | None, error: str
    ) -> None:
        now = time.time()
        with _transaction(db):
            db.execute(
                "UPDATE creates SET state = ?, task_id = ?, error = ?, answered_at = ? WHERE ref = ?",
                (state, task_id, error, now, ref),
            )
            if task_id is not None:
                fmt = db.execute("SELECT format FROM creates WHERE ref = ?", (ref,)).fetchone()
                db.execute(
                    "INSERT INTO tasks (task_id, format, status, first_seen, updated_at) "
                    "VALUES (?, ?, 'SUBMITTED', ?, ?) ON CONFLICT (task_id) DO NOTHING",
                    (task_id, fmt[0] if fmt else "reverse", now, now),
                )

    def _claim(self, db: sqlite3.Connection, task_id: str, variant: str, path: str) -> ClaimResult:
        me = this_process()
        with _transaction(db):
            row = db.execute(
                "SELECT state, owner FROM downloads WHERE task_id = ? AND variant = ?", (task_id, variant)
            ).fetchone()
            if row is not None:
                state, owner = row
                if state == "done":
                    return "done"
                if owner != me and process_alive(owner):
                    return "busy"
            db.execute(
                "INSERT OR REPLACE INTO downloads (task_id, variant, path, size, state, owner, at) "
                "VALUES (?, ?, ?, NULL, 'claimed', ?, ?)",
                (task_id, variant, path, me, time.time()),
            )
        return "claimed"

    def _release(self, db: sqlite3.Connection, task_id: str, variant: str) -> None:
        with _transaction(db):
            db.execute(
                "DELETE FROM downloads WHERE task_id = ? AND variant = ? AND state = 'claimed' AND owner = ?",
                (task_id, variant, this_process()),
            )

    def _insert_download(
        self, db: sqlite3.Connection, task_id: str, variant: str, path: str, size: int | None
    ) -> None:
        with _transaction(db):
            db.execute(
                "INSERT OR REPLACE INTO downloads (task_id, variant, path, size, state, owner, at) "
                "VALUES (?, ?, ?, ?, 'done', ?, ?)",
                (task_id, variant, path, size, this_process(), time.time()),
            )

    def _select_tasks(
        self, db: sqlite3.Connection, pending: bool, failed: bool, since: float | None
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
        # The clauses are constants chosen above; values are bound parameters.
        clause = " WHERE " + " AND ".join(where) if where else ""
        sql = _SELECT_TASKS.format(where=clause)
        downloads: dict[str, list[DownloadRecord]] = {}
        for task_id, variant, path, size, at in db.execute(
            "SELECT task_id, variant, path, size, at FROM downloads WHERE state = 'done' ORDER BY at"
        ):
            downloads.setdefault(task_id, []).append(
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
                downloads=tuple(downloads.get(row[0], ())),
            )
            for row in db.execute(sql, params)
        ]

    def _select_creates(self, db: sqlite3.Connection, in_doubt: bool) -> list[CreateRecord]:
        sql = (
            "SELECT ref, format, prompt, options, sent_at, owner, state, task_id, error, answered_at "
            "FROM creates"
        )
        if in_doubt:
            sql += " WHERE state IN ('sending', 'in_doubt')"
        records = []
        for ref, fmt, prompt, options, sent_at, owner, state, task_id, error, answered_at in db.execute(
            sql + " ORDER BY sent_at, ref"
        ):
            if state == "sending" and not process_alive(owner):
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
                )
            )
        return records


def _nothing(db: sqlite3.Connection) -> None:
    """The work of `flush`: none beyond the commit of buffered snapshots that precedes it."""


_SELECT_TASKS = (
    "SELECT t.task_id, t.format, t.status, t.progress, t.percent, t.fail_reason, t.first_seen, "
    "t.updated_at, c.prompt, c.ref FROM tasks t LEFT JOIN creates c ON c.task_id = t.task_id"
    "{where} ORDER BY t.first_seen, t.task_id"
)
_INSERT_CHANGE = (
    "INSERT INTO changes (task_id, at, status, progress, percent) SELECT ?, ?, ?, ?, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE task_id = ? AND final = 1)"
)
_UPSERT_TASK = (
    "INSERT INTO tasks (task_id, format, status, progress, percent, fail_reason, final, first_seen, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
    "status = excluded.status, progress = excluded.progress, percent = excluded.percent, "
    "fail_reason = excluded.fail_reason, final = excluded.final, updated_at = excluded.updated_at "
    "WHERE tasks.final = 0"
)


def _delete(db: sqlite3.Connection, ids: list[str]) -> list[str]:
    found = []
    with _transaction(db):
        for ident in ids:
            hits = 0
            for table in ("tasks", "changes", "downloads"):
                hits += db.execute(f"DELETE FROM {table} WHERE task_id = ?", (ident,)).rowcount  # noqa: S608
            hits += db.execute("DELETE FROM creates WHERE task_id = ? OR ref = ?", (ident, ident)).rowcount
            if hits:
                found.append(ident)
    return found


class _transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on error): takes the write lock first,
    so two processes never deadlock upgrading a read to a write."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def migrate(db: sqlite3.Connection) -> None:
    """Bring the journal's schema to `SCHEMA_VERSION`, one transaction per step.

    Raises:
        JournalError: The file was written by a newer sora_async.
    """
    while True:
        with _transaction(db):
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
