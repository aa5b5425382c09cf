"""Tiers 1-2: the Gate and the wait engine on a virtual clock, with a scripted poll and no network.

Every test runs on `looptime`'s fast-forwarding loop: a 100 s wait takes
microseconds, and `loop.time()` is exact, so the tests assert the virtual
moment each thing happens. The poll function the engine is given is
`FakeApi`: it enters the client's `Budget` through the `Gate` exactly as the
transport does, tells the budget what it "answered", and returns or raises
whatever the test's script says for that task and poll number.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import hypothesis.strategies as st
import looptime
import msgspec
import pytest
from hypothesis import Phase, given, settings

from sora_async import CadencePolicy, PollPolicy, RetryPolicy, Task, TaskStatus
from sora_async._budget import Budget
from sora_async._engine import CONSUMER_GRACE, Batch, collect_ids, follow
from sora_async._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    RateLimitError,
    ServerError,
    SoraError,
    TaskNotFoundError,
)
from sora_async._gate import DeadlineReached, Gate
from sora_async._outcomes import Outcome, TaskFailedError, WaitTimeoutError
from sora_async._protocol import normalize_task_id

# A virtual clock as fine as asyncio's own (1 ns): looptime before 0.9 (the newest on
# Python 3.10) freezes when a timer is due less than half a tick ahead of its clock.
VIRTUAL_CLOCK = {"resolution": 1e-9}
pytestmark = pytest.mark.looptime(**VIRTUAL_CLOCK)

T = TypeVar("T")

EXACT = 1e-6
"""How close a virtual time must be to the expected one."""

PACED_INTERVAL = 1 / 0.98
"""Seconds per token at 1 request/s: the budget paces 2% under its rate."""

RETRY = RetryPolicy(initial_delay=0.5, max_delay=8.0, random=lambda: 0.5)
"""Retries after 0.25, 0.5, 1, 2, 4 s: half of each backoff ceiling."""


def steady(interval: float) -> PollPolicy:
    """Polls every `interval` seconds exactly."""
    return PollPolicy(initial_interval=interval, max_interval=interval, multiplier=1.0, jitter=0.0)


def snapshot(
    task_id: str,
    status: TaskStatus = TaskStatus.IN_PROGRESS,
    progress: str = "10%",
    data: msgspec.Raw | None = None,
) -> Task:
    """A task as one status poll returns it."""
    if data is None:
        return Task(task_id=task_id, status=status, raw_status=status.value, progress=progress)
    return Task(task_id=task_id, status=status, raw_status=status.value, progress=progress, data=data)


Answer = Task | tuple[Task, float] | SoraError
"""What the fake answers one poll with: a snapshot, a snapshot and a poll hint, or an error."""

Script = Callable[[str, int], Answer]
"""The fake's script: (task id, 1-based poll number of that id) -> the answer."""


def pending(task_id: str, poll: int) -> Answer:
    """A task that never finishes."""
    return snapshot(task_id)


class FakeApi:
    """A scripted status endpoint behind the client's budget, sent as the transport sends it.

    Each poll waits for `budget` through `gate` (with the wait's deadline),
    takes `latency` seconds (cut at the deadline with an APITimeoutError, as
    the transport cuts its timeout), then reports the answer to the budget
    and returns or raises it.
    """

    def __init__(
        self, gate: Gate, budget: Budget, script: Script, *, latency: float | Callable[[str], float] = 0.0
    ) -> None:
        self.gate = gate
        self.budget = budget
        self.script = script
        self.latency = latency
        self.starts: list[tuple[float, str]] = []
        """(virtual time the request left, task id) for every poll sent."""
        self.counts: collections.Counter[str] = collections.Counter()
        self.raised: list[SoraError] = []
        self.in_flight = 0
        self.peak = 0
        self.cancelled = 0

    def times(self, task_id: str) -> list[float]:
        """When each poll of `task_id` left."""
        return [moment for moment, tid in self.starts if tid == task_id]

    @property
    def last_start(self) -> float:
        """When the latest poll left."""
        return max(moment for moment, _ in self.starts)

    async def __call__(self, task_id: str, deadline: float | None) -> tuple[Task, float | None]:
        gate = self.gate
        await gate.enter(self.budget, deadline)
        try:
            sent = gate.now()
            self.counts[task_id] += 1
            self.starts.append((sent, task_id))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            latency = self.latency(task_id) if callable(self.latency) else self.latency
            try:
                if latency:
                    if deadline is not None and sent + latency > deadline:
                        await asyncio.sleep(deadline - sent)
                        raise APITimeoutError(f"GET {task_id} timed out at the deadline")
                    await asyncio.sleep(latency)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight -= 1
            answer = self.script(task_id, self.counts[task_id])
            now = gate.now()
            if isinstance(answer, SoraError):
                if isinstance(answer, RateLimitError):
                    self.budget.on_answer(now, 429, answer.retry_after)
                elif isinstance(answer, APIError):
                    self.budget.on_answer(now, answer.status_code)
                self.raised.append(answer)
                raise answer
            self.budget.on_answer(now, 200)
            return answer if isinstance(answer, tuple) else (answer, None)
        finally:
            gate.leave(self.budget)


