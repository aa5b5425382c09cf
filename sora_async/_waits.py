"""The waits both API formats share: one engine, one budget and one poll policy for every task.

`TaskWaits` holds `watch`, `wait_until_done`, `as_completed` and
`wait_many`; `SoraClient` (the reverse format) and `SoraClient.videos` (the
OpenAI format) inherit them and differ only in `_poll_once`, the one status
request each format sends. Both share the client's transport (its budget)
and its poll policy (what the `CadencePolicy` learns of the gateway's sweep
serves both: PROTOCOL.md, Part 2).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pathlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable

from ._budget import Budget, check_count, check_positive
from ._cadence_memory import CadenceMemory
from ._engine import Batch, PollOnce, collect_ids, follow, outcome_of
from ._errors import ClientClosedError, JournalError, SoraError, add_note
from ._gate import Gate
from ._journal import Journal, saved_file
from ._models import Task
from ._outcomes import Outcome, WaitTimeoutError
from ._policy import PollPolicy
from ._protocol import normalize_task_id
from ._transport import Transport

__all__ = [
    "DEFAULT_BATCH_CONCURRENCY",
    "DEFAULT_WAIT_TIMEOUT",
    "ProgressCallback",
    "TaskWaits",
    "created_task_id",
    "name_created_task",
]

logger = logging.getLogger("sora_async")

DEFAULT_WAIT_TIMEOUT = 1800.0
"""Seconds `wait_until_done`, `watch` and `generate` wait by default (30 min)."""

DEFAULT_BATCH_CONCURRENCY = 5
"""CometAPI's suggested starting cap on concurrent requests, for one batch."""

ProgressCallback = Callable[[Task], "Awaitable[object] | object"]
"""Called with each new snapshot; may be a plain function or a coroutine function."""


