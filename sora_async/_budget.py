"""The request budget: when a request may leave. Pure: every method takes `now`.

One `Budget` owns the three things that decide whether a request may start:

- **the rate**: a token bucket, spaced at `rate` per second with at most
  `burst` back to back. A 429 that states a `Retry-After` (the server is at
  its limit), or 429s without one that are a real share of the answers
  (10% or more over the last five seconds), cut the rate below what the
  server was accepting, once per event; successes raise it again: quickly
  far below the last refusal, very slowly near it (AIMD). A lone bare 429
  among many accepted requests only pauses: cutting on noise would spiral
  the rate down, since each cut lowers the measure the next cut starts from;
- **the slots**: at most `max_concurrency` requests in flight;
- **the pause**: after a 429, or any error answer that carries a usable
  `Retry-After`, no request starts until the pause has passed. A server's
  pause is capped at `max_retry_after`; a 429 with no usable hint pauses for
  a short backoff of our own (0.25 s doubling to 8 s).

Waiting callers queue in FIFO order and only the head of the queue may be
admitted, so a burst of waiters wakes one at a time. A caller takes its
token and its slot in the same synchronous step that admits it: a caller
that is cancelled or runs out of time while queued has taken nothing and
leaves no debt (`leave`). Tokens never go below zero.

The asyncio side (futures, timers, deadlines) is `_gate.Gate`; this module
makes no I/O and imports nothing async, so its tests run on a virtual clock.
"""

from __future__ import annotations

import collections
import itertools
import math

from ._policy import backoff_delay

__all__ = ["DEFAULT_MAX_RETRY_AFTER", "Budget", "check_count", "check_positive"]

DEFAULT_MAX_RETRY_AFTER = 60.0
"""The longest pause, in seconds, that a server's `Retry-After` may impose."""

# Pace 2% under the rate, so that network jitter bunching requests together
# on their way does not push the server's count over the limit.
_PACING = 0.98
# The most successes remembered for measuring the accepted rate.
_ACCEPTED_WINDOW = 10_000
# The share of bare 429s among the answers of the last _SHARE_WINDOW seconds
# that means "a limit", not noise, and so cuts the rate. The window is long
# enough that a pause (which silences everyone) does not bias the share.
_THROTTLE_SHARE = 0.1
_SHARE_WINDOW = 5.0
# A 429 without a usable Retry-After pauses for this backoff (seconds).
_THROTTLE_INITIAL = 0.25
_THROTTLE_MAX = 8.0
# A token this close to whole counts as whole: waking at the computed time
# must admit, whatever the float rounding of the refill.
_EPSILON = 1e-9


