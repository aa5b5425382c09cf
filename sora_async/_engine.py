"""The one wait engine: poll, observe, decide the next poll, retry until the deadline.

Every wait of the SDK runs on `poll_step`, the one implementation of a poll
and what follows it, and keeps its per-task state in one `WaitState`:

- `follow` drives one task, sleeping between polls: `wait_until_done`,
  `watch` and `generate` are built on it;
- `Batch` drives many tasks, keeping each as a `WaitState` in a heap of due
  times (no sleeping coroutine per task): `as_completed` and `wait_many`.

The engine knows nothing of HTTP: it is given a `PollOnce` function, the
client's `Gate` (clock, sleeping, admission) and a `RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import inspect
import itertools
import logging
import math
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType

import msgspec

from ._budget import Budget
from ._errors import EventLoopMismatchError, InvalidTaskIdError, ResponseDecodeError, SoraError
from ._gate import DeadlineReached, Gate
from ._models import NULL_PAYLOAD, Task, TaskStatus, queue_wait_hint
from ._outcomes import Outcome, TaskFailedError, WaitTimeoutError
from ._policy import PollPolicy, RetryPolicy, TaskPolicy

__all__ = [
    "CONSUMER_GRACE",
    "FINAL_POLL_LEAD",
    "Batch",
    "PollOnce",
    "WaitState",
    "collect_ids",
    "follow",
    "poll_step",
]

logger = logging.getLogger("sora_async")

PollOnce = Callable[[str, "float | None"], Awaitable[tuple[Task, "float | None"]]]
"""One status request: (task id, deadline) -> (snapshot, the server's poll hint in seconds)."""

FINAL_POLL_LEAD = 0.5
"""At most this many seconds before its deadline a wait makes its last poll.

Near the deadline a wait shortens its last sleep so that this poll happens
just before the deadline, leaving the request time to be answered, instead
of giving up early. For short timeouts the lead is a tenth of the timeout.
"""

CONSUMER_GRACE = 1.0
"""Seconds a `Batch` goes on starting polls while nobody iterates over it."""


class WaitState:
    """Everything one wait knows between polls. Pure: every method takes the time.

    Between polls a wait keeps only this, with the last snapshot stripped of
    its nested payload, so that thousands of concurrent waits stay small.

    Args:
        task_id: The task waited for.
        policy: Decides the delay after each answered poll; the wait keeps
            what `policy.for_task()` gives it.
        started: The clock time the wait began, in seconds.
        timeout: Seconds from `started` to the deadline, or None for none.
    """

    __slots__ = (
        "answers",
        "deadline",
        "errors",
        "final_at",
        "last",
        "last_attempt",
        "last_error",
        "last_sent",
        "policy",
        "polls",
        "queue_wait",
        "started",
        "task_id",
        "timeout",
    )

    def __init__(self, task_id: str, policy: PollPolicy, *, started: float, timeout: float | None) -> None:
        self.task_id = task_id
        self.policy: TaskPolicy = policy.for_task()
        self.started = started
        self.timeout = timeout
        self.deadline: float | None = None
        self.final_at: float | None = None
        if timeout is not None:
            self.deadline = started + timeout
            self.final_at = self.deadline - min(FINAL_POLL_LEAD, timeout / 10)
        self.polls = 0
        """Polls sent, answered or not."""
        self.answers = 0
        """Polls answered with a snapshot."""
        self.errors = 0
        """Failed polls since the last answer."""
        self.last_error: SoraError | None = None
        """The error of the latest failed poll, while no answer has come since:
        the `__cause__` of the `WaitTimeoutError` if the wait times out."""
        self.last: Task | None = None
        self.last_sent = 0.0
        self.last_attempt = -math.inf
        self.queue_wait: float | None = None

    def count_poll(self, sent_at: float) -> None:
        """Count a poll that got past the budget and was sent at `sent_at`."""
        self.polls += 1
        self.last_attempt = sent_at

    def observe(self, task: Task, sent_at: float, received_at: float) -> bool:
        """Record a snapshot from a poll sent and answered at these times.

        Tells the policy whether the task changed since the previous poll, so a
        `CadencePolicy` can learn the gateway's cadence.

        Returns:
            Whether the status or progress changed (always True for the
            first snapshot and for a final one).
        """
        self.answers += 1
        self.errors = 0
        self.last_error = None
        last = self.last
        changed = last is None or task.raw_status != last.raw_status or task.progress != last.progress
        if last is not None:
            self.policy.observe(self.last_sent, received_at, changed)
        self.last_sent = sent_at
        self.queue_wait = queue_wait_hint(task)
        if task.is_terminal:
            self.last = task
            return True
        # Shared strings and no payload: a waiter between polls stays small.
        self.last = msgspec.structs.replace(
            task,
            data=NULL_PAYLOAD,
            task_id=self.task_id if task.task_id == self.task_id else task.task_id,
            raw_status=sys.intern(task.raw_status),
            progress=sys.intern(task.progress),
            action=sys.intern(task.action),
        )
        return changed

    def after_answer(self, now: float, retry_after: float | None = None) -> float | None:
        """When to poll next after an answered poll, or None when the wait is out of time.

        Args:
            now: The current time.
            retry_after: The server's poll hint in seconds, if it sent one.
        """
        delay = self.policy.next_delay(
            self.answers, retry_after=retry_after, now=now, queue_wait=self.queue_wait
        )
        return self._schedule(now, delay)

    def after_error(self, now: float, retry: RetryPolicy, error: SoraError | None = None) -> float | None:
        """When to poll again after a transient failure, or None when out of time.

        Args:
            now: The current time.
            retry: The backoff after failures.
            error: The failure, kept as `last_error` until the next answer.
        """
        delay = retry.delay(self.errors)
        self.errors += 1
        if error is not None:
            self.last_error = error
        return self._schedule(now, delay)

    def _schedule(self, now: float, delay: float) -> float | None:
        at = now + max(0.0, delay)
        final_at = self.final_at
        if final_at is None or at < final_at:
            return at
        # No hint, backoff or queue estimate ends a wait before its deadline:
        # the last poll moves up to just before it, once.
        assert self.deadline is not None
        if self.last_attempt >= final_at or now >= self.deadline:
            return None
        return max(now, final_at)

    def timed_out(self, now: float) -> WaitTimeoutError:
        """The error for a wait that gives up at `now`, caused by `last_error` if a poll failed last."""
        error = WaitTimeoutError(
            self.task_id, self.last, self.timeout, elapsed=max(0.0, now - self.started), polls=self.polls
        )
        error.__cause__ = self.last_error  # every path to a timeout, raised or handed out by a Batch
        return error


async def poll_step(
    state: WaitState, gate: Gate, poll: PollOnce, retry: RetryPolicy
) -> tuple[Task | None, bool, float | None]:
    """Poll once and decide what follows: the one step every wait is made of.

    Returns:
        (snapshot or None after a transient failure, whether it changed,
        when to poll next or None). A final snapshot comes with None; a
        pending one with None means the deadline leaves no room for another
        poll.

    A `ResponseDecodeError` (an answer came, but malformed, of the wrong
    shape or too large) counts as transient here, though a single request
    raises it at once: a wait retries it with backoff, as it does a 503.

    Raises:
        WaitTimeoutError: The deadline came while the poll waited for the
            budget, or a transient failure left no time for another try. Its
            `__cause__` is the last failure, if the last poll failed.
        SoraError: A failure that retrying cannot fix (not `retryable`).
    """
    sent = gate.now()
    try:
        task, hint = await poll(state.task_id, state.deadline)
    except DeadlineReached:  # it never left the budget: no poll to count
        raise state.timed_out(gate.now()) from state.last_error
    except SoraError as exc:
        state.count_poll(sent)
        if not (exc.retryable or isinstance(exc, ResponseDecodeError)):
            raise
        now = gate.now()
        at = state.after_error(now, retry, exc)
        if at is None:
            raise state.timed_out(now) from exc
        # Kept until the next answer (see `last_error`), without the traceback,
        # whose finished frames would keep the response body alive meanwhile.
        exc.with_traceback(None)
        logger.debug(
            "poll of %s failed (%s); retry in %.2f s",
            state.task_id,
            type(exc).__name__,
            at - now,
            extra={"sora_retry": (f"poll of {state.task_id}", exc, at - now)},
        )
        return None, False, at
    state.count_poll(sent)
    now = gate.now()
    changed = state.observe(task, sent, now)
    if task.is_terminal:
        return task, changed, None
    return task, changed, state.after_answer(now, hint)


async def follow(
    bind: Callable[[], Gate],
    task_id: str,
    *,
    policy: PollPolicy,
    timeout: float | None,
    poll: PollOnce,
    retry: RetryPolicy,
) -> AsyncGenerator[Task, None]:
    """Poll one task until it ends: yield the first snapshot and each change.

    The wait starts (and its `timeout`, in seconds, starts counting) on the
    first iteration, on the gate `bind` returns for the running loop. Ends
    after the final snapshot (SUCCESS or FAILURE, not raised here).

    Raises:
        WaitTimeoutError: The deadline passed first.
        SoraError: A poll failed for good, or the client was closed.
    """
    gate = bind()
    state = WaitState(task_id, policy, started=gate.now(), timeout=timeout)
    while True:
        task, changed, at = await poll_step(state, gate, poll, retry)
        if task is not None:
            if changed:
                yield task
            if task.is_terminal:
                return
        if at is None:
            raise state.timed_out(gate.now())
        del task  # between polls only the stripped snapshot in `state` stays alive
        await gate.sleep_until(at)


def outcome_of(task: Task) -> Outcome:
    """What a wait for a final `task` returns or raises: the task, or `TaskFailedError`."""
    return task if task.status is TaskStatus.SUCCESS else TaskFailedError(task)


def collect_ids(
    task_ids: Iterable[str], normalize: Callable[[str], str]
) -> tuple[dict[str, int], dict[str, InvalidTaskIdError]]:
    """Read every id up front: normalise it with `normalize` and count repeats.

    Returns:
        (the count of each id, in first-seen order; the error of each id
        `normalize` refused, keyed by the id with surrounding white space
        stripped). A refused id is counted too: it has one outcome per
        occurrence, like any other.

    Raises:
        TypeError: `task_ids` is a single string, or holds a non-string.
    """
    if isinstance(task_ids, (str, bytes)):
        raise TypeError("task_ids must be an iterable of ids, not a single string")
    counts: dict[str, int] = {}
    rejected: dict[str, InvalidTaskIdError] = {}
    for given in task_ids:
        try:
            task_id = normalize(given)
        except InvalidTaskIdError as exc:
            task_id = given.strip()
            exc.task_id = task_id
            rejected[task_id] = exc
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts, rejected


class Batch:
    """Waits for many tasks; iterate to get each (task id, outcome) as it is known.

    Returned by `SoraClient.as_completed`. It is an async iterator and an
    async context manager; the context manager form stops every poll the
    moment the block is left::

        async with client.as_completed(ids) as outcomes:
            async for task_id, outcome in outcomes:
                ...

    Inside `async with`, polling goes on until the block ends, however long
    the loop body takes (a download per outcome, say), and stops at once
    when it ends. Used bare, the batch cannot tell a consumer that left the
    loop (`break`, an exception, a kept iterator) from a slow loop body, so
    no new poll starts once nobody has asked for an outcome for
    `CONSUMER_GRACE` (1 s): a bare loop whose body takes longer than that
    pauses polling, and its deadline may pass meanwhile. Iterating again
    resumes. One task at a time may iterate a batch.
    An error that is not about one task (the client was closed, a bug)
    ends the iteration by being raised.

    Between polls each task is a `WaitState` in a heap of due times; at most
    `concurrency` polls run at once, as short-lived tasks, under the batch's
    own `Budget` on top of the client's.
    """

    def __init__(
        self,
        counts: dict[str, int],
        rejected: Mapping[str, SoraError] | None = None,
        *,
        bind: Callable[[], Gate],
        poll: PollOnce,
        retry: RetryPolicy,
        policy: PollPolicy,
        budget: Budget,
        timeout: float | None,
        on_progress: Callable[[Task], object] | None = None,
    ) -> None:
        self._counts = counts
        self._on_progress = on_progress
        self._bind = bind
        self._poll_once = poll
        self._retry = retry
        self._policy = policy
        self._budget = budget
        self._timeout = timeout
        self._gate: Gate | None = None
        self._deadline: float | None = None
        self._heap: list[tuple[float, int, WaitState]] = []
        self._sequence = itertools.count()
        # Each poll running, with the wait it polls for (see `_poll_done`).
        self._inflight: dict[asyncio.Task[None], WaitState] = {}
        # Ids refused before any poll (`rejected`) have their outcome at once.
        self._rejected = dict(rejected or {})
        self._ready: collections.deque[tuple[str, Outcome]] = collections.deque(self._rejected.items())
        self._repeats: collections.deque[tuple[str, Outcome]] = collections.deque()
        self._remaining = len(counts)
        self._failure: BaseException | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._dispatcher_alarm: asyncio.Future[None] | None = None
        self._consumer_alarm: asyncio.Future[None] | None = None
        self._idle_since: float | None = None
        self._managed = False
        self._closed = False

    # --- the consumer's side -------------------------------------------------

    def __aiter__(self) -> Batch:
        return self

    async def __aenter__(self) -> Batch:
        self._managed = True  # polling goes on, however slow the loop body, until the block ends
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def __anext__(self) -> tuple[str, Outcome]:
        if self._repeats:
            return self._repeats.popleft()
        if self._closed or (self._remaining == 0 and not self._ready):
            await self.aclose()
            raise StopAsyncIteration
        if self._consumer_alarm is not None:
            raise RuntimeError("this Batch is already being iterated by another task")
        gate = self._start()
        if gate.loop is not asyncio.get_running_loop():
            raise EventLoopMismatchError(
                "this Batch was started on another event loop; call as_completed again on this one"
            )
        self._idle_since = None
        try:
            if self._dispatcher is None or self._dispatcher.done():
                self._dispatcher = asyncio.create_task(self._dispatch())
            while not self._ready:
                if self._failure is not None:
                    raise self._failure
                alarm = self._consumer_alarm = gate.alarm(math.inf)
                try:
                    await alarm
                finally:
                    self._consumer_alarm = None
                    gate.disarm(alarm)
        except BaseException:
            self._stop()
            raise
        task_id, outcome = self._ready.popleft()
        self._remaining -= 1
        self._repeats.extend((task_id, outcome) for _ in range(self._counts[task_id] - 1))
        self._idle_since = gate.now()
        return task_id, outcome

    async def aclose(self) -> None:
        """Stop every poll of this batch and wait until they have stopped. Safe to repeat."""
        self._closed = True
        tasks = self._stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self) -> list[asyncio.Task[None]]:
        tasks = [t for t in (self._dispatcher, *self._inflight) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        # A cancelled dispatcher ends only at its next step: the next __anext__
        # (which may come before that) must start a new one, not count on it.
        self._dispatcher = None
        return tasks

    def _start(self) -> Gate:
        if self._gate is not None:
            return self._gate
        gate = self._gate = self._bind()
        started = gate.now()
        if self._timeout is not None:
            self._deadline = started + self._timeout
        self._heap = [
            (
                started,
                next(self._sequence),
                WaitState(task_id, self._policy, started=started, timeout=self._timeout),
            )
            for task_id in self._counts
            if task_id not in self._rejected
        ]  # already a heap: equal times, rising sequence numbers
        return gate

    # --- the dispatcher ------------------------------------------------------

    def _consumer_gone(self, now: float) -> bool:
        return now >= self._grace_ends(now)

    def _grace_ends(self, now: float) -> float:
        """When the consumer counts as gone: `CONSUMER_GRACE` after it last took an
        outcome (or from `now` while it waits for one); never inside `async with`."""
        if self._managed:
            return math.inf
        if self._idle_since is None:
            return now + CONSUMER_GRACE
        return self._idle_since + CONSUMER_GRACE

    async def _dispatch(self) -> None:
        """Start each poll when it is due and the batch's budget allows; the only long-lived task.

        Returns when every task has an outcome, or when the consumer has
        not asked for one for `CONSUMER_GRACE` seconds (it restarts then):
        the polls still running are cancelled then, so that none waiting
        for the client's budget is sent later, and are redone on restart.
        """
        gate = self._gate
        assert gate is not None
        try:
            while self._heap or self._inflight:
                now = gate.now()
                if self._consumer_gone(now):
                    for task in self._inflight:
                        task.cancel()
                    return
                if not self._heap or self._heap[0][0] > now:
                    wake_at = self._heap[0][0] if self._heap else math.inf
                    if self._idle_since is not None:
                        wake_at = min(wake_at, self._grace_ends(now))
                    await self._park(gate, wake_at)
                    continue
                # Wait for a slot until the deadline, and for at most the
                # consumer's grace: one that leaves meanwhile is seen in time.
                limit = self._grace_ends(now)
                if self._deadline is not None:
                    limit = min(limit, self._deadline)
                try:
                    await gate.enter(self._budget, limit)
                except DeadlineReached:
                    if self._deadline is not None and gate.now() >= self._deadline:
                        # The batch's own budget left no room before the deadline.
                        while self._heap:
                            state = heapq.heappop(self._heap)[2]
                            self._finish(state.task_id, state.timed_out(gate.now()))
                    continue
                if self._consumer_gone(gate.now()) or not self._heap:
                    gate.leave(self._budget)
                    continue
                # The most overdue task goes first, whoever was on top before the wait.
                state = heapq.heappop(self._heap)[2]
                task = asyncio.create_task(self._poll(gate, state))
                self._inflight[task] = state
                task.add_done_callback(self._poll_done)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the client closed, or a bug: it must reach the consumer
            self._fail(exc)

    async def _park(self, gate: Gate, when: float) -> None:
        alarm = self._dispatcher_alarm = gate.alarm(when)
        try:
            await alarm
        finally:
            if self._dispatcher_alarm is alarm:
                self._dispatcher_alarm = None
            gate.disarm(alarm)

    async def _poll(self, gate: Gate, state: WaitState) -> None:
        try:
            task, changed, at = await poll_step(state, gate, self._poll_once, self._retry)
        except SoraError as exc:
            self._finish(state.task_id, exc)
            return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)
            return
        if changed and task is not None and self._on_progress is not None:
            try:  # the callback's own error, a SoraError included, is not the task's outcome
                result = self._on_progress(task)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._fail(exc)
                return
        if task is not None and task.is_terminal:
            self._finish(state.task_id, outcome_of(task))
        elif at is None:
            self._finish(state.task_id, state.timed_out(gate.now()))
        else:
            heapq.heappush(self._heap, (at, next(self._sequence), state))

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        """Give back the batch slot the dispatcher took for a poll, however the poll ended.

        A cancelled poll (the consumer left, or `aclose`), even one cancelled
        before it started, puts its wait back in the heap, due now: iterating
        again polls it, instead of waiting for ever for an outcome.
        """
        state = self._inflight.pop(task)
        gate = self._gate
        assert gate is not None
        gate.leave(self._budget)
        if task.cancelled():
            heapq.heappush(self._heap, (gate.now(), next(self._sequence), state))
        if self._dispatcher_alarm is not None:
            gate.ring(self._dispatcher_alarm)  # it may be waiting for the last poll to end

    def _finish(self, task_id: str, outcome: Outcome) -> None:
        self._ready.append((task_id, outcome))
        self._wake_consumer()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        alarm = self._consumer_alarm
        if alarm is not None and not alarm.done():
            alarm.set_result(None)
