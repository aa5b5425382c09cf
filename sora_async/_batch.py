"""Waiting for many tasks at once under one request budget.

One dispatcher keeps a heap of (due time, task) and starts a poll whenever
the earliest task is due, a concurrency slot is free and the batch's
`RateController` allows it. Polls run as short-lived tasks, at most
`concurrency` of them; between polls a task is only a small record of its
status fields in the heap, never a sleeping coroutine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING

from ._errors import APITimeoutError, RateLimitError, SoraError, TaskFailedError, WaitTimeoutError
from ._models import Task, TaskStatus, queue_wait_hint
from ._policy import PollPolicy
from ._protocol import task_path
from ._ratelimit import RateController

if TYPE_CHECKING:
    from ._client import SoraClient

Outcome = Task | SoraError
"""A SUCCESS `Task`, or the `SoraError` that waiting for that task raised."""

DEFAULT_BATCH_CONCURRENCY = 5
"""CometAPI's suggested starting cap on concurrent requests."""


class _Tracked:
    """What the batch remembers of one task between polls."""

    __slots__ = ("errors", "last_sent", "polls", "progress", "raw_status", "status", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.polls = 0
        self.errors = 0
        self.status: TaskStatus | None = None
        self.raw_status = ""
        self.progress = ""
        self.last_sent = 0.0

    def snapshot(self) -> Task | None:
        """A status-only Task for timeout errors (no nested payload is kept)."""
        if self.status is None:
            return None
        return Task(
            task_id=self.task_id, status=self.status, raw_status=self.raw_status, progress=self.progress
        )


def collect_ids(task_ids: Iterable[str]) -> dict[str, int]:
    """Validate every id up front and count repeats, keeping first-seen order.

    Raises:
        TypeError: `task_ids` is a single string, or holds a non-string.
        ValueError: An id is empty, too long or contains white space.
    """
    if isinstance(task_ids, (str, bytes)):
        raise TypeError("task_ids must be an iterable of ids, not a single string")
    counts: dict[str, int] = {}
    for task_id in task_ids:
        task_path(task_id)
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts


class Batch:
    """Polls a set of task ids to their outcomes under one budget."""

    def __init__(
        self,
        client: SoraClient,
        task_ids: Iterable[str],
        *,
        concurrency: int,
        rate_limit: float | None,
        timeout: float | None,
        poll: PollPolicy,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0, or None to wait for ever")
        self.counts = collect_ids(task_ids)
        self._client = client
        self._pacer = RateController(rate_limit)
        self._concurrency = concurrency
        self._timeout = timeout
        self._policy = poll
        self._heap: list[tuple[float, int, _Tracked]] = []
        self._sequence = itertools.count()
        self._inflight: set[asyncio.Task[None]] = set()
        self._outcomes: asyncio.Queue[tuple[str, Outcome] | BaseException] = asyncio.Queue()
        self._remaining = len(self.counts)
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._deadline = float("inf")

    async def outcomes(self) -> AsyncGenerator[tuple[str, Outcome], None]:
        """Yield (task id, outcome) as each is known, once per occurrence of the id."""
        loop = asyncio.get_running_loop()
        if self._timeout is not None:
            self._deadline = loop.time() + self._timeout
        now = loop.time()
        self._heap = [(now, next(self._sequence), _Tracked(task_id)) for task_id in self.counts]
        heapq.heapify(self._heap)
        self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            while self._remaining:
                item = await self._outcomes.get()
                if isinstance(item, BaseException):
                    raise item
                task_id, outcome = item
                self._remaining -= 1
                for _ in range(self.counts[task_id]):
                    yield task_id, outcome
        finally:
            await self._close()

    async def _close(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _push(self, tracked: _Tracked, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._sequence), tracked))
        self._wakeup.set()

    def _finish(self, tracked: _Tracked, outcome: Outcome) -> None:
        self._outcomes.put_nowait((tracked.task_id, outcome))

    def _time_out(self, tracked: _Tracked, cause: BaseException | None = None) -> None:
        error = WaitTimeoutError(tracked.task_id, tracked.snapshot(), self._timeout)
        error.__cause__ = cause
        self._finish(tracked, error)

    async def _dispatch(self) -> None:
        """Start each poll when it is due and the budget allows; the only long-lived task."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._concurrency)
        try:
            while True:
                now = loop.time()
                if now >= self._deadline:
                    while self._heap:
                        self._time_out(heapq.heappop(self._heap)[2])
                if not self._heap or self._heap[0][0] > now:
                    wake_at = min(self._heap[0][0] if self._heap else float("inf"), self._deadline)
                    await self._sleep_until(wake_at, loop)
                    continue
                await slots.acquire()
                try:
                    await wait_turn(self._pacer, loop)
                except BaseException:
                    slots.release()
                    raise
                if not self._heap:  # drained by the deadline while we waited
                    slots.release()
                    continue
                # The most overdue task goes first, whoever was on top before the wait.
                tracked = heapq.heappop(self._heap)[2]
                task = asyncio.create_task(self._poll(tracked, slots))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug must reach the consumer, not hang it
            self._outcomes.put_nowait(exc)

    async def _sleep_until(self, when: float, loop: asyncio.AbstractEventLoop) -> None:
        self._wakeup.clear()
        handle = loop.call_at(when, self._wakeup.set) if when != float("inf") else None
        try:
            await self._wakeup.wait()
        finally:
            if handle is not None:
                handle.cancel()

    async def _poll(self, tracked: _Tracked, slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            deadline = None if self._deadline == float("inf") else self._deadline
            task, retry_after = await self._client._poll_once(task_path(tracked.task_id), deadline)
        except RateLimitError as exc:
            # One pause for the whole batch; this task is simply due again.
            self._pacer.on_throttle(loop.time(), exc.retry_after)
            self._push(tracked, loop.time())
            return
        except SoraError as exc:
            now = loop.time()
            if isinstance(exc, APITimeoutError) and now >= self._deadline:
                self._time_out(tracked, exc)
            elif exc.retryable:  # a transient failure: keep trying until the deadline
                delay = self._client._retry.delay(tracked.errors)
                tracked.errors += 1
                if now + delay >= self._deadline:
                    self._time_out(tracked, exc)
                else:
                    self._push(tracked, now + delay)
            else:
                self._finish(tracked, exc)
            return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._outcomes.put_nowait(exc)
            return
        finally:
            slots.release()
        now = loop.time()
        self._pacer.on_success(now)
        if tracked.polls:  # what changed since the previous poll teaches a CadencePolicy
            changed = task.raw_status != tracked.raw_status or task.progress != tracked.progress
            self._policy.observe(tracked.last_sent, now, changed)
        tracked.last_sent = sent
        tracked.errors = 0
        tracked.polls += 1
        tracked.status = task.status
        tracked.raw_status = sys.intern(task.raw_status)
        tracked.progress = sys.intern(task.progress)
        if task.status is TaskStatus.SUCCESS:
            self._finish(tracked, task)
        elif task.status is TaskStatus.FAILURE:
            self._finish(tracked, TaskFailedError(task))
        else:
            hint = queue_wait_hint(task)
            due = now + self._policy.next_delay(
                tracked.polls, retry_after=retry_after, now=now, queue_wait=hint
            )
            if due >= self._deadline:
                self._time_out(tracked)
            else:
                self._push(tracked, due)


async def wait_turn(pacer: RateController, loop: asyncio.AbstractEventLoop) -> None:
    """Wait until `pacer` lets one more request start (token and any pause)."""
    delay = pacer.reserve(loop.time())
    while delay > 0:
        await asyncio.sleep(delay)
        delay = pacer.pause_until - loop.time()