def make_batch(
    task_ids: list[str],
    gate: Gate,
    fake: FakeApi,
    *,
    concurrency: int = 4,
    timeout: float | None = None,
    policy: PollPolicy | None = None,
    retry: RetryPolicy = RETRY,
) -> Batch:
    """A batch built as `SoraClient.as_completed` builds it, on `gate` and `fake`."""
    counts, rejected = collect_ids(task_ids, normalize_task_id)
    return Batch(
        counts,
        rejected,
        bind=lambda: gate,
        poll=fake,
        retry=retry,
        policy=policy if policy is not None else steady(0.05),
        budget=Budget(None, concurrency),
        timeout=timeout,
    )


def at(seconds: float) -> object:
    """A virtual time, as exact as the loop's clock."""
    return pytest.approx(seconds, abs=EXACT)


# --- 1. no caller waits past its deadline ------------------------------------------------------


def _paused(gate: Gate) -> tuple[Budget, float]:
    budget = Budget()
    budget.on_answer(0.0, 429, 60.0)
    return budget, 60.0


def _slot_held(gate: Gate) -> tuple[Budget, float]:
    budget = Budget(max_concurrency=1)
    assert budget.admit(None, 0.0) == 0.0  # another caller holds the only slot...
    gate.loop.call_at(3.0, gate.leave, budget)  # ...until 3 s
    return budget, 3.0


def _tokens_spent(gate: Gate) -> tuple[Budget, float]:
    budget = Budget(rate_limit=0.5)
    assert budget.admit(None, 0.0) == 0.0  # the only token of the bucket is taken
    budget.release()
    return budget, 2 * PACED_INTERVAL  # the next token is whole at 2.04 s


Setup = Callable[[Gate], tuple[Budget, float]]
"""Makes a budget that cannot admit before 1.5 s; returns it and when it can admit again."""


@pytest.mark.parametrize("setup", [_paused, _slot_held, _tokens_spent], ids=["paused", "slot", "rate"])
async def test_enter_raises_at_its_deadline_and_holds_nothing(setup: Setup) -> None:
    """A caller the budget cannot admit raises DeadlineReached at its deadline, owing nothing."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget, free_at = setup(gate)
    in_flight = budget.in_flight
    with pytest.raises(DeadlineReached):
        await gate.enter(budget, 1.5)
    assert loop.time() == at(1.5)
    assert (budget.in_flight, budget.queued) == (in_flight, 0)
    # It took nothing: the next caller is admitted the moment the budget frees up.
    await gate.enter(budget, None)
    assert loop.time() == at(free_at)


# --- 2. cancellation leaves nothing behind -----------------------------------------------------


async def test_cancel_as_the_slot_is_handed_over_frees_it() -> None:
    """gh-86296: a waiter woken for the slot and cancelled in the same step raises and holds nothing."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget(max_concurrency=1)
    await gate.enter(budget, None)  # A holds the slot
    b = asyncio.create_task(gate.enter(budget, None))
    await asyncio.sleep(0)
    assert budget.queued == 1  # B waits for the slot
    gate.leave(budget)  # hands the slot over to B (wakes it)...
    b.cancel()  # ...and B is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await b
    assert (budget.in_flight, budget.queued) == (0, 0)
    now = loop.time()
    await gate.enter(budget, now)  # a deadline of now: admitted at once, or DeadlineReached
    assert loop.time() == now
    gate.leave(budget)


async def test_cancelled_head_hands_its_turn_to_the_next() -> None:
    """The slot a cancelled waiter was woken for goes to the waiter behind it, at the same moment."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget(max_concurrency=1)
    await gate.enter(budget, None)
    b = asyncio.create_task(gate.enter(budget, None))
    c = asyncio.create_task(gate.enter(budget, 5.0))
    await asyncio.sleep(1.0)
    assert budget.queued == 2
    gate.leave(budget)
    b.cancel()
    await c  # admitted, not left to time out at 5 s
    assert loop.time() == at(1.0)
    assert b.cancelled()
    assert (budget.in_flight, budget.queued) == (1, 0)
    gate.leave(budget)


async def test_cancelled_crowd_leaves_no_debt() -> None:
    """200 callers queued at 2/s, cancelled: the next waits at most one token (0.51 s), not ~100 s."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget(rate_limit=2)

    async def caller() -> None:
        await gate.enter(budget, None)
        gate.leave(budget)

    tasks = [asyncio.create_task(caller()) for _ in range(200)]
    await asyncio.sleep(1.0)
    assert sum(task.done() for task in tasks) == 2  # admitted at 0 and 0.51 s
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert budget.queued == 0
    assert budget.in_flight == 0
    assert budget.tokens >= 0
    cancelled_at = loop.time()
    await gate.enter(budget, cancelled_at + PACED_INTERVAL / 2)
    assert loop.time() - cancelled_at <= PACED_INTERVAL / 2
    gate.leave(budget)


