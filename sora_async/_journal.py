"""The task journal: what a client created, saw and downloaded, kept where a crash cannot lose it.

Every create is billed, and the gateway has no route that lists tasks
(PROTOCOL.md), so an id that only lived in a variable is lost with its
process. A client given a journal records:

- before a create leaves (once the request budget has admitted it), a
  `CreateRecord` in state "sending": prompt, options, a client-made
  reference and the time; then its answer: "created" with the task id,
  "refused" (the API answered with an error that creates nothing, or the
  request provably never left), or "in_doubt" (it was sent and no usable
  answer came: a timeout, a reset, a 5xx, a cancellation). A create is
  never resent on the journal's account: one in doubt is reported, since
  it may exist upstream where the SDK cannot find it.
- every change of a task's status or progress seen by a poll, with the time;
- each file saved by `download` (path, variant, size).

`Journal` is the interface a client writes through; `SQLiteJournal` is the
default implementation. Records and the rules that are not storage (who may
have created a task, which process owns a claim) live here.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import math
import os
import pathlib
import socket
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

import msgspec

from ._cadence_store import StoredCadence
from ._errors import APIConnectionError, APIError, JournalError, RateLimitError, add_note
from ._models import Task

__all__ = [
    "CreateRecord",
    "CreateState",
    "DownloadRecord",
    "Journal",
    "TaskRecord",
    "journaled_create",
    "may_have_created",
    "process_alive",
    "saved_file",
    "this_process",
    "uncancelled",
]

logger = logging.getLogger("sora_async")

_T = TypeVar("_T")

CreateState = Literal["sending", "created", "refused", "in_doubt"]
"""Where a create stands: sent and unanswered so far; answered with a task id; answered
with an error that created nothing (or never sent); or sent with no usable answer."""


class CreateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One create as the journal knows it.

    Attributes:
        ref: The client-made reference (32 hex digits), unique per create call.
        format: "reverse" (`/sora/v1/videos`) or "openai" (`/v1/videos`).
        prompt: The prompt sent.
        options: Every other field sent (JSON values); an input reference
            is described by its file name and size, not kept.
        sent_at: Unix time, in seconds, when the create was recorded, just
            before it left.
        state: A `CreateState`. A "sending" record whose process is gone
            (killed mid-create) is reported as "in_doubt" by the readers.
        task_id: The id the API gave, once "created".
        error: Why it was refused or is in doubt.
        answered_at: Unix time of the answer, or None.
        owner: The process that sent it (host:pid:start).
        base_url: The API root it was sent to ("" in journals older than the field).
    """

    ref: str
    format: Literal["reverse", "openai"]
    prompt: str
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    sent_at: float
    state: CreateState = "sending"
    task_id: str | None = None
    error: str = ""
    answered_at: float | None = None
    owner: str = ""
    base_url: str = ""


class DownloadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A file saved from a task: its `path`, `variant`, `size` in bytes (None for a
    device or FIFO) and the Unix time `at` it was complete under its final name."""

    task_id: str
    variant: str
    path: str
    size: int | None
    at: float


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One task as the journal knows it: its last status seen and what was made of it.

    Attributes:
        task_id: The gateway's id.
        format: "reverse" or "openai": which API polls it.
        status: The last `TaskStatus` value seen ("QUEUED", "SUCCESS", ...), or
            "NOT_FOUND" once a `resume` was told the gateway knows no such task
            (still unfinished: another key may know it; a later snapshot wins).
        progress: The last progress string seen ("30%").
        percent: `progress` as a number from 0 to 100, or None.
        fail_reason: Why it failed, for FAILURE.
        first_seen: Unix time the journal first knew the task (its create's answer).
        updated_at: Unix time of the last change recorded.
        prompt: The prompt of the create that made it; "" for a task only waited on.
        ref: That create's reference, or None.
        base_url: The API root it lives on ("" in journals older than the field).
        downloads: The files saved from it, oldest first.
    """

    task_id: str
    format: Literal["reverse", "openai"]
    status: str
    progress: str = ""
    percent: float | None = None
    fail_reason: str = ""
    first_seen: float
    updated_at: float
    prompt: str = ""
    ref: str | None = None
    base_url: str = ""
    downloads: tuple[DownloadRecord, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """Whether the task ended (SUCCESS or FAILURE)."""
        return self.status in ("SUCCESS", "FAILURE")


ClaimResult = Literal["claimed", "done", "busy"]
"""What `Journal.claim_download` found: the claim is ours; the file was saved already;
another live process holds the claim."""


class Journal(abc.ABC):
    """Where a client records creates, status changes and downloads; see the module docstring.

    `SQLiteJournal` is the default. A client calls `record_*` and the claim
    methods; the readers (`tasks`, `creates`) and `forget` serve
    `SoraClient.pending`, `resume`, `download_pending` and the CLI's `jobs`.

    Durable methods (awaited) return once their record survives a crash of
    the process; `record_snapshot` is buffered and cheap, and its records
    reach the disk within the journal's flush interval.
    """

    @abc.abstractmethod
    async def record_create(self, create: CreateRecord) -> None:
        """Durably record a create about to be sent (state "sending").

        Raises:
            JournalError: It could not be recorded; the create must not be sent.
        """

    @abc.abstractmethod
    async def record_answer(
        self, ref: str, state: CreateState, *, task_id: str | None = None, error: str = ""
    ) -> None:
        """Durably record a create's answer: "created" with `task_id`, "refused" or "in_doubt"."""

    @abc.abstractmethod
    def record_snapshot(self, task: Task, base_url: str) -> None:
        """Record a snapshot an answer from the API at `base_url` carried, if its status or
        progress changed (buffered)."""

    @abc.abstractmethod
    async def record_not_found(self, task_id: str, reason: str, *, base_url: str) -> None:
        """Durably note that the gateway said it knows no such task ("NOT_FOUND"). The task stays
        unfinished: a wrong key or a passing error may have said so, and a later snapshot wins."""

    @abc.abstractmethod
    async def claim_download(self, task_id: str, variant: str, path: str, *, base_url: str) -> ClaimResult:
        """Take the right to save `variant` of a task, so two processes never both fetch it.

        A claim held by a process that is gone is taken over.
        """

    @abc.abstractmethod
    async def release_download(self, task_id: str, variant: str, *, base_url: str) -> None:
        """Give up a claim whose download failed, so a later run may try again."""

    @abc.abstractmethod
    async def record_download(
        self, task_id: str, variant: str, path: str, size: int | None, *, base_url: str
    ) -> None:
        """Durably record a file complete under its final name (and end any claim on it)."""

    @abc.abstractmethod
    async def tasks(
        self,
        *,
        pending: bool = False,
        failed: bool = False,
        since: float | None = None,
        base_url: str | None = None,
    ) -> list[TaskRecord]:
        """The tasks known, oldest first: all, or only unfinished (`pending`) or
        FAILURE (`failed`) ones (both: either), first seen at or after Unix time `since`,
        of the API at `base_url` (records that name none included)."""

    @abc.abstractmethod
    async def creates(self, *, in_doubt: bool = False, base_url: str | None = None) -> list[CreateRecord]:
        """Every create recorded, oldest first; or only those in doubt (a "sending" record
        of a process that is gone counts, with the state "in_doubt"); `base_url` as for `tasks`."""

    @abc.abstractmethod
    async def forget(self, ids: Iterable[str]) -> list[str]:
        """Delete tasks (by task id) and creates (by task id or reference); return the ids found."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Write every buffered record now."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush and release the journal. Safe to repeat."""

    # Not abstract: a journal written before cadences were kept inherits these and keeps none.

    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        """The gateway's refresh cadence last saved for the API at `base_url` (its times in
        seconds and Unix times, see `StoredCadence`), or None when none is kept.

        A journal that keeps no cadence inherits this, which returns None:
        nothing is remembered in it, which costs only learning the cadence
        again (remembering it is an optimisation). A journal that keeps cadences returns only valid ones
        (`StoredCadence.valid`) and may raise what its other methods raise
        (`SQLiteJournal`: `JournalError`).
        """
        return None

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:  # noqa: B027  # see above
        """Remember `cadence` for the API at `base_url`, replacing the one saved before.

        A journal that keeps no cadence inherits this, which does nothing. A
        journal that keeps cadences may raise what its other methods raise
        (`SQLiteJournal`: `JournalError`).
        """


# --- creates ------------------------------------------------------------------

BeforeSend = Callable[[], Awaitable[None]]


async def journaled_create(
    journal: Journal,
    format: Literal["reverse", "openai"],
    prompt: str,
    options: Mapping[str, Any],
    send: Callable[[BeforeSend], Awaitable[str]],
    *,
    base_url: str,
) -> str:
    """Run a create through `send`, recording its intent just before it leaves and its answer after.

    `send` calls the function it is given once the request budget has
    admitted the request and before a byte is written (each attempt may
    call it; only the first records). A create that never got that far
    leaves no record, since nothing was sent. The answer is recorded even
    when the caller is cancelled meanwhile; an error in doubt gets a note
    naming the create's reference.

    Raises:
        JournalError: The intent could not be recorded; nothing was sent.
        Whatever `send` raises.
    """
    record = CreateRecord(
        ref=uuid.uuid4().hex,
        format=format,
        prompt=prompt,
        options=dict(options),
        sent_at=time.time(),
        owner=this_process(),
        base_url=base_url,
    )
    recorded = False

    async def before_send() -> None:
        nonlocal recorded
        if recorded:
            return
        try:
            await journal.record_create(record)
        except BaseException as exc:
            # Not sent. A cancellation may have come after the write began: mark it so.
            if not isinstance(exc, JournalError):
                await _answer(journal, record.ref, "refused", error="cancelled before it was sent")
            raise
        recorded = True

    try:
        task_id = await send(before_send)
    except BaseException as exc:
        if recorded:
            doubt = may_have_created(exc, format)
            state: CreateState = "in_doubt" if doubt else "refused"
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            await _answer(journal, record.ref, state, error=error[:500])
            if doubt:
                add_note(
                    exc,
                    f"create {record.ref} is recorded in the journal as in doubt: it was sent and the "
                    "task may exist upstream; it is never resent",
                )
        raise
    await _answer(journal, record.ref, "created", task_id=task_id)
    return task_id


async def _answer(
    journal: Journal, ref: str, state: CreateState, *, task_id: str | None = None, error: str = ""
) -> None:
    """Record an answer even under cancellation: the task it names is billed."""
    try:
        await uncancelled(journal.record_answer(ref, state, task_id=task_id, error=error))
    except JournalError as exc:
        # The caller still gets the task id (or the error); the record stays "sending", which
        # readers report as in doubt once this process is gone: never lost, at worst doubted.
        logger.error("the journal could not record the answer of create %s (%s): %s", ref, task_id, exc)


async def uncancelled(work: Awaitable[_T]) -> _T:
    """Await `work` to its end even if the caller is cancelled meanwhile, then let the
    cancellation go on: a journal write that has begun is finished, not abandoned."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.shield(task)
        raise


def may_have_created(exc: BaseException, format: str) -> bool:
    """Whether a create that was sent and then raised `exc` may have made a task upstream.

    Provably not: the request never left (`request_sent` False), or the API
    answered with a 4xx error (on the reverse format a 429 too: its rate
    limiter turns creates away before the task logic, PROTOCOL.md; the
    OpenAI format rewrites upstream errors into 429s, so there it is in
    doubt). Everything else after sending (a timeout, a reset, a 5xx, a
    malformed answer, a cancellation, a closed client) may have.
    """
    if isinstance(exc, APIConnectionError):
        return exc.request_sent
    if isinstance(exc, RateLimitError):
        return format == "openai"
    if isinstance(exc, APIError):
        return exc.status_code is None or exc.status_code >= 500
    return True


def saved_file(path: str | os.PathLike[str]) -> tuple[str, int | None]:
    """A saved file as the journal records it: (absolute path, size in bytes, or None when
    it is not a regular file). Blocking: call it in a thread."""
    info = os.stat(path)
    return os.path.abspath(path), info.st_size if stat.S_ISREG(info.st_mode) else None


# --- processes ------------------------------------------------------------------


def this_process() -> str:
    """This process as a claim owner: host:pid:start ticks (start is "" where unknown)."""
    return _owner(os.getpid())


@functools.lru_cache(maxsize=8)
def _owner(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}"


def process_alive(
    owner: str, *, since: float = 0.0, lease: float = math.inf, now: float | None = None
) -> bool:
    """Whether the process `owner` names may still be at work on a record made at Unix time `since`.

    A process of this host is asked (on Linux the start time in `/proc`
    tells a reused pid from the original, and a killed process not yet
    reaped, a zombie, counts as gone). One of another host (another machine,
    or a container with its own hostname) cannot be: it is taken to be at
    work until the record is `lease` seconds old.
    """
    if not owner:
        return False  # a record that names no process has none to wait for
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return (time.time() if now is None else now) - since < lease
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return owner == this_process()
    stat = _proc_stat(pid)
    if stat is not None:
        state, ticks = stat
        return state != "Z" and (not start or start == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_ticks(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) from /proc, or None where there is no /proc."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ("Z", "") if pathlib.Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces
    return fields[0], fields[19]
