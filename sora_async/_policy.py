"""When to poll again and when to retry: pure policy, no clock, no sleeping.

Everything here takes the attempt count and a random source as arguments
and returns a number of seconds, so tests run it without an event loop.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol

__all__ = ["GATEWAY_REFRESH_SECONDS", "PollPolicy", "RetryPolicy", "TaskPolicy", "backoff_delay"]

# The gateway refreshes unfinished tasks from upstream in one sweep every
# 15 s; between sweeps a task cannot change (the gateway's task polling
# service, as CometAPI's gateway documents and runs it).
GATEWAY_REFRESH_SECONDS = 15.0

# 2.0 ** 1023 is the largest power of two a float holds; cap the exponent
# well below it so attempt 10_000 cannot overflow.
_MAX_EXPONENT = 64

Random = Callable[[], float]
"""A source of floats in [0, 1), such as `random.random`."""


def backoff_delay(attempt: int, *, initial: float, maximum: float, multiplier: float = 2.0) -> float:
    """The un-jittered exponential delay for `attempt` (0-based), capped.

    Safe for any attempt number: the exponent is capped before it is raised.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    exponent = min(attempt, _MAX_EXPONENT)
    try:
        delay = initial * multiplier**exponent
    except OverflowError:
        return maximum
    return min(maximum, delay) if math.isfinite(delay) else maximum


class TaskPolicy(Protocol):
    """What one wait asks of its poll policy; `PollPolicy.for_task` returns one per wait."""

    def observe(self, since: float, received_at: float, changed: bool) -> None: ...

    def next_delay(
        self,
        polls: int,
        *,
        retry_after: float | None = None,
        now: float | None = None,
        queue_wait: float | None = None,
    ) -> float: ...


class PollPolicy:
    """Decides how long to wait before the next status poll.

    The delay starts at `initial_interval` and grows by `multiplier` per
    poll up to `max_interval`, each delay spread by +/- `jitter` (a fraction)
    so that many waiters do not poll in step. The default cap is the
    gateway's 15 s refresh: a task cannot change between sweeps, so polling
    faster than that in the long run mostly repeats the same answer, and
    polling slower adds up to a whole sweep of lag. A server `Retry-After`
    on an answered poll lengthens the delay to it (the client caps it at its
    `max_retry_after` first); it never shortens it. A wait never polls later than its deadline:
    the engine shortens the last delay instead.

    Args:
        initial_interval: Seconds before the second poll (the first is immediate).
        max_interval: The longest delay between polls.
        multiplier: Growth per poll; 1.0 polls at a fixed interval.
        jitter: Relative spread of each delay, from 0 (none) to 1.
        random: A source of floats in [0, 1); defaults to `random.random`.
    """

    __slots__ = ("initial_interval", "jitter", "max_interval", "multiplier", "random")

    def __init__(
        self,
        initial_interval: float = 2.0,
        max_interval: float = GATEWAY_REFRESH_SECONDS,
        *,
        multiplier: float = 1.5,
        jitter: float = 0.1,
        random: Random | None = None,
    ) -> None:
        if not (initial_interval > 0 and math.isfinite(initial_interval)):
            raise ValueError("initial_interval must be > 0")
        if not max_interval >= initial_interval:
            raise ValueError("max_interval must be >= initial_interval")
        if not multiplier >= 1.0:
            raise ValueError("multiplier must be >= 1")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if not math.isfinite(max_interval):
            raise ValueError("max_interval must be finite")
        self.initial_interval = float(initial_interval)
        self.max_interval = float(max_interval)
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)
        self.random: Random = random if random is not None else _default_random

    def for_task(self) -> TaskPolicy:
        """The policy one wait uses for its task: this policy itself, shared by every wait.

        A policy that keeps something per task (`CadencePolicy` keeps the
        task's place in the gateway's sweep) returns an object of its own,
        with the same `observe` and `next_delay`, for each wait.
        """
        return self

    def observe(self, since: float, received_at: float, changed: bool) -> None:
        """Learn from a poll answered at `received_at`: whether the task changed since
        the previous poll, sent at `since`.

        A plain backoff learns nothing; `CadencePolicy` learns the gateway's cadence.
        """

    def next_delay(
        self,
        polls: int,
        *,
        retry_after: float | None = None,
        now: float | None = None,
        queue_wait: float | None = None,
    ) -> float:
        """Seconds to wait after the `polls`-th poll (1-based) before the next.

        Args:
            polls: How many polls have been made so far (at least 1).
            retry_after: A server-requested delay in seconds (already capped
                by the client). It can only lengthen the delay, never
                shorten it: a proxy sending `Retry-After: 0.001` on every
                answer must not turn a wait into a busy loop.
            now: The current time, for policies that schedule by the clock.
            queue_wait: The upstream's estimate of the task's remaining queue
                time, for policies that use it (plain backoff does not).
        """
        base = backoff_delay(
            max(0, polls - 1),
            initial=self.initial_interval,
            maximum=self.max_interval,
            multiplier=self.multiplier,
        )
        spread = 1.0 + self.jitter * (2.0 * self.random() - 1.0)
        delay = min(self.max_interval, base * spread)
        return delay if retry_after is None else max(delay, retry_after)

    def __repr__(self) -> str:
        return (
            f"PollPolicy(initial_interval={self.initial_interval:g}, "
            f"max_interval={self.max_interval:g}, multiplier={self.multiplier:g}, "
            f"jitter={self.jitter:g})"
        )


class RetryPolicy:
    """Decides how long to wait before resending a failed request.

    Exponential backoff with full jitter: the delay is uniform in
    [0, min(max_delay, initial_delay * 2**attempt)) seconds. A server's
    `Retry-After` is not read here: the client's budget pauses every
    request for it (capped at the client's `max_retry_after`).
    """

    __slots__ = ("initial_delay", "max_delay", "random")

    def __init__(
        self,
        initial_delay: float = 0.5,
        max_delay: float = 8.0,
        *,
        random: Random | None = None,
    ) -> None:
        if not (0 < initial_delay <= max_delay and math.isfinite(max_delay)):
            raise ValueError("need 0 < initial_delay <= max_delay, both finite")
        self.initial_delay = float(initial_delay)
        self.max_delay = float(max_delay)
        self.random: Random = random if random is not None else _default_random

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        ceiling = backoff_delay(attempt, initial=self.initial_delay, maximum=self.max_delay)
        return ceiling * self.random()


def _default_random() -> float:
    return random.random()