# --- 3. first come, first served ---------------------------------------------------------------


async def test_queued_callers_are_admitted_in_arrival_order() -> None:
    """Eight callers queued for one slot get it in the order they came; a newcomer cannot barge in."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget(max_concurrency=1)
    await gate.enter(budget, None)
    order: list[int] = []

    async def caller(number: int) -> None:
        await gate.enter(budget, None)
        order.append(number)
        await asyncio.sleep(0.1)
        gate.leave(budget)

    tasks = []
    for number in range(8):
        tasks.append(asyncio.create_task(caller(number)))
        await asyncio.sleep(0.01)
    assert budget.queued == 8
    gate.leave(budget)  # the slot is free, and the head of the queue is woken for it...
    with pytest.raises(DeadlineReached):
        await gate.enter(budget, loop.time())  # ...so a newcomer is not admitted before it
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_rate_admits_in_order_and_spaced() -> None:
    """At 10/s, burst 1: six callers holding their slots are admitted in order, 0.1-0.102 s apart."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget(rate_limit=10, burst=1)
    admitted: list[tuple[int, float]] = []

    async def caller(number: int) -> None:
        await gate.enter(budget, None)
        admitted.append((number, loop.time()))
        await asyncio.sleep(1.0)  # each admission must wake the next in line: no leave() does it here
        gate.leave(budget)

    await asyncio.gather(*(caller(number) for number in range(6)))
    assert [number for number, _ in admitted] == list(range(6))
    times = [moment for _, moment in admitted]
    assert times[0] == at(0.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 - EXACT <= gap <= 0.1 / 0.98 + EXACT for gap in gaps), gaps


# --- 4. closing ends every wait ----------------------------------------------------------------


async def test_close_ends_every_parked_wait_at_once() -> None:
    """Gate.close(error) ends parked enters, sleeps and alarms with that error at once, and later ones."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    paused = Budget()
    paused.on_answer(0.0, 429, 60.0)
    full = Budget(max_concurrency=1)
    await gate.enter(full, None)
    alarm = gate.alarm(math.inf)

    async def ring_out() -> None:
        await alarm

    waits = [
        asyncio.create_task(gate.enter(paused, None)),
        asyncio.create_task(gate.enter(full, 50.0)),
        asyncio.create_task(gate.sleep_until(1000.0)),
        asyncio.create_task(ring_out()),
    ]
    error = ClientClosedError("closed")
    loop.call_at(2.0, gate.close, error)
    results = await asyncio.gather(*waits, return_exceptions=True)
    assert all(result is error for result in results), results
    assert loop.time() == at(2.0)
    assert (paused.queued, paused.in_flight, full.queued, full.in_flight) == (0, 0, 0, 1)
    for later in (gate.enter(Budget(), None), gate.sleep_until(loop.time() + 1)):
        with pytest.raises(ClientClosedError) as info:
            await later
        assert info.value is error
    with pytest.raises(ClientClosedError):
        gate.alarm(5.0)
    assert loop.time() == at(2.0)


# --- 5. one wait: it polls until its deadline ------------------------------------------------


async def wait_for_one(
    fake: FakeApi, *, policy: PollPolicy, timeout: float | None, task_id: str = "t1"
) -> list[Task]:
    """Drive `follow` over the fake; the snapshots it yields."""
    gate = fake.gate
    wait = follow(lambda: gate, task_id, policy=policy, timeout=timeout, poll=fake, retry=RETRY)
    return [task async for task in wait]


async def test_last_poll_moves_up_to_just_before_the_deadline() -> None:
    """timeout=1, delays 0.3 s then 0.9 s: polls at 0, 0.3 and 0.9 s, then times out: 0.9 s, 3 polls."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), pending)
    policy = PollPolicy(initial_interval=0.3, multiplier=3, jitter=0)
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=policy, timeout=1.0)
    assert fake.times("t1") == [at(0.0), at(0.3), at(0.9)]
    assert loop.time() == at(0.9)
    assert info.value.elapsed == at(0.9)
    assert info.value.polls == 3
    assert info.value.last_task is not None


