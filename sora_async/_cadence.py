"""Learning when the gateway refreshes tasks, so polls land just after each refresh.

The gateway refreshes every unfinished task from upstream in one sweep every
P seconds (15 s for CometAPI), so a task's visible state can only change at
sweep times phase + k*P. Every time a poll sees a change, the change happened
between the previous poll's send time and this poll's receive time: one
interval that the sweep must fall in. `SweepEstimator` collects these
intervals from all tasks of a client (they share the gateway's clock) and
looks for the period and phase that explain them. `CadencePolicy` polls just
after each predicted sweep once the estimate is confident, and otherwise
behaves exactly like the capped backoff of `PollPolicy`.

Nothing here assumes 15 s: any period between `min_period` and
`max_period` can be learned. Pure code: every method takes the time.
"""

from __future__ import annotations

import collections
import math

from ._policy import GATEWAY_REFRESH_SECONDS, PollPolicy, Random

__all__ = ["CadencePolicy", "SweepEstimator"]

# Only intervals this narrow (after tolerance) say where a sweep falls.
_MAX_INFORMATIVE_WIDTH = 6.0


class SweepEstimator:
    """Estimates the sweep period and phase from intervals that each contain a sweep.

    Args:
        min_period, max_period: The range of periods considered, in seconds.
        step: The spacing of candidate periods.
        tolerance: Slack added to each interval, for the time a sweep takes
            to reach every task and for clock noise.
        window: How many recent informative intervals are kept.
        min_intervals: How many informative intervals are needed before
            trusting an estimate.
        min_cycles: How many of the longest candidate periods the intervals
            must span before a fit is tried (6 x 30 s: three minutes).
        agreement: The share of intervals the estimate must explain.
    """

    __slots__ = (
        "_candidates",
        "_intervals",
        "_misses",
        "_pending",
        "_refit_after",
        "_widest",
        "agreement",
        "max_period",
        "min_cycles",
        "min_intervals",
        "period",
        "phase_end",
        "phase_start",
        "tolerance",
    )

    def __init__(
        self,
        *,
        min_period: float = 5.0,
        max_period: float = 30.0,
        step: float = 0.25,
        tolerance: float = 0.5,
        window: int = 200,
        min_intervals: int = 12,
        min_cycles: int = 6,
        agreement: float = 0.9,
    ) -> None:
        if not 0 < min_period < max_period:
            raise ValueError("need 0 < min_period < max_period")
        count = round((max_period - min_period) / step) + 1
        self._candidates = [min_period + i * step for i in range(count)]
        self.max_period = max_period
        self._widest = min(_MAX_INFORMATIVE_WIDTH, max_period / 3)
        self.tolerance = tolerance
        self.min_intervals = min_intervals
        self.min_cycles = min_cycles
        self.agreement = agreement
        self._intervals: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        self._pending = 0
        # Fitting costs a pass per candidate period; after a failed fit, wait
        # for twice as many new intervals before the next (a gateway without
        # sweeps never fits, and must not cost much).
        self._refit_after = min_intervals
        self._misses = 0
        self.period: float | None = None
        """The learned period, or None while not confident."""
        self.phase_start = 0.0
        self.phase_end = 0.0

    @property
    def confident(self) -> bool:
        """Whether a period and phase are known well enough to schedule by."""
        return self.period is not None

    def record(self, start: float, end: float) -> None:
        """A change happened after a poll sent at `start` and before one answered at `end`.

        Intervals too wide to tell phases apart for any candidate are ignored.
        When confident, an interval that contains no predicted sweep counts as
        a miss; two misses in a row mean the cadence broke, and learning
        starts again.
        """
        narrow = end - start + 2 * self.tolerance <= self._widest
        if not narrow and self.period is None:
            return  # too wide to place a sweep; keep the window for narrow ones
        if self.period is not None:
            if self.explains(start, end):
                self._misses = 0
            else:
                self._misses += 1
                if self._misses >= 2:
                    self._forget()
        if narrow:
            self._intervals.append((start, end))
            if self.period is None:
                self._pending += 1

    def explains(self, start: float, end: float) -> bool:
        """Whether (start, end] contains a predicted sweep (with tolerance)."""
        if self.period is None:
            return True
        sweep = self.next_sweep_start(start - self.tolerance - (self.phase_end - self.phase_start))
        return sweep <= end + self.tolerance

    def next_sweep_start(self, after: float) -> float:
        """The start of the first predicted sweep region at or after `after`."""
        assert self.period is not None
        k = math.ceil((after - self.phase_start) / self.period)
        return self.phase_start + k * self.period

    def next_poll_time(self, after: float, guard: float) -> float:
        """`guard` seconds after the end of the first predicted sweep that ends later than that."""
        assert self.period is not None
        k = math.ceil((after - guard - self.phase_end) / self.period)
        return self.phase_end + k * self.period + guard

    def update(self) -> None:
        """Fit period and phase when enough new intervals have come (cheap otherwise)."""
        if self.period is not None or self._pending < self._refit_after:
            return
        self._pending = 0
        # Over a few cycles nearby periods (15 and 16) explain the same
        # intervals, and a short span favours small wrong periods; decide only
        # once the intervals span enough cycles of the longest candidate.
        if not self._intervals or (
            self._intervals[-1][1] - self._intervals[0][0] < self.min_cycles * self.max_period
        ):
            return
        best: tuple[float, float, float] | None = None
        for period in reversed(self._candidates):  # the largest consistent period wins
            fit = self._fit(period)
            if fit is None:
                continue
            share, start, end = fit
            if share >= self.agreement:
                best = (period, start, end)
                break
        if best is None:
            if len(self._intervals) < (self._intervals.maxlen or 0):
                self._refit_after = max(4, len(self._intervals) // 4)
            else:  # a full window that fits nothing: likely no sweep at all
                self._refit_after = min(self._refit_after * 2, 1024)
            return
        self.period, self.phase_start, self.phase_end = best
        self._misses = 0
        self._refit_after = self.min_intervals

    def _fit(self, period: float) -> tuple[float, float, float] | None:
        """The most intervals covering one phase, as a share, and that phase region."""
        tolerance = self.tolerance
        widest = min(period / 3, _MAX_INFORMATIVE_WIDTH)
        events: list[tuple[float, int]] = []
        informative = 0
        width_sum = 0.0
        for start, end in self._intervals:
            a, b = start - tolerance, end + tolerance
            if b - a > widest:
                continue  # too wide to say much about the phase at this period
            informative += 1
            width_sum += b - a
            a_phase = a % period
            b_phase = a_phase + (b - a)
            events.append((a_phase, 1))
            events.append((b_phase, -1))
            events.append((a_phase + period, 1))  # unwrap the circle once
            events.append((b_phase + period, -1))
        if informative < self.min_intervals:
            return None
        # Wide intervals agree with any phase by chance.
        if width_sum / informative > 0.4 * period:
            return None
        events.sort(key=lambda event: (event[0], -event[1]))
        depth = best = 0
        best_start = best_end = 0.0
        for index, (position, delta) in enumerate(events):
            depth += delta
            if delta > 0 and depth > best:
                best = depth
                best_start = position
                best_end = next((p for p, d in events[index + 1 :] if d < 0), position)
        return (
            min(1.0, best / informative),
            best_start % period,
            best_start % period + (best_end - best_start),
        )

    def _forget(self) -> None:
        self.period = None
        self._misses = 0
        self._intervals.clear()
        self._pending = 0


class CadencePolicy(PollPolicy):
    """Poll just after the gateway's predicted refresh; capped backoff until it is known.

    While the shared `SweepEstimator` is not confident, every delay is the
    one `PollPolicy` would give, so this policy is never worse than that
    fallback. Once confident, each poll is scheduled `guard` seconds after
    the end of the next predicted sweep, and `probe_rate` of the polls go
    `probe_lead` seconds before a sweep instead, to catch a wrong or drifted
    estimate.

    Args:
        estimator: The estimator to share; one is made if not given. Share one
            per gateway (a client does this for all its waits).
        guard: Seconds after a predicted sweep ends before polling.
        queue_trust: The share of the upstream's queue-wait estimate to skip.
        max_queue_skip: The longest a queue-wait estimate may push a poll out.
        Other arguments: as for `PollPolicy`, for the fallback.
    """

    __slots__ = ("estimator", "guard", "max_queue_skip", "probe_lead", "probe_rate", "queue_trust")

    def __init__(
        self,
        initial_interval: float = 2.0,
        max_interval: float = GATEWAY_REFRESH_SECONDS,
        *,
        estimator: SweepEstimator | None = None,
        guard: float = 0.3,
        probe_rate: float = 0.15,
        probe_lead: float = 1.0,
        queue_trust: float = 0.5,
        max_queue_skip: float = 120.0,
        multiplier: float = 1.5,
        jitter: float = 0.1,
        random: Random | None = None,
    ) -> None:
        super().__init__(initial_interval, max_interval, multiplier=multiplier, jitter=jitter, random=random)
        if not 0 <= probe_rate <= 1:
            raise ValueError("probe_rate must be between 0 and 1")
        self.estimator = estimator if estimator is not None else SweepEstimator()
        self.guard = guard
        self.probe_rate = probe_rate
        self.probe_lead = probe_lead
        self.queue_trust = queue_trust
        self.max_queue_skip = max_queue_skip

    def observe(self, since: float, received_at: float, changed: bool) -> None:
        """Tell the policy what a poll saw: a change since the previous poll (sent at
        `since`) means a sweep in (since, received_at]."""
        if changed:
            self.estimator.record(since, received_at)

    def next_delay(
        self,
        polls: int,
        *,
        retry_after: float | None = None,
        now: float | None = None,
        queue_wait: float | None = None,
    ) -> float:
        """The delay until the next poll: after the next predicted sweep, or the fallback.

        A task the upstream expects to stay queued for `queue_wait` seconds
        cannot start sooner than that; it is polled again after
        `queue_trust` of that time (sweeps in between are skipped), and
        never later than `max_queue_skip` seconds.
        """
        fallback = super().next_delay(polls, retry_after=retry_after)
        if retry_after is not None or now is None:
            return fallback
        skip = min(queue_wait * self.queue_trust, self.max_queue_skip) if queue_wait else 0.0
        estimator = self.estimator
        estimator.update()
        if not estimator.confident:
            return max(fallback, skip)
        after_sweep = estimator.next_poll_time(now + skip, self.guard)
        # Now and then poll just before a predicted sweep instead: if the task
        # has already changed by then, the estimate is wrong (a miss), and the
        # estimator starts over. Polls after sweeps alone could never tell.
        if self.random() < self.probe_rate:
            probe = estimator.next_sweep_start(now) - self.probe_lead
            if probe - now >= 0.5:
                return probe - now
        return max(0.05, after_sweep - now)

    def __repr__(self) -> str:
        learned = f"period={self.estimator.period:g}" if self.estimator.confident else "learning"
        return f"CadencePolicy({learned}, fallback={super().__repr__()})"