class TaskWaits:
    """Waiting for tasks by id, for a client of one API format; see the module docstring.

    A subclass sets `_transport` and `_poll` and defines `_poll_once`.
    """

    _transport: Transport
    _poll: PollPolicy
    _journal: Journal | None = None
    _memory: CadenceMemory | None = None

    async def _saved(self, task_id: str, variant: str, path: pathlib.Path) -> None:
        """Record a file `download` saved in the journal, if there is one.

        The file is saved whatever happens here: a journal that cannot record
        it is logged (a later `download_pending` then finds the file in place).
        """
        if self._journal is None:
            return
        try:
            where, size = await asyncio.to_thread(saved_file, path)
            if size is None:  # a device or FIFO (/dev/null, a pipe): nothing was kept
                return
            await self._journal.record_download(
                task_id, variant, where, size, base_url=self._transport.base_url
            )
        except (OSError, JournalError) as exc:
            logger.warning("the journal could not record the download of %s to %s: %s", task_id, path, exc)

    def _seen(self, task: Task) -> Task:
        """Record a snapshot an answer carried in the journal, if there is one; return it.

        Also lets the cadence memory save a newly verified cadence.
        """
        if self._journal is not None:
            self._journal.record_snapshot(task, self._transport.base_url)
        if self._memory is not None:
            self._memory.note()
        return task

    async def _remembered(self, deadline: float | None) -> None:
        """Before a poll: adopt the cadence an earlier process remembered (once per client),
        waiting for it briefly and never past the poll's `deadline`."""
        if self._memory is not None:
            await self._memory.load(deadline)

    async def _poll_once(self, task_id: str, deadline: float | None) -> tuple[Task, float | None]:
        """One status request with no resend: (the snapshot, the server's poll hint in seconds)."""
        raise NotImplementedError

    def watch(
        self,
        task_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
    ) -> AsyncGenerator[Task, None]:
        """Yield the first snapshot of a task, then each one that changed.

        A snapshot counts as changed when its status or progress string
        differs from the last one yielded. The iterator ends after the
        snapshot with a final status (SUCCESS or FAILURE); it does not raise
        on FAILURE. Polling happens only while the consumer asks for more.

        Args:
            task_id: The task to follow.
            timeout: Seconds before `WaitTimeoutError`; None waits for ever.
            poll: A `PollPolicy` for this call; defaults to the client's.

        Raises:
            ValueError: The id or timeout is invalid (raised at once, not on iteration).
            WaitTimeoutError: No final status before the deadline.
            ClientClosedError: The client was closed.
        """
        task_id = normalize_task_id(task_id)
        check_timeout(timeout)
        return self._follow(task_id, timeout, poll)

    async def wait_until_done(
        self,
        task_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Task:
        """Poll a task until it ends and return the SUCCESS snapshot.

        The wait ends by its deadline: its last sleep is shortened so that it
        polls once more just before the deadline (`FINAL_POLL_LEAD`), and no
        hint from the server or the policy ends it earlier. Transient
        failures, malformed answers (`ResponseDecodeError`) included, are
        retried with backoff until then.

        Args:
            task_id: The task to wait for.
            timeout: Seconds before `WaitTimeoutError`; None waits for ever.
            poll: A `PollPolicy` for this call; defaults to the client's.
            on_progress: Called with the first snapshot and then once per
                change of status or progress; may be async.

        Raises:
            ValueError: The id or timeout is invalid.
            TaskFailedError: The task ended in FAILURE.
            WaitTimeoutError: The deadline passed first; it carries the
                seconds waited and the polls sent.
            ClientClosedError: The client was closed during the wait.
            SoraError: A request failed for good (not retryable).
        """
        task_id = normalize_task_id(task_id)
        check_timeout(timeout)
        last: Task | None = None
        snapshots = self._follow(task_id, timeout, poll)
        try:
            async for last in snapshots:
                if on_progress is not None:
                    result = on_progress(last)
                    if inspect.isawaitable(result):
                        await result
        finally:
            await snapshots.aclose()
        assert last is not None  # follow() ends only after a final snapshot
        outcome = outcome_of(last)
        if isinstance(outcome, SoraError):
            raise outcome
        return outcome

    def as_completed(
        self,
        task_ids: Iterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        rate_limit: float | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Batch:
        """Wait for many tasks and yield each (task id, outcome) as soon as it is known.

        The outcome is what `wait_until_done` would have returned or raised:
        the SUCCESS `Task`, or a `TaskFailedError`, `WaitTimeoutError`,
        `TaskNotFoundError` or other `SoraError` instance. One bad task never
        stops the others: an id that cannot be sent (empty, white space
        inside, too long) gets an `InvalidTaskIdError` (a ValueError) as its
        outcome, at once. Ids are stripped of surrounding white space, and
        yielded stripped. A repeated id is polled once and yielded once per
        occurrence.

        The batch's polls pass through the batch's own budget (`concurrency`
        in flight, `rate_limit` per second) and then the client's, so a 429
        pauses the batch together with every other request of the client.
        Between polls each task costs a few hundred bytes; no coroutine
        sleeps per task.

        Use it as an async context manager so that leaving the block stops
        every poll at once; a bare `async for` also works, and stops
        starting polls within a second (`CONSUMER_GRACE`) of the consumer
        leaving the loop::

            async with client.as_completed(ids) as outcomes:
                async for task_id, outcome in outcomes:
                    ...

        Args:
            task_ids: Any iterable of ids, a generator included; read at once.
            concurrency: The most polls of this batch in flight.
            rate_limit: Polls per second for this batch, or None.
            timeout: Seconds for the whole batch; unfinished tasks then get
                a `WaitTimeoutError`. None waits for ever.
            poll: The `PollPolicy` for each task; defaults to the client's.
            on_progress: Called with each task's first snapshot and then once
                per change of its status or progress, the final one included
                (before its outcome is yielded); may be async. It runs in the
                poll that saw the change, holding that poll's slot of
                `concurrency` until it returns, so keep it short. An error it
                raises ends the iteration by being raised.

        Raises:
            TypeError: `task_ids` is a string or holds a non-string (nothing is sent).
            TypeError, ValueError: A limit or the timeout is invalid (nothing is sent).
            ClientClosedError: Raised by the iteration when the client closes.
        """
        check_timeout(timeout)
        check_count("concurrency", concurrency, minimum=1)  # named as the caller knows it
        return self._batch(
            task_ids,
            self._poll_once,
            concurrency=concurrency,
            rate_limit=rate_limit,
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
        )

    def _batch(
        self,
        task_ids: Iterable[str],
        poll_once: PollOnce,
        *,
        concurrency: int,
        rate_limit: float | None,
        timeout: float | None,
        poll: PollPolicy | None,
        on_progress: ProgressCallback | None,
    ) -> Batch:
        """The engine's batch over `task_ids`, polled by `poll_once` (arguments checked)."""
        counts, rejected = collect_ids(task_ids, normalize_task_id)
        return Batch(
            counts,
            rejected,
            bind=self._transport.gate,
            poll=poll_once,
            retry=self._transport.retry,
            policy=poll if poll is not None else self._poll,
            budget=Budget(rate_limit, concurrency),
            timeout=timeout,
            on_progress=on_progress,
        )

    async def wait_many(
        self,
        task_ids: Iterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        rate_limit: float | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Outcome]:
        """Wait for many tasks and return {task id: outcome}; see `as_completed`."""
        results: dict[str, Outcome] = {}
        async with self.as_completed(
            task_ids,
            concurrency=concurrency,
            rate_limit=rate_limit,
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
        ) as outcomes:
            async for task_id, outcome in outcomes:
                results[task_id] = outcome
        return results

    async def _wait_created(
        self,
        task_id: str,
        *,
        started: float,
        deadline: float | None,
        timeout: float | None,
        poll: PollPolicy | None,
        on_progress: ProgressCallback | None,
        waiter: str = "wait_until_done",
    ) -> Task:
        """`generate`'s wait for the task it created, under the create's deadline.

        `waiter` names the method to wait for it again with, for the note on an error.

        Whatever ends it names the task (see `name_created_task`): the task
        exists and is billed, so it can be waited for again by its id.
        """
        gate = self._transport.gate()
        try:
            remaining = None if deadline is None else deadline - gate.now()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(task_id, None, timeout, elapsed=gate.now() - started, polls=0)
            try:
                return await self.wait_until_done(
                    task_id, timeout=remaining, poll=poll, on_progress=on_progress
                )
            except ClientClosedError as exc:
                raise ClientClosedError(
                    f"the client was closed while waiting for task {task_id}, which keeps running "
                    "upstream; wait for it again by this id",
                    task_id=task_id,
                ) from exc
        except BaseException as exc:
            name_created_task(exc, task_id, waiter)
            raise

    def _deadline(self, timeout: float | None) -> float | None:
        """The loop time `timeout` seconds from now, or None."""
        return None if timeout is None else self._transport.gate().now() + timeout

    def _follow(
        self, task_id: str, timeout: float | None, poll: PollPolicy | None
    ) -> AsyncGenerator[Task, None]:
        """The engine's single-task loop for this format; it starts on first iteration."""
        return follow(
            self._transport.gate,
            task_id,
            policy=poll if poll is not None else self._poll,
            timeout=timeout,
            poll=self._poll_once,
            retry=self._transport.retry,
        )

    def _is_closed(self) -> bool:
        return self._transport.closed


def name_created_task(exc: BaseException, task_id: str, waiter: str = "wait_until_done") -> None:
    """Make `exc` name the task that was created before it was raised.

    A `SoraError` that names no task gets `task_id`; every exception gets a
    note saying how to wait for the task again.
    """
    if isinstance(exc, SoraError) and exc.task_id is None:
        exc.task_id = task_id
    exc.__dict__.setdefault(_CREATED, task_id)
    add_note(exc, f"task {task_id} was created and is billed; wait for it with {waiter}({task_id!r})")


def created_task_id(exc: BaseException) -> str | None:
    """The task `generate` had created when it raised `exc` (see `name_created_task`), or None."""
    created = exc.__dict__.get(_CREATED)
    return created if isinstance(created, str) else None


_CREATED = "_sora_created_task_id"


def time_left(gate: Gate, deadline: float | None) -> float | None:
    """Seconds from now to `deadline`, at least a millisecond, or None."""
    return None if deadline is None else max(0.001, deadline - gate.now())


def check_timeout(timeout: float | None) -> None:
    if timeout is not None:
        check_positive("timeout", timeout, hint=", or None to wait for ever")