async def test_queue_estimate_never_ends_a_wait_early() -> None:
    """A 300 s queue estimate with timeout=100 polls again at 99.5 s: elapsed 99.5 s, 2 polls."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    queued = msgspec.Raw(b'{"estimated_queue_wait_time": 300}')
    fake = FakeApi(gate, Budget(), lambda tid, _: snapshot(tid, TaskStatus.QUEUED, "0%", queued))
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=CadencePolicy(jitter=0), timeout=100.0)
    assert fake.times("t1") == [at(0.0), at(99.5)]
    assert loop.time() == at(99.5)
    assert info.value.elapsed == at(99.5)
    assert info.value.polls == 2


async def test_server_poll_hint_never_ends_a_wait_early() -> None:
    """A poll hint of 500 s with timeout=10 polls again at 9.5 s: elapsed 9.5 s, 2 polls."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda tid, _: (snapshot(tid), 500.0))
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=steady(1.0), timeout=10.0)
    assert fake.times("t1") == [at(0.0), at(9.5)]
    assert info.value.elapsed == at(9.5)
    assert info.value.polls == 2


async def test_wait_yields_first_snapshot_and_each_change_until_final() -> None:
    """Polls QUEUED, QUEUED, 50%, 50%, SUCCESS yield 3 snapshots and stop at the 5th poll (1.2 s)."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    timeline = [
        snapshot("t1", TaskStatus.QUEUED, "0%"),
        snapshot("t1", TaskStatus.QUEUED, "0%"),
        snapshot("t1", TaskStatus.IN_PROGRESS, "50%"),
        snapshot("t1", TaskStatus.IN_PROGRESS, "50%"),
        snapshot("t1", TaskStatus.SUCCESS, "100%"),
    ]
    fake = FakeApi(gate, Budget(), lambda _, poll: timeline[poll - 1])
    seen = await wait_for_one(fake, policy=steady(0.3), timeout=10.0)
    assert [(t.raw_status, t.progress) for t in seen] == [
        ("QUEUED", "0%"),
        ("IN_PROGRESS", "50%"),
        ("SUCCESS", "100%"),
    ]
    assert fake.counts["t1"] == 5
    assert loop.time() == at(1.2)


async def test_paused_budget_ends_a_wait_at_its_deadline() -> None:
    """A client paused by Retry-After: 86400 (60 s cap) ends a timeout=3 wait at 3.0 s, nothing sent."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget()
    budget.on_answer(0.0, 429, 86400.0)
    assert budget.pause_until == 60.0
    fake = FakeApi(gate, budget, pending)
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=steady(0.5), timeout=3.0)
    assert loop.time() == at(3.0)
    assert info.value.elapsed == at(3.0)
    assert info.value.polls == 0  # none was sent
    assert fake.starts == []


async def test_close_ends_a_wait_between_polls() -> None:
    """Gate.close while a wait sleeps between polls raises the close error at that moment."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), pending)
    error = ClientClosedError("closed")
    loop.call_at(2.0, gate.close, error)
    with pytest.raises(ClientClosedError) as info:
        await wait_for_one(fake, policy=steady(10.0), timeout=None)
    assert info.value is error
    assert loop.time() == at(2.0)
    assert fake.counts["t1"] == 1


# --- 6. one wait: transient errors are retried until the deadline ------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        lambda: ServerError("upstream busy", status_code=503),
        lambda: APIConnectionError("connection reset"),
        lambda: APITimeoutError("read timed out"),
    ],
    ids=["503", "reset", "timeout"],
)
async def test_transient_errors_are_retried_until_the_deadline(failure: Callable[[], SoraError]) -> None:
    """Always failing transiently: retried at 0.25, 0.75, 1.75, 3.75, 4.5 s, then timed out: 6 polls."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda *_: failure())
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=steady(1.0), timeout=5.0)
    assert fake.times("t1") == [at(0.0), at(0.25), at(0.75), at(1.75), at(3.75), at(4.5)]
    assert loop.time() == at(4.5)
    assert info.value.polls == 6
    assert info.value.elapsed == at(4.5)
    assert info.value.__cause__ is fake.raised[-1]


