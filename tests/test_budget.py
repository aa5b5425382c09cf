"""Tier 1: the request budget (rate, slots, pause) on a virtual clock."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sora_async._budget import Budget


def admit_now(budget: Budget, now: float) -> float | None:
    """Admit one caller at `now` and give its slot straight back; the admit() answer."""
    wait = budget.admit(None, now)
    if wait == 0.0:
        budget.release()
    return wait


def sends_in_first_second(budget: Budget, attempts: int) -> int:
    """How many of `attempts` callers, each retrying when told, start within 1 s."""
    now, sent = 0.0, 0
    for _ in range(attempts):
        while (wait := admit_now(budget, now)) != 0.0:
            assert wait is not None
            now += wait
        if now < 1.0:
            sent += 1
    return sent


def test_unlimited_controller_never_waits() -> None:
    """Without a rate limit or a pause, every request may start at once."""
    controller = Budget()
    assert all(admit_now(controller, 0.0) == 0.0 for _ in range(1000))


def test_bucket_allows_rate_plus_burst_per_second() -> None:
    """Within one second at most rate + burst requests may start."""
    controller = Budget(100.0)
    assert controller.burst == 10.0
    assert sends_in_first_second(controller, 500) <= 110


def test_admissions_are_spaced_evenly() -> None:
    """Past the burst, each admission comes about one interval after the last."""
    controller = Budget(10.0, burst=1)
    now, times = 0.0, []
    for _ in range(4):
        while (wait := admit_now(controller, now)) != 0.0:
            assert wait is not None
            now += wait
        times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.1 <= gap < 0.105 for gap in gaps)  # never faster than the rate, a hair slower


def test_throttle_pauses_everyone_for_retry_after() -> None:
    """A 429 with Retry-After makes every reservation wait until the pause ends."""
    controller = Budget()
    controller.on_answer(10.0, 429, retry_after=3.0)
    assert admit_now(controller, 11.0) == pytest.approx(2.0)
    assert admit_now(controller, 13.0) == 0.0


def test_throttle_without_retry_after_backs_off() -> None:
    """Repeated 429s with no Retry-After pause for longer each time, capped."""
    controller = Budget()
    pauses = []
    now = 0.0
    for _ in range(12):
        controller.on_answer(now, 429)
        pauses.append(controller.pause_until - now)
        now = controller.pause_until
    assert pauses[0] < pauses[3]
    assert max(pauses) <= 8.0


def test_throttle_cuts_rate_below_what_was_accepted() -> None:
    """After a 429 the pace drops under the rate the server was accepting, once per event."""
    controller = Budget(500.0)
    for i in range(50):  # the server accepted 50 requests in the last second
        controller.on_answer((i + 1) * 0.02, 200)
    for _ in range(6):  # then refused some, saying how long to wait: it is at its limit
        controller.on_answer(1.0, 429, retry_after=1.0)
    assert controller.rate == pytest.approx(45.0, rel=0.05)
    cut = controller.rate
    for _ in range(20):
        controller.on_answer(1.1, 429, retry_after=1.0)  # same event: no second cut
    assert controller.rate == cut


def test_a_lone_429_among_many_successes_only_pauses() -> None:
    """A bare 429 (no Retry-After) under 10% of the last answers is noise: it pauses, the rate stays."""
    controller = Budget(100.0)
    for i in range(100):
        controller.on_answer(i * 0.01, 200)
    for second in range(1, 30):  # one 429 a second, each among ~100 accepted answers
        for i in range(100):
            controller.on_answer(second + i * 0.01, 200)
        controller.on_answer(second + 0.995, 429)
    assert controller.rate == 100.0
    assert controller.pause_until == pytest.approx(29.995 + 0.25)


def test_bare_429s_that_are_a_real_share_cut_the_rate() -> None:
    """Bare 429s at 10% or more of the last 5 s of answers are a limit: the rate is cut."""
    controller = Budget(100.0)
    for i in range(90):
        controller.on_answer(i / 90, 200)
    for _ in range(10):
        controller.on_answer(1.0, 429)
    assert controller.rate is not None
    assert controller.rate < 100.0


def test_rate_recovers_gradually_and_stays_under_limit() -> None:
    """After a cut the rate climbs back with successes, never past rate_limit."""
    controller = Budget(100.0)
    for i in range(80):
        controller.on_answer(i / 80, 200)
    for _ in range(10):
        controller.on_answer(1.0, 429, retry_after=1.0)
    cut = controller.rate
    assert cut is not None
    now = 1.0
    rates = []
    for _ in range(60):  # one minute of successes, 10 per second
        for _ in range(10):
            now += 0.1
            controller.on_answer(now, 200)
        rates.append(controller.rate)
    assert rates[0] is not None
    assert cut < rates[0] < rates[-1] <= 100.0  # type: ignore[operator]


def test_unmeasured_429_only_pauses() -> None:
    """A 429 with nothing accepted yet pauses but sets no rate, so a lone waiter is not slowed."""
    controller = Budget()
    controller.on_answer(0.0, 429, retry_after=0.5)
    assert controller.rate is None
    assert admit_now(controller, 0.5) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_limit": 0},
        {"rate_limit": float("inf")},
        {"rate_limit": float("nan")},
        {"burst": 0.5},
        {"max_concurrency": 0},
        {"max_retry_after": -1.0},
        {"max_retry_after": float("inf")},
    ],
)
def test_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    """Impossible budgets are a ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by argument
        Budget(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_concurrency": True}, {"max_concurrency": 2.5}, {"rate_limit": True}, {"max_retry_after": "60"}],
)
def test_rejects_wrong_types(kwargs: dict[str, Any]) -> None:
    """A bool, a float count or a string is a TypeError: the same rules as SoraClient's settings."""
    with pytest.raises(TypeError):
        Budget(**kwargs)