class Budget:
    """Decides when each request of one client (or one batch) may start.

    Args:
        rate_limit: Requests per second at most, or None for no set limit
            (the budget then only slows itself after a 429).
        max_concurrency: Requests in flight at most, or None for no limit.
        max_retry_after: The longest pause, in seconds, a server's
            `Retry-After` may impose (default 60 s).
        burst: How many requests may start back to back; defaults to a
            tenth of the rate, at least 1.
        decrease: The factor applied to the accepted rate on a 429.
        min_rate: The rate never drops below this (requests per second).

    Raises:
        TypeError: A limit is a bool or not a number.
        ValueError: A limit is out of range, NaN or infinite.
    """

    __slots__ = (
        "_accepted",
        "_burst",
        "_first_answer",
        "_last_decrease",
        "_last_refill",
        "_last_success",
        "_queue",
        "_refused",
        "_throttle_count",
        "_throttled_at",
        "_tickets",
        "_tokens",
        "burst_limit",
        "decrease",
        "in_flight",
        "max_concurrency",
        "max_retry_after",
        "min_rate",
        "pause_until",
        "rate",
        "rate_limit",
    )

    def __init__(
        self,
        rate_limit: float | None = None,
        max_concurrency: int | None = None,
        *,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        burst: float | None = None,
        decrease: float = 0.9,
        min_rate: float = 0.5,
    ) -> None:
        if rate_limit is not None:
            check_positive("rate_limit", rate_limit)
        if max_concurrency is not None:
            check_count("max_concurrency", max_concurrency, minimum=1)
        check_positive("max_retry_after", max_retry_after, allow_zero=True)
        if burst is not None and not burst >= 1:
            raise ValueError("burst must be >= 1")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.rate_limit = rate_limit
        self.rate: float | None = rate_limit
        """The current pace in requests per second; None while unlimited."""
        self.max_concurrency = max_concurrency
        self.max_retry_after = float(max_retry_after)
        self.burst_limit = burst
        self.decrease = decrease
        self.min_rate = min_rate
        self.pause_until = -math.inf
        """No request may start before this time."""
        self.in_flight = 0
        """Requests admitted and not yet released."""
        self._burst = self._burst_for(rate_limit)
        self._tokens = self._burst
        self._last_refill: float | None = None
        self._last_success: float | None = None
        self._first_answer: float | None = None
        self._last_decrease = -math.inf
        self._throttled_at: float | None = None
        self._throttle_count = 0
        self._accepted: collections.deque[float] = collections.deque(maxlen=_ACCEPTED_WINDOW)
        self._refused: collections.deque[float] = collections.deque(maxlen=_ACCEPTED_WINDOW)
        # Queued callers in arrival order; an OrderedDict for O(1) removal anywhere.
        self._queue: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._tickets = itertools.count()

    # --- admission -----------------------------------------------------------

    @property
    def burst(self) -> float:
        """The bucket's capacity at the current rate."""
        return self._burst

    @property
    def tokens(self) -> float:
        """Tokens in the bucket at the last refill (never below zero)."""
        return self._tokens

    @property
    def queued(self) -> int:
        """How many callers are waiting to be admitted."""
        return len(self._queue)

    def join(self) -> int:
        """Queue a caller that could not be admitted at once; returns its ticket."""
        ticket = next(self._tickets)
        self._queue[ticket] = None
        return ticket

    def leave(self, ticket: int) -> None:
        """Remove a queued caller that gave up (cancelled, out of time). Nothing is owed."""
        self._queue.pop(ticket, None)

    def head(self) -> int | None:
        """The ticket that is next in line, or None when nobody is queued."""
        return next(iter(self._queue), None)

    def admit(self, ticket: int | None, now: float) -> float | None:
        """Try to admit a caller: take a slot and a token if it may start now.

        Args:
            ticket: The caller's ticket from `join`, or None for a caller
                not queued (admitted only while nobody is queued).
            now: The current time, in seconds.

        Returns:
            0.0: admitted; the caller holds a slot (give it back with
            `release`) and its ticket has left the queue. A positive number:
            seconds until the pause or the rate may allow it; ask again then.
            None: it must wait for its turn or for a slot to be released.
        """
        if ticket is None:
            if self._queue:
                return None
        elif next(iter(self._queue), None) != ticket:
            return None
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            return None
        wait = self.pause_until - now
        if self.rate is not None:
            self._refill(now)
            if self._tokens < 1.0 - _EPSILON:
                wait = max(wait, (1.0 - self._tokens) / (self.rate * _PACING))
        if wait > 0:
            return wait
        if self.rate is not None:
            self._tokens = max(0.0, self._tokens - 1.0)
        self.in_flight += 1
        if ticket is not None:
            del self._queue[ticket]
        return 0.0

    def release(self) -> None:
        """Give back the slot of a request that has finished (or failed)."""
        if self.in_flight <= 0:
            raise RuntimeError("Budget.release() without a matching admission")
        self.in_flight -= 1

    # --- what the server said ------------------------------------------------

    def usable_retry_after(self, retry_after: float | None) -> float | None:
        """A server's `Retry-After` in seconds as a hint: capped at `max_retry_after`,
        and None for no hint (absent, zero, negative or not finite, or any
        hint at all when `max_retry_after` is 0)."""
        if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
            return None
        capped = min(retry_after, self.max_retry_after)
        return capped if capped > 0 else None

    def on_answer(self, now: float, status: int, retry_after: float | None = None) -> None:
        """Learn from one answer: its HTTP status and its `Retry-After` in seconds, if any.

        A 2xx lets the rate recover. A 429 pauses every request for the
        (capped) `Retry-After`, or for a short backoff of our own when it
        gave no usable hint, and cuts the rate once per event. Any other
        error answer with a usable `Retry-After` (503, 3xx, ...) pauses
        every request for it too (RFC 9110, section 10.2.3).
        """
        if status != 429:
            # Got past the server's limiter: what the server accepts, for the
            # rate a 429 cuts back to.
            self._accepted.append(now)
            if self._first_answer is None:
                self._first_answer = now
        if 200 <= status < 300:
            self._on_success(now)
            return
        hint = self.usable_retry_after(retry_after)
        if status == 429:
            self._on_throttle(now, hint)
        elif hint is not None:
            self.pause_until = max(self.pause_until, now + hint)

    def _on_success(self, now: float) -> None:
        self._throttle_count = 0
        if self.rate is None:
            return
        previous, self._last_success = self._last_success, now
        if previous is None:
            return
        elapsed = max(0.0, now - previous)
        # Recover quickly far below the rate at which the server last said no,
        # probe very gently near it (each 429 costs a pause for everyone), and
        # a little faster once well past it, where the limit seems to have moved.
        limit = self._throttled_at
        if limit is None or self.rate < 0.85 * limit:
            growth = 0.10
        elif self.rate <= 1.1 * limit:
            growth = 0.003
        else:
            growth = 0.02
        new_rate = self.rate + max(growth * self.rate * elapsed, 0.05 * elapsed)
        if self.rate_limit is not None:
            new_rate = min(new_rate, self.rate_limit)
        self._set_rate(new_rate, now)

    def _on_throttle(self, now: float, hint: float | None) -> None:
        # A 429 that states how long to wait is the server saying it is at its
        # limit; a bare one (or "0") is as often a transient refusal.
        stated = hint is not None
        if hint is None:
            hint = backoff_delay(self._throttle_count, initial=_THROTTLE_INITIAL, maximum=_THROTTLE_MAX)
            self._throttle_count += 1
        self.pause_until = max(self.pause_until, now + hint)
        self._refused.append(now)
        # 429s for requests sent before the cut belong to the same event.
        if now - self._last_decrease < 1.0:
            return
        if not stated:
            window = now - _SHARE_WINDOW
            answered = _count_since(self._accepted, window)
            refused = _count_since(self._refused, window)
            if refused < _THROTTLE_SHARE * (answered + refused):
                return  # noise among accepted requests: the pause is the whole reaction
        self._last_decrease = now
        # Answers per second over the last second, or over the time since the
        # first answer when that is shorter.
        recent = _count_since(self._accepted, now - 1.0)
        first = self._first_answer
        span = min(1.0, max(0.05, now - first)) if first is not None else 1.0
        accepted = recent / span
        if self.rate is None:
            if not recent:
                return  # nothing measured to slow down from: the pause is the reaction
            basis = accepted
        else:
            basis = min(accepted, self.rate) if recent else self.rate
        self._throttled_at = basis
        self._set_rate(max(self.min_rate, basis * self.decrease), now)
        self._tokens = 0.0

    def _set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self._burst = self._burst_for(rate)
        self._tokens = min(self._tokens, self._burst)

    def _burst_for(self, rate: float | None) -> float:
        if self.burst_limit is not None:
            return self.burst_limit
        return max(1.0, (rate or 0.0) / 10.0)

    def _refill(self, now: float) -> None:
        if self._last_refill is not None and self.rate is not None and now > self._last_refill:
            self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self.rate * _PACING)
        if self._last_refill is None or now > self._last_refill:
            self._last_refill = now


def _count_since(times: collections.deque[float], cutoff: float) -> int:
    """How many of the (rising) `times` are later than `cutoff`."""
    return sum(1 for _ in itertools.takewhile(lambda moment: moment > cutoff, reversed(times)))


def check_positive(name: str, value: float, *, allow_zero: bool = False, hint: str = "") -> None:
    """Refuse a bool, a non-number, NaN, infinity, a negative number, and 0 unless allowed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: 10**400
        finite = False
    if not (finite and (value >= 0 if allow_zero else value > 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}{hint}; got {value!r}")


def check_count(name: str, value: int, *, minimum: int) -> None:
    """Refuse anything but a whole number (a bool neither) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