async def test_non_retryable_error_is_raised_at_once() -> None:
    """A 401 ends the wait on the first poll, at 0 s, with that error."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda *_: AuthenticationError("bad key", status_code=401))
    with pytest.raises(AuthenticationError) as info:
        await wait_for_one(fake, policy=steady(1.0), timeout=5.0)
    assert info.value is fake.raised[0]
    assert fake.counts["t1"] == 1
    assert loop.time() == at(0.0)


# --- 7. many waits: Batch ----------------------------------------------------------------------


async def collect(batch: Batch) -> list[tuple[str, Outcome, float]]:
    """Every (task id, outcome, virtual time it was yielded) of a batch."""
    loop = asyncio.get_running_loop()
    return [(task_id, outcome, loop.time()) async for task_id, outcome in batch]


async def test_batch_yields_each_outcome_once_per_occurrence() -> None:
    """Ids a, b, a, c, a, d give 6 outcomes of the right kind; each distinct id is polled as one wait."""
    gate = Gate(asyncio.get_running_loop())

    def script(task_id: str, poll: int) -> Answer:
        if task_id == "c":
            return TaskNotFoundError("no such task", status_code=400)
        if task_id == "b":
            return snapshot("b", TaskStatus.FAILURE, "100%")
        finished_at = {"a": 2, "d": 3}[task_id]
        return snapshot(task_id, TaskStatus.SUCCESS if poll == finished_at else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, Budget(), script)
    ids = ["a", "b", "a", "c", "a", "d"]
    results = await collect(make_batch(ids, gate, fake))
    assert collections.Counter(task_id for task_id, _, _ in results) == collections.Counter(ids)
    kinds = {task_id: type(outcome) for task_id, outcome, _ in results}
    assert kinds == {"a": Task, "b": TaskFailedError, "c": TaskNotFoundError, "d": Task}
    assert fake.counts == {"a": 2, "b": 1, "c": 1, "d": 3}


async def test_batch_keeps_to_its_concurrency() -> None:
    """40 ids with concurrency=4: at most 4 polls in flight, and 4 reached; 120 polls in all."""
    gate = Gate(asyncio.get_running_loop())

    def script(task_id: str, poll: int) -> Answer:
        return snapshot(task_id, TaskStatus.SUCCESS if poll == 3 else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, Budget(), script, latency=0.05)
    ids = [f"t{n}" for n in range(40)]
    results = await collect(make_batch(ids, gate, fake, concurrency=4, policy=steady(0.1)))
    assert len(results) == 40
    assert fake.peak == 4
    assert len(fake.starts) == 120


async def test_batch_stops_polling_after_a_break_with_the_batch_kept() -> None:
    """After `break` with the batch still referenced, no poll starts later than 1 s (CONSUMER_GRACE) on."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)

    def script(task_id: str, poll: int) -> Answer:
        return snapshot(task_id, TaskStatus.SUCCESS if task_id == "t0" else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, Budget(), script, latency=0.01)
    batch = make_batch([f"t{n}" for n in range(20)], gate, fake)
    async for task_id, _ in batch:
        assert task_id == "t0"
        break
    left_at = loop.time()
    await asyncio.sleep(10.0)
    assert len(fake.starts) > 40  # it did go on polling during the grace period...
    assert fake.last_start <= left_at + CONSUMER_GRACE + EXACT  # ...and started nothing after it
    assert fake.in_flight == 0
    await batch.aclose()


async def test_batch_stops_polling_after_a_break_during_a_pause() -> None:
    """Polls queued behind a client-wide 30 s pause when the consumer leaves are not sent when it ends."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    budget = Budget()

    def script(task_id: str, poll: int) -> Answer:
        return snapshot(task_id, TaskStatus.SUCCESS if task_id == "t0" else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, budget, script, latency=0.01)
    batch = make_batch([f"t{n}" for n in range(20)], gate, fake)
    # Another request of the client is refused at 0.5 s with Retry-After: 30.
    loop.call_at(0.5, budget.on_answer, 0.5, 429, 30.0)
    async for _ in batch:
        break
    left_at = loop.time()
    await asyncio.sleep(60.0)
    assert fake.last_start <= left_at + CONSUMER_GRACE + EXACT, fake.starts[-5:]
    assert budget.queued == 0
    await batch.aclose()


async def test_leaving_the_batch_block_stops_polling_at_once() -> None:
    """Leaving `async with batch:` cancels the polls in flight at that moment; none starts afterwards."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)

    def script(task_id: str, poll: int) -> Answer:
        return snapshot(task_id, TaskStatus.SUCCESS if task_id == "t0" else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, Budget(), script, latency=lambda task_id: 0.1 if task_id == "t0" else 1.0)
    async with make_batch([f"t{n}" for n in range(20)], gate, fake) as batch:
        async for _ in batch:
            break
        running = fake.in_flight
        assert running >= 3  # t1-t3 since 0 s, and perhaps t4 in t0's slot
    assert loop.time() == at(0.1)
    assert fake.in_flight == 0
    assert fake.cancelled == running
    sent = len(fake.starts)
    await asyncio.sleep(10.0)
    assert len(fake.starts) == sent


