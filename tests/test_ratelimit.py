"""Tier 1: the shared request budget on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from sora_async._ratelimit import RateController


def sends_in_first_second(controller: RateController, attempts: int) -> int:
    """How many of `attempts` back-to-back reservations may start within 1 s."""
    return sum(1 for _ in range(attempts) if controller.reserve(0.0) < 1.0)


def test_unlimited_controller_never_waits() -> None:
    """Without a rate limit or a pause, every request may start at once."""
    controller = RateController()
    assert controller.is_free(0.0)
    assert all(controller.reserve(0.0) == 0.0 for _ in range(1000))


def test_bucket_allows_rate_plus_burst_per_second() -> None:
    """Within one second at most rate + burst requests may start."""
    controller = RateController(100.0)
    assert controller.burst == 10.0
    assert sends_in_first_second(controller, 500) <= 110


def test_reservations_queue_evenly() -> None:
    """Past the burst, each reservation waits about one more interval than the last."""
    controller = RateController(10.0, burst=1)
    waits = [controller.reserve(0.0) for _ in range(4)]
    assert waits[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert all(0.1 <= gap < 0.105 for gap in gaps)  # never faster than the rate, a hair slower


def test_throttle_pauses_everyone_for_retry_after() -> None:
    """A 429 with Retry-After makes every reservation wait until the pause ends."""
    controller = RateController()
    controller.on_throttle(10.0, retry_after=3.0)
    assert not controller.is_free(11.0)
    assert controller.reserve(11.0) == pytest.approx(2.0)
    assert controller.is_free(13.0)


def test_throttle_without_retry_after_backs_off() -> None:
    """Repeated 429s with no Retry-After pause for longer each time, capped."""
    controller = RateController()
    pauses = []
    now = 0.0
    for _ in range(12):
        controller.on_throttle(now)
        pauses.append(controller.pause_until - now)
        now = controller.pause_until
    assert pauses[0] < pauses[3]
    assert max(pauses) <= 8.0


def test_throttle_cuts_rate_below_what_was_accepted() -> None:
    """After a 429 the pace drops under the rate the server was accepting, once per event."""
    controller = RateController(500.0)
    for i in range(50):  # the server accepted 50 requests in the last second
        controller.on_success((i + 1) * 0.02)
    controller.on_throttle(1.0, retry_after=1.0)
    assert controller.rate == pytest.approx(45.0, rel=0.05)
    cut = controller.rate
    controller.on_throttle(1.1, retry_after=1.0)  # same event: no second cut
    assert controller.rate == cut


def test_rate_recovers_gradually_and_stays_under_limit() -> None:
    """After a cut the rate climbs back with successes, never past rate_limit."""
    controller = RateController(100.0)
    for i in range(80):
        controller.on_success(i / 80)
    controller.on_throttle(1.0, retry_after=1.0)
    cut = controller.rate
    assert cut is not None
    now = 1.0
    rates = []
    for _ in range(60):  # one minute of successes, 10 per second
        for _ in range(10):
            now += 0.1
            controller.on_success(now)
        rates.append(controller.rate)
    assert rates[0] is not None
    assert cut < rates[0] < rates[-1] <= 100.0  # type: ignore[operator]


def test_unmeasured_429_only_pauses() -> None:
    """A 429 with nothing accepted yet pauses but sets no rate, so a lone waiter is not slowed."""
    controller = RateController()
    controller.on_throttle(0.0, retry_after=0.5)
    assert controller.rate is None
    assert controller.is_free(0.5)


@pytest.mark.parametrize("kwargs", [{"rate_limit": 0}, {"rate_limit": float("inf")}, {"burst": 0.5}])
def test_rejects_nonsense(kwargs: dict[str, float]) -> None:
    """Impossible budgets are a ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by argument
        RateController(**kwargs)


def test_retry_after_zero_neither_pauses_nor_slows() -> None:
    """A 429 saying Retry-After: 0 is a transient refusal: no pause and no cut in the pace."""
    controller = RateController(100.0)
    for i in range(50):
        controller.on_success((i + 1) * 0.02)
    controller.on_throttle(1.0, retry_after=0.0)
    assert controller.rate == 100.0
    assert controller.pause_until == 0.0
