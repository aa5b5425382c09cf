"""Tier 1: poll and retry delays, with an injected random source."""

from __future__ import annotations

from typing import Any

import pytest

from sora_async import PollPolicy, RetryPolicy
from sora_async._policy import GATEWAY_REFRESH_SECONDS, backoff_delay


def test_backoff_grows_and_caps() -> None:
    """The un-jittered delay doubles per attempt until the cap."""
    delays = [backoff_delay(n, initial=0.5, maximum=8.0) for n in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize("attempt", [100, 1_100, 10_000, 10**9])
def test_backoff_does_not_overflow(attempt: int) -> None:
    """Huge attempt numbers give the cap, not an OverflowError or inf."""
    assert backoff_delay(attempt, initial=0.5, maximum=8.0) == 8.0
    assert RetryPolicy(random=lambda: 0.999).delay(attempt) <= 8.0
    assert PollPolicy(random=lambda: 0.999).next_delay(attempt) <= GATEWAY_REFRESH_SECONDS


def test_backoff_rejects_negative_attempt() -> None:
    """A negative attempt is a programming error."""
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, initial=1, maximum=2)


def test_poll_policy_default_cap_is_gateway_refresh() -> None:
    """By default the poll interval grows from 2 s to the gateway's 15 s sweep and stays there."""
    policy = PollPolicy(random=lambda: 0.5)  # 0.5 means no jitter
    delays = [policy.next_delay(n) for n in range(1, 12)]
    assert delays[0] == 2.0
    assert delays == sorted(delays)
    assert delays[-1] == 15.0


@pytest.mark.parametrize("sample", [0.0, 0.25, 0.5, 0.75, 0.999999])
def test_poll_jitter_stays_within_bounds(sample: float) -> None:
    """Jitter spreads each delay by at most +/- jitter and never past the cap."""
    policy = PollPolicy(initial_interval=4.0, max_interval=10.0, jitter=0.2, random=lambda: sample)
    first = policy.next_delay(1)
    assert 3.2 <= first <= 4.8
    assert policy.next_delay(50) <= 10.0


def test_fast_policy_for_local_servers() -> None:
    """PollPolicy(0.05, 0.2) is valid and stays within 0.2 s."""
    policy = PollPolicy(initial_interval=0.05, max_interval=0.2)
    assert all(0.0 < policy.next_delay(n) <= 0.2 for n in range(1, 50))


@pytest.mark.parametrize("hint", [0.001, 0.5, -1.0, 0.0])
def test_a_short_poll_hint_never_shortens_the_delay(hint: float) -> None:
    """A server poll hint shorter than the computed delay is ignored: never a busy loop."""
    policy = PollPolicy(random=lambda: 0.5)
    assert policy.next_delay(1, retry_after=hint) == 2.0


def test_a_long_poll_hint_lengthens_the_delay() -> None:
    """A server poll hint (already capped by the client's budget) longer than the delay wins."""
    policy = PollPolicy(random=lambda: 0.5)
    assert policy.next_delay(1, retry_after=30.0) == 30.0


def test_retry_policy_full_jitter() -> None:
    """Retry delays are uniform in [0, ceiling): the random sample scales the ceiling."""
    assert RetryPolicy(0.5, 8.0, random=lambda: 0.0).delay(3) == 0.0
    assert RetryPolicy(0.5, 8.0, random=lambda: 0.5).delay(3) == 2.0
    assert RetryPolicy(0.5, 8.0, random=lambda: 0.5).delay(30) == 4.0
    assert RetryPolicy(0.5, 8.0, random=lambda: 0.5).delay(10_000) == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_interval": 0},
        {"initial_interval": 5, "max_interval": 1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"max_interval": float("inf")},
        {"initial_interval": float("nan")},
    ],
)
def test_poll_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    """Impossible policy settings are a ValueError at construction."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by argument
        PollPolicy(**kwargs)