@pytest.mark.parametrize("hint", [None, 0.0], ids=["no-retry-after", "retry-after-0"])
@pytest.mark.parametrize("size", [1, 10])
async def test_429_storm_in_a_batch_is_not_a_busy_loop(hint: float | None, size: int) -> None:
    """Only 429s without a usable Retry-After: at most 15 polls in 2 s (pauses of 0.25 s, doubling)."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda *_: RateLimitError("slow down", retry_after=hint))
    no_wait = RetryPolicy(initial_delay=0.5, random=lambda: 0.0)  # the engine adds no backoff of its own
    ids = [f"t{n}" for n in range(size)]
    results = await collect(make_batch(ids, gate, fake, concurrency=10, timeout=2.0, retry=no_wait))
    assert len(fake.starts) <= 15, len(fake.starts)
    sent = [moment for moment, _ in fake.starts]
    assert all(b - a >= 0.25 - EXACT for a, b in itertools.pairwise(sent[size - 1 :])), sent
    assert {type(outcome) for _, outcome, _ in results} == {WaitTimeoutError}
    assert max(moment for _, _, moment in results) <= 2.0 + EXACT


async def test_close_during_iteration_raises_the_close_error() -> None:
    """Gate.close at 1.5 s makes the batch's __anext__ raise that error at 1.5 s; no poll follows."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), pending, latency=0.01)
    batch = make_batch([f"t{n}" for n in range(10)], gate, fake)
    error = ClientClosedError("closed")
    loop.call_at(1.5, gate.close, error)
    with pytest.raises(ClientClosedError) as info:
        await collect(batch)
    assert info.value is error
    assert loop.time() == at(1.5)
    await asyncio.sleep(5.0)
    assert fake.last_start <= 1.5
    assert fake.in_flight == 0


async def test_batch_deadline_times_out_each_unfinished_id() -> None:
    """timeout=3: the 3 unfinished ids each get a WaitTimeoutError after a last poll at 2.7 s (8 polls)."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)

    def script(task_id: str, poll: int) -> Answer:
        done = task_id.startswith("done") and poll == 2
        return snapshot(task_id, TaskStatus.SUCCESS if done else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, Budget(), script)
    ids = ["done1", "done2", "late1", "late2", "late3"]
    results = await collect(make_batch(ids, gate, fake, concurrency=8, timeout=3.0, policy=steady(0.4)))
    timeouts = {
        task_id: (outcome, moment) for task_id, outcome, moment in results if task_id.startswith("late")
    }
    assert set(timeouts) == {"late1", "late2", "late3"}
    for outcome, moment in timeouts.values():
        assert isinstance(outcome, WaitTimeoutError)
        assert moment == at(2.7)
        assert outcome.elapsed == at(2.7)
        assert outcome.polls == 8
    assert loop.time() == at(2.7)


async def test_batch_deadline_holds_when_its_slots_are_busy() -> None:
    """concurrency=1, 1 s per poll, timeout=2.5: every id has its outcome (a timeout) by 2.5 s."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), pending, latency=1.0)
    results = await collect(make_batch(["a", "b", "c", "d"], gate, fake, concurrency=1, timeout=2.5))
    assert sorted(task_id for task_id, _, _ in results) == ["a", "b", "c", "d"]
    assert all(isinstance(outcome, WaitTimeoutError) for _, outcome, _ in results)
    assert max(moment for _, _, moment in results) <= 2.5 + EXACT
    assert fake.peak == 1


async def cancel_self_after(seconds: float, awaitable: Awaitable[T]) -> T | None:
    """Await in this very task, cancelling it after `seconds` as `asyncio.timeout` does.

    Returns the result, or None if it was cancelled; the caller goes on in
    the same step that the cancellation ended, with nothing run in between.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    handle = loop.call_at(loop.time() + seconds, task.cancel)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if sys.version_info >= (3, 11):
            task.uncancel()
        return None
    finally:
        handle.cancel()


@pytest.mark.parametrize("how", ["wait_for", "in_task"])
async def test_batch_resumes_after_a_cancelled_anext(how: str) -> None:
    """A consumer whose __anext__ is cancelled mid-poll, then iterates again, gets all 3 outcomes."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)

    def script(task_id: str, poll: int) -> Answer:
        return snapshot(task_id, TaskStatus.SUCCESS if poll == 2 else TaskStatus.IN_PROGRESS)

    fake = FakeApi(gate, Budget(), script, latency=1.0)
    batch = make_batch(["a", "b", "c"], gate, fake, concurrency=1, policy=steady(0.5))
    # Cancelled at 0.5 s, while the first poll is in flight; iterating again at once.
    if how == "wait_for":
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(batch), 0.5)
    else:
        assert await cancel_self_after(0.5, anext(batch)) is None
    results = await cancel_self_after(60.0, collect(batch))
    assert results is not None, "the resumed iteration hung"
    assert sorted(task_id for task_id, _, _ in results) == ["a", "b", "c"]
    assert all(isinstance(outcome, Task) for _, outcome, _ in results)


