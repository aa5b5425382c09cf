"""A shared request budget: token bucket, global pause and AIMD, without I/O.

`RateController` decides when the next request may start. All the requests
that share one controller (a client, or one batch) slow down together:

- a token bucket spaces them at `rate` per second with at most `burst` at once;
- a 429 pauses everyone until `Retry-After` (or a short backoff) has passed,
  and cuts the rate below what the server was accepting (multiplicative
  decrease); many 429s in flight at once count as one event;
- successes raise the rate again, quickly while it is far below the point
  where the server last pushed back, very slowly near it (additive increase).

Every method takes `now`, so tests drive it with a fake clock.
"""

from __future__ import annotations

import collections
import itertools
import math

from ._policy import backoff_delay

__all__ = ["RateController"]

# Pace 2% under the rate, so that network jitter bunching requests together
# on their way does not push the server's count over the limit.
_PACING = 0.98
# The most successes remembered for measuring the accepted rate.
_ACCEPTED_WINDOW = 10_000


class RateController:
    """Paces requests under one budget and reacts to 429 answers.

    Args:
        rate_limit: Requests per second at most, or None for no set limit
            (the controller then only limits itself after a 429).
        burst: How many requests may start back to back; defaults to a
            tenth of the rate, at least 1.
        decrease: The factor applied to the accepted rate on a 429.
        min_rate: The rate never drops below this.
    """

    __slots__ = (
        "_accepted",
        "_burst",
        "_first_success",
        "_last_decrease",
        "_last_refill",
        "_last_success",
        "_throttle_count",
        "_throttled_at",
        "_tokens",
        "burst_limit",
        "decrease",
        "min_rate",
        "pause_until",
        "rate",
        "rate_limit",
    )

    def __init__(
        self,
        rate_limit: float | None = None,
        *,
        burst: float | None = None,
        decrease: float = 0.9,
        min_rate: float = 0.5,
    ) -> None:
        if rate_limit is not None and not (rate_limit > 0 and math.isfinite(rate_limit)):
            raise ValueError("rate_limit must be a positive number of requests per second, or None")
        if burst is not None and not burst >= 1:
            raise ValueError("burst must be >= 1")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.rate_limit = rate_limit
        self.rate: float | None = rate_limit
        """The current pace in requests per second; None while unlimited."""
        self.burst_limit = burst
        self.decrease = decrease
        self.min_rate = min_rate
        self.pause_until = 0.0
        """No request may start before this time."""
        self._burst = self._burst_for(rate_limit)
        self._tokens = self._burst
        self._last_refill: float | None = None
        self._last_success: float | None = None
        self._first_success: float | None = None
        self._last_decrease = -math.inf
        self._throttled_at: float | None = None
        self._throttle_count = 0
        # Times of recent successes, to measure what the server accepts; the
        # bound keeps it small without trimming on every success.
        self._accepted: collections.deque[float] = collections.deque(maxlen=_ACCEPTED_WINDOW)

    @property
    def burst(self) -> float:
        """The bucket's capacity at the current rate."""
        return self._burst

    def is_free(self, now: float) -> bool:
        """Whether a request may start right now without taking a token."""
        return self.rate is None and now >= self.pause_until

    def reserve(self, now: float) -> float:
        """Take a token for one request; return the seconds to wait before sending it.

        A reservation can run the bucket negative, so concurrent callers
        queue up behind each other instead of all waking at once.
        """
        pause = self.pause_until - now
        if self.rate is None:
            return max(0.0, pause)
        self._refill(now)
        self._tokens -= 1.0
        wait = 0.0 if self._tokens >= 0 else -self._tokens / (self.rate * _PACING)
        return max(wait, pause)

    def on_success(self, now: float) -> None:
        """Record an accepted request and let the rate recover."""
        self._throttle_count = 0
        self._accepted.append(now)
        if self._first_success is None:
            self._first_success = now
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
        step = growth * self.rate * elapsed
        new_rate = self.rate + max(step, 0.05 * elapsed)
        if self.rate_limit is not None:
            new_rate = min(new_rate, self.rate_limit)
        self._set_rate(new_rate, now)

    def on_throttle(self, now: float, retry_after: float | None = None) -> None:
        """React to a 429: pause everyone, and cut the rate once per event.

        Args:
            now: The current time.
            retry_after: The server's Retry-After in seconds, if it sent one.
        """
        if retry_after is not None and retry_after <= 0:
            return  # "come back at once": a transient refusal, not a request to slow down
        if retry_after is not None:
            pause = retry_after
        else:
            pause = backoff_delay(self._throttle_count, initial=0.25, maximum=8.0)
            self._throttle_count += 1
        self.pause_until = max(self.pause_until, now + pause)
        # 429s for requests sent before the cut belong to the same event.
        if now - self._last_decrease < 1.0:
            return
        self._last_decrease = now
        cutoff = now - 1.0
        recent = sum(1 for _ in itertools.takewhile(lambda moment: moment > cutoff, reversed(self._accepted)))
        # Successes per second over the last second, or over the time since
        # the first success when that is shorter.
        span = min(1.0, max(0.05, now - self._first_success)) if self._first_success is not None else 1.0
        accepted = recent / span
        if self.rate is None:
            if not recent:
                return  # nothing measured to slow down from: the pause is the reaction
            basis = accepted
        else:
            basis = min(accepted, self.rate) if recent else self.rate
        self._throttled_at = basis
        self._set_rate(max(self.min_rate, basis * self.decrease), now)
        self._tokens = min(self._tokens, 0.0)

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
        if self._last_refill is not None and self.rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self.rate * _PACING)
        self._last_refill = now