@pytest.mark.parametrize("hint", [None, 0.0, -5.0, float("nan"), float("-inf")])
def test_429_without_a_usable_hint_backs_off(hint: float | None) -> None:
    """A 429 whose Retry-After is absent, zero, negative or NaN pauses for our own backoff."""
    controller = Budget()
    controller.on_answer(1.0, 429, retry_after=hint)
    assert controller.pause_until == pytest.approx(1.25)  # 0.25 s, doubling per 429 in a row
    controller.on_answer(1.25, 429, retry_after=hint)
    assert controller.pause_until == pytest.approx(1.75)


class BudgetMachine(RuleBasedStateMachine):
    """Random joins, admissions, cancellations, releases, answers and clock steps on one Budget."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = Budget(None)
        self.now = 0.0
        self.queued: list[int] = []
        self.held = 0
        self.granted_before: float = 0.0

    @initialize(
        rate=st.one_of(st.none(), st.floats(0.5, 200.0)),
        slots=st.one_of(st.none(), st.integers(1, 5)),
        cap=st.floats(0.0, 120.0),
    )
    def configure(self, rate: float | None, slots: int | None, cap: float) -> None:
        self.budget = Budget(rate, slots, max_retry_after=cap)

    @rule()
    def join(self) -> None:
        self.queued.append(self.budget.join())

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.queued:
            ticket = self.queued.pop(data.draw(st.integers(0, len(self.queued) - 1)))
            tokens = self.budget.tokens
            in_flight = self.budget.in_flight
            self.budget.leave(ticket)
            assert (self.budget.tokens, self.budget.in_flight) == (tokens, in_flight)  # nothing owed

    @rule()
    def admit_head(self) -> None:
        head = self.budget.head()  # None when nobody is queued: admit a newcomer
        wait = self.budget.admit(head, self.now)
        if wait == 0.0:
            assert self.now >= self.budget.pause_until  # no request leaves during a pause
            self.held += 1
            if head is not None:
                self.queued.remove(head)
        else:
            assert wait is None or wait > 0

    @rule(data=st.data())
    def admit_not_head(self, data: st.DataObject) -> None:
        if len(self.queued) > 1:
            ticket = data.draw(st.sampled_from(self.queued[1:]))
            assert self.budget.admit(ticket, self.now) is None  # FIFO: only the head may go

    @rule()
    def release(self) -> None:
        if self.held:
            self.budget.release()
            self.held -= 1

    @rule(
        status=st.sampled_from([200, 200, 200, 429, 503, 301]),
        hint=st.one_of(st.none(), st.floats(-10, 1e6), st.sampled_from([0.0, math.nan, math.inf, -math.inf])),
    )
    def answer(self, status: int, hint: float | None) -> None:
        before = self.budget.pause_until
        self.budget.on_answer(self.now, status, hint)
        # A pause never reaches further than max_retry_after, or our own 8 s backoff.
        limit = max(self.budget.max_retry_after, 8.0)
        assert self.budget.pause_until <= max(before, self.now + limit) + 1e-9

    @rule(step=st.floats(0.0, 30.0))
    def tick(self, step: float) -> None:
        self.now += step

    @invariant()
    def never_in_debt(self) -> None:
        assert self.budget.tokens >= 0.0
        assert self.budget.in_flight == self.held
        if self.budget.max_concurrency is not None:
            assert self.budget.in_flight <= self.budget.max_concurrency
        assert self.budget.queued == len(self.queued)


TestBudgetMachine = BudgetMachine.TestCase


@pytest.mark.parametrize(("cap", "hint", "usable"), [(60.0, 5.0, 5.0), (60.0, 1e9, 60.0), (0.0, 5.0, None)])
def test_max_retry_after_caps_hints_and_zero_ignores_them(
    cap: float, hint: float, usable: float | None
) -> None:
    """Hints are capped at max_retry_after; with max_retry_after=0 the server's hints are ignored."""
    assert Budget(max_retry_after=cap).usable_retry_after(hint) == usable