# --- 8. the budget under random load -----------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """One request: when it arrives, how long it may wait, when it is cancelled, what it is answered."""

    arrive: float
    patience: float | None
    cancel_after: float | None
    hold: float
    status: int
    retry_after: float | None


callers = st.builds(
    Caller,
    arrive=st.floats(0.0, 3.0),
    patience=st.none() | st.floats(0.0, 4.0),
    cancel_after=st.none() | st.floats(0.0, 4.0),
    hold=st.floats(0.0, 0.5),
    status=st.sampled_from([200, 200, 200, 429, 503]),
    retry_after=st.none() | st.sampled_from([0.0, -1.0, math.nan, 1e6]) | st.floats(0.01, 3.0),
)


async def run_callers(budget: Budget, crowd: list[Caller]) -> None:
    """Send every caller through a Gate on `budget`, checking each admission as it happens."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    admitted: list[float] = []
    broken: list[str] = []
    limit = budget.max_concurrency
    rate, burst = budget.rate_limit, budget.burst

    async def send(caller: Caller) -> str:
        await gate.sleep_until(caller.arrive)
        deadline = None if caller.patience is None else caller.arrive + caller.patience
        try:
            await gate.enter(budget, deadline)
        except DeadlineReached:
            if deadline is None or abs(loop.time() - deadline) > EXACT:
                broken.append(f"{caller}: gave up at {loop.time()}, not at its deadline")
            return "deadline"
        try:
            now = loop.time()
            admitted.append(now)
            if deadline is not None and now > deadline + EXACT:
                broken.append(f"{caller}: admitted at {now}, after its deadline")
            if now < budget.pause_until - EXACT:
                broken.append(f"{caller}: admitted at {now}, during a pause until {budget.pause_until}")
            if budget.tokens < 0:
                broken.append(f"{caller}: admitted with {budget.tokens} tokens")
            if limit is not None and budget.in_flight > limit:
                broken.append(f"{caller}: admitted as request {budget.in_flight} of {limit}")
            await asyncio.sleep(caller.hold)
            budget.on_answer(loop.time(), caller.status, caller.retry_after)
        finally:
            gate.leave(budget)
        return "admitted"

    tasks = []
    for caller in crowd:
        task = asyncio.create_task(send(caller))
        if caller.cancel_after is not None:
            loop.call_at(caller.arrive + caller.cancel_after, task.cancel)
        tasks.append(task)
    # Virtual time: a deadlock shows at once as callers still pending, not as a hang.
    _, stuck = await asyncio.wait(tasks, timeout=100_000.0)
    for task in stuck:
        task.cancel()
    assert not stuck, f"{len(stuck)} callers never admitted nor timed out (deadlock)"
    assert broken == []
    for caller, task in zip(crowd, tasks, strict=True):
        if task.cancelled():
            assert caller.cancel_after is not None
        elif caller.patience is None:
            assert task.result() == "admitted"  # nobody is starved
    if rate is not None:  # never faster than the rate, beyond the first burst
        for i, j in itertools.combinations(range(len(admitted)), 2):
            assert j - i + 1 <= burst + rate * (admitted[j] - admitted[i]) + EXACT


# No explain phase: it reruns a failing case a thousand times for a hint the message already gives.
@settings(max_examples=150, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(
    crowd=st.lists(callers, min_size=1, max_size=30),
    rate=st.none() | st.floats(0.5, 20.0),
    concurrency=st.none() | st.integers(1, 4),
    max_retry_after=st.sampled_from([2.0, 60.0]),
)
def test_random_callers_never_wait_past_their_deadline(
    crowd: list[Caller], rate: float | None, concurrency: int | None, max_retry_after: float
) -> None:
    """Random arrivals, deadlines, cancels and 429s: admissions keep deadlines, pauses, tokens and slots."""
    budget = Budget(rate, concurrency, max_retry_after=max_retry_after)
    loop = looptime.new_event_loop(**VIRTUAL_CLOCK)
    try:
        loop.run_until_complete(run_callers(budget, crowd))
    finally:
        loop.close()
    assert budget.tokens >= 0
    assert (budget.queued, budget.in_flight) == (0, 0)  # nothing owed once everyone is done


# --- 8. malformed answers during a wait are transient ------------------------------------------

import weakref  # noqa: E402 - this section was appended

from sora_async._engine import WaitState, poll_step  # noqa: E402
from sora_async._errors import ResponseDecodeError  # noqa: E402


def malformed() -> ResponseDecodeError:
    """What a poll raises when the answer came but its body was not a task envelope."""
    return ResponseDecodeError("the task answer is not the expected JSON (application/json, 2 bytes)")


async def test_malformed_answer_then_good_answer_succeeds() -> None:
    """A malformed answer is retried after 0.25 s like a 503; the SUCCESS that follows ends the wait."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(
        gate, Budget(), lambda tid, poll: malformed() if poll == 1 else snapshot(tid, TaskStatus.SUCCESS)
    )
    seen = await wait_for_one(fake, policy=steady(1.0), timeout=5.0)
    assert [task.status for task in seen] == [TaskStatus.SUCCESS]
    assert fake.times("t1") == [at(0.0), at(0.25)]


async def test_malformed_answers_until_the_deadline_time_out_with_the_last_as_cause() -> None:
    """Only malformed answers: retried at 0.25, 0.75, 1.75, 3.75, 4.5 s; the timeout's cause is the last."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda *_: malformed())
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=steady(1.0), timeout=5.0)
    assert fake.times("t1") == [at(0.0), at(0.25), at(0.75), at(1.75), at(3.75), at(4.5)]
    assert isinstance(info.value.__cause__, ResponseDecodeError)
    assert info.value.__cause__ is fake.raised[-1]


async def test_deadline_reached_in_the_budget_keeps_the_last_error_as_cause() -> None:
    """A 429 pausing the client 60 s: the retry waits in the budget until 5 s; the cause is the 429."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda *_: RateLimitError("slow down", retry_after=60.0))
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=steady(1.0), timeout=5.0)
    assert loop.time() == at(5.0)
    assert info.value.polls == 1
    assert info.value.__cause__ is fake.raised[0]


async def test_an_answer_clears_the_cause_of_a_later_timeout() -> None:
    """A malformed answer followed by pending answers until the deadline: the timeout has no cause."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda tid, poll: malformed() if poll == 1 else snapshot(tid))
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_one(fake, policy=steady(1.0), timeout=3.0)
    assert fake.counts["t1"] > 2
    assert info.value.__cause__ is None


async def test_batch_retries_malformed_answers_and_times_out_with_the_last_as_cause() -> None:
    """In a batch, "bad" (always malformed) times out from its last decode error; "ok" recovers to SUCCESS."""
    gate = Gate(asyncio.get_running_loop())

    def script(task_id: str, poll: int) -> Answer:
        if task_id == "bad" or poll == 1:
            return malformed()
        return snapshot(task_id, TaskStatus.SUCCESS)

    fake = FakeApi(gate, Budget(), script)
    results = {
        tid: outcome for tid, outcome, _ in await collect(make_batch(["bad", "ok"], gate, fake, timeout=3.0))
    }
    assert isinstance(results["ok"], Task)
    timeout = results["bad"]
    assert isinstance(timeout, WaitTimeoutError)
    assert isinstance(timeout.__cause__, ResponseDecodeError)
    assert timeout.__cause__ is [e for e in fake.raised if isinstance(e, ResponseDecodeError)][-1]
    assert fake.counts["bad"] > 3


async def test_batch_timeout_while_waiting_for_a_slot_keeps_the_last_error_as_cause() -> None:
    """concurrency=1, 1 s polls, timeout=2.5, always malformed: each id's timeout names its own last error."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop)
    fake = FakeApi(gate, Budget(), lambda *_: malformed(), latency=1.0)
    batch = make_batch(["a", "b"], gate, fake, concurrency=1, timeout=2.5)
    results = {tid: outcome for tid, outcome, _ in await collect(batch)}
    assert fake.counts == {"a": 2, "b": 1}
    # "a" was polled again at 2 s, and cut at the deadline; "b" waited for the slot until then.
    a, b = results["a"], results["b"]
    assert isinstance(a, WaitTimeoutError)
    assert isinstance(a.__cause__, APITimeoutError)
    assert isinstance(b, WaitTimeoutError)
    assert isinstance(b.__cause__, ResponseDecodeError)
    assert b.__cause__ is fake.raised[1]
    assert loop.time() <= 2.5 + EXACT


async def test_a_failed_poll_kept_as_cause_does_not_keep_its_body_alive() -> None:
    """The error kept for a later timeout's cause holds no frames: the body its poll read is freed."""
    gate = Gate(asyncio.get_running_loop())

    class Body:
        """A response body that can be watched for being freed."""

        def __init__(self, data: bytes) -> None:
            self.data = data

    bodies: list[weakref.ref[Body]] = []

    async def poll(task_id: str, deadline: float | None) -> tuple[Task, float | None]:
        body = Body(b"<html>" * 1000)
        bodies.append(weakref.ref(body))
        raise malformed()

    state = WaitState("t1", steady(1.0), started=0.0, timeout=10.0)
    task, _, when = await poll_step(state, gate, poll, RETRY)
    assert (task, when) == (None, at(0.25))
    assert isinstance(state.last_error, ResponseDecodeError)
    assert bodies[0]() is None
