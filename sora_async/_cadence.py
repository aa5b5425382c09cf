"""Learning when the gateway refreshes tasks, so polls land just after each refresh.

The gateway refreshes unfinished tasks from upstream in sweeps (every 15 s
for CometAPI, PROTOCOL.md), so a task's visible state can only change when a
sweep reaches it. Every time a poll sees a change, the change happened
between the previous poll's send time and this poll's receive time: one
bracket that a sweep must fall in. `SweepEstimator` collects these brackets
from all tasks of a client (they share the gateway's clock), groups the
brackets that overlap into sweeps, and fits the period and phase that
explain the sweeps. `CadencePolicy` polls just after each predicted sweep
once the estimate is confident, and otherwise behaves like the capped
backoff of `PollPolicy`, with the polls of different tasks spread apart so
that their brackets, taken together, place a sweep within a second.

Nothing here assumes 15 s: any period between `min_period` and
`max_period` can be learned. Pure code: every method takes the time.
"""

from __future__ import annotations

import collections
import itertools
import math
import weakref

from ._policy import GATEWAY_REFRESH_SECONDS, PollPolicy, Random, TaskPolicy, backoff_delay

__all__ = ["CadencePolicy", "SweepEstimator"]


class SweepEstimator:
    """Estimates the sweep period and phase from brackets that each contain a sweep.

    A bracket is (start, end]: a poll sent at `start` saw no change that a
    poll answered at `end` saw. Brackets that overlap in time are taken to
    contain the same sweep, and together place it more narrowly than any
    one of them: the sweep lies where they all overlap. The period is the
    largest one that puts nearly all of these sweeps on one grid.

    Each update costs one sort of the kept brackets and a check of a few
    dozen candidate periods against at most `_SWEEPS_USED` sweeps: bounded,
    whatever has been seen before (`make bench` measures it).

    Args:
        min_period, max_period: The range of periods considered, in seconds.
        tolerance: Slack in seconds added to each bracket, for the time a
            sweep takes to reach every task and for clock noise; also the
            half-width of the refresh window polls wait for.
        window: How many recent brackets are kept.
        min_sweeps: How many distinct sweeps, at least two periods apart,
            must agree before the estimate is trusted.
        agreement: The share of the recent sweeps the estimate must explain.
        prior: The period to try first, in seconds, or None to learn from the
            brackets alone.

    Raises:
        ValueError: An argument is not a number (a bool counts as none) or
            is out of range: periods not finite with
            0 < min_period < max_period, a tolerance of a quarter of
            min_period or more, min_sweeps or window not whole numbers,
            agreement outside (0, 1], a prior outside [min_period,
            max_period].
    """

    __slots__ = (
        "_anchor",
        "_brackets",
        "_confirmations",
        "_confirmed",
        "_fresh",
        "_hold",
        "_judged",
        "_misses",
        "_refuted",
        "_scale",
        "_wide",
        "agreement",
        "max_period",
        "min_period",
        "min_sweeps",
        "period",
        "phase_end",
        "phase_start",
        "prior",
        "tolerance",
        "verified",
    )

    def __init__(
        self,
        *,
        min_period: float = 8.0,
        max_period: float = 60.0,
        tolerance: float = 0.5,
        window: int = 200,
        min_sweeps: int = 4,
        agreement: float = 0.8,
        prior: float | None = GATEWAY_REFRESH_SECONDS,
    ) -> None:
        _numbers(min_period=min_period, max_period=max_period, tolerance=tolerance, agreement=agreement)
        if prior is not None:
            _numbers(prior=prior)
        if not 0 < min_period < max_period or not math.isfinite(max_period):
            raise ValueError("need 0 < min_period < max_period, finite")
        if not 0 <= tolerance < min_period / 4:
            raise ValueError("tolerance must be >= 0 and below a quarter of min_period")
        if not (
            _count(min_sweeps, 2)
            and _count(window, min_sweeps)
            and window <= _MAX_WINDOW
            and 0 < agreement <= 1
        ):
            raise ValueError(
                "need whole numbers 2 <= min_sweeps <= window <= 100,000, and 0 < agreement <= 1"
            )
        if prior is not None and not min_period <= prior <= max_period:
            raise ValueError("prior must be None or within [min_period, max_period]")
        self.min_period = min_period
        self.max_period = max_period
        self.tolerance = tolerance
        self.min_sweeps = min_sweeps
        self.agreement = agreement
        self.prior = prior
        # The seconds below (_MAX_NUDGE and the like) are for the gateway's 15 s sweep and
        # the default 60 s max_period; a compressed clock (max_period 4 s) shrinks them too.
        self._scale = min(1.0, max_period / _SCALE_PERIOD)
        """The period to test first while learning, in seconds: the gateway's documented
        15 s (PROTOCOL.md), or the last one learned or adopted."""
        self._anchor: tuple[float, float] | None = None  # the latest sweep placed, while learning
        self._judged: collections.deque[bool] = collections.deque(maxlen=_JUDGED)  # narrow: missed?
        self._hold = 0  # narrow brackets to wait for before trying the prior again
        self._refuted = 0  # estimates on probation dropped since the last verified one
        self._brackets: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        # Brackets too wide to group, kept while learning to place the prior's phase.
        self._wide: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WIDE_KEPT)
        self._fresh = 0
        self._misses = 0
        self._confirmations = 0
        self._confirmed = math.nan  # the window of the last confirmation
        self.period: float | None = None
        """The learned period in seconds, or None while not confident."""
        self.phase_start = 0.0
        """A predicted sweep's window starts at phase_start + k * period (the client's clock)."""
        self.phase_end = 0.0
        """... and ends, every task refreshed, at phase_end + k * period."""
        self.verified = False
        """Whether this process's own observations confirmed the estimate (one adopted
        from an earlier process is not, until they do)."""

    @property
    def nudge(self) -> float:
        """The most, in seconds, that one bracket just outside the predicted windows moves
        them; a bracket farther out is a miss."""
        return _MAX_NUDGE * self._scale

    @property
    def confident(self) -> bool:
        """Whether a period and phase are known well enough to schedule by."""
        return self.period is not None

    def record(self, start: float, end: float) -> None:
        """A change happened after a poll sent at `start` and before one answered at `end`.

        When confident, a bracket that overlaps no predicted window (beyond a
        `_MAX_NUDGE` move of the windows, which follows a drifting phase) is a
        miss. The estimate is dropped, and learning starts again from this
        bracket, at the first miss while it is on probation, at two misses in
        a row, or when `_MISSES_ALLOWED` of the last `_JUDGED` narrow brackets
        missed: on a gateway whose sweep is where the windows say, no change
        falls between two polls that straddle no window. `_CONFIRMATIONS`
        narrow brackets that a window explains verify an estimate on probation.
        """
        if not end >= start or end - start > self.max_period:
            return  # spans too many sweeps to say anything
        if self.period is not None:
            narrow = end - start <= min(self.period / 3, _JUDGED_WIDTH * self._scale)
            shift = self._shift(start, end)
            missed = abs(shift) > (self.nudge if self.verified else self.nudge / 2)
            if not missed:
                self._misses = 0
                if shift:  # just outside the predicted window: move the windows just enough
                    self.phase_start += shift
                    self.phase_end += shift
                elif narrow:
                    window = self.next_sweep_start(start - (self.phase_end - self.phase_start))
                    if window != self._confirmed:  # one confirmation per sweep
                        self._confirmed = window
                        self._confirmations += 1
                        if self._confirmations >= _CONFIRMATIONS and not self.verified:
                            self.verified = True
                            self._refuted = 0
            else:
                self._misses += 1
            if narrow:
                self._judged.append(missed)
            if missed and (not self.verified or self._misses >= 2 or sum(self._judged) >= _MISSES_ALLOWED):
                self.forget()
        if end - start <= _WIDEST_BRACKET * self._scale:  # a wider one cannot be grouped into a sweep
            self._brackets.append((start, end))
            self._fresh += 1
            self._hold -= 1
        elif self.period is None and self.prior is not None and end - start < self.prior:
            self._wide.append((start, end))  # still says where a sweep of the prior's grid falls
            self._fresh += 1

    def explains(self, start: float, end: float) -> bool:
        """Whether (start, end] overlaps a predicted refresh window."""
        return self.period is None or self._shift(start, end) == 0.0

    def _shift(self, start: float, end: float) -> float:
        """How far the predicted windows must move to overlap [start, end]: 0 if one does,
        negative to move them earlier, positive later (the smaller move of the two)."""
        assert self.period is not None
        low, high = start, end
        after = self.next_sweep_start(
            low - (self.phase_end - self.phase_start)
        )  # first window ending after low
        if after <= high:
            return 0.0
        before_end = after - self.period + (self.phase_end - self.phase_start)
        earlier = after - high  # move earlier by this to reach the bracket
        later = low - before_end
        return -earlier if earlier <= later else later

    def next_sweep_start(self, after: float) -> float:
        """The start of the first predicted refresh window at or after `after`."""
        assert self.period is not None
        k = math.ceil((after - self.phase_start) / self.period)
        return self.phase_start + k * self.period

    def next_poll_time(self, after: float, guard: float) -> float:
        """`guard` seconds after the end of the first predicted window that ends later than that."""
        assert self.period is not None
        k = math.ceil((after - guard - self.phase_end) / self.period)
        return self.phase_end + k * self.period + guard

    def update(self) -> None:
        """Fit period and phase when new brackets have come (cheap otherwise).

        While learning, every new narrow bracket may complete the picture: a
        fit over the sweeps placed so far, or else, once one sweep is placed
        and the `prior` period has not failed lately, that period through it,
        on probation. Once confident, the fit is redone every `_REFIT_EVERY`
        narrow brackets to follow a drifting phase.
        """
        if self._fresh == 0 or (self.period is not None and self._fresh < _REFIT_EVERY):
            return
        self._fresh = 0
        fit = self._fit()
        if fit is None:
            if self.period is None and self.prior is not None and self._hold <= 0:
                # Verify rather than discover: take the prior period through the
                # sweep just placed, or through the phase all recent brackets share
                # on its grid, as an estimate on probation.
                window = self._anchor or self._phase_on(self.prior)
                if window is not None:
                    self._take(self.prior, *window)
            return
        if self.period is None:
            period, centre = fit
            self._take(period, centre - self.tolerance, centre + self.tolerance)
        else:
            self.period, centre = fit
            self.phase_start = centre - self.tolerance
            self.phase_end = centre + self.tolerance
        self.prior = self.period

    def _take(self, period: float, start: float, end: float) -> None:
        """Start scheduling by `period` with a window from `start` to `end`, on probation:
        verified once `_CONFIRMATIONS` narrow brackets agree, dropped at the first miss."""
        self.period = period
        self.phase_start = start
        self.phase_end = end
        self.verified = False
        self._confirmations = 0
        self._confirmed = start  # what placed this window confirms nothing
        self._misses = 0
        self._anchor = None
        self._judged.clear()

    def learned(self, *, verified: bool = False) -> tuple[float, float, float] | None:
        """(period, phase_start, phase_end) in seconds on this estimator's clock, or None.

        With `verified`, only an estimate this process's observations confirmed.
        """
        if self.period is None or (verified and not self.verified):
            return None
        return (self.period, self.phase_start, self.phase_end)

    def adopt(self, period: float, phase_start: float, phase_end: float, *, now: float) -> None:
        """Start from a cadence learned earlier (by an earlier process), to be verified.

        Ignored unless the values are finite, the period within
        [`min_period`, `max_period`] and the window narrower than half of it.
        It is on probation: until `_CONFIRMATIONS` narrow brackets confirm it,
        one bracket it cannot explain discards it.
        """
        values = (period, phase_start, phase_end, now)
        if not all(math.isfinite(value) for value in values):
            return
        if not self.min_period <= period <= self.max_period or not 0 <= phase_end - phase_start < period / 2:
            return
        shift = math.floor((now - phase_start) / period) * period  # keep the numbers near `now`
        self._take(period, phase_start + shift, phase_end + shift)
        self.prior = period

    def forget(self) -> None:
        """Drop the estimate and every bracket: learning starts again.

        An estimate dropped on probation makes the next try of the prior wait
        for twice as many narrow brackets as the last: a gateway without
        sweeps, which places a "sweep" now and then by chance, costs less and
        less.
        """
        if self.period is not None and not self.verified:
            self._refuted = min(self._refuted + 1, _MAX_REFUTED)
            self._hold = _HOLD << self._refuted
        else:
            self._hold = 0
        self.period = None
        self.verified = False
        self._misses = 0
        self._confirmations = 0
        self._brackets.clear()
        self._wide.clear()
        self._fresh = 0
        self._anchor = None
        self._judged.clear()

    # --- fitting -----------------------------------------------------------

    def _sweeps(self) -> list[tuple[float, float]]:
        """The sweeps the brackets place: (centre, half-width), oldest first.

        Brackets sorted by their end are stabbed greedily: each group is every
        bracket that contains the first end not yet stabbed, and the sweep
        lies where the group overlaps. A group whose overlap is wide says
        little and is left out, unless it is the only bracket of its sweep
        and narrow by itself.
        """
        tolerance = self.tolerance
        ordered = sorted(self._brackets, key=_end)
        groups: list[list[float]] = []  # [latest start, stabbing end, count]
        point = -math.inf
        for start, end in ordered:
            if start - tolerance < point:
                group = groups[-1]
                group[0] = max(group[0], start - tolerance)
                group[2] += 1
            else:
                point = end + tolerance
                groups.append([start - tolerance, point, 1.0])
        widest = _WIDEST_SWEEP * self._scale
        return [
            ((low + high) / 2, (high - low) / 2)
            for low, high, count in groups
            if high - low <= widest
            and (count >= 2 or high - low <= 2 * tolerance + _SINGLE_WIDTH * self._scale)
        ]

    def _phase_on(self, period: float) -> tuple[float, float] | None:
        """The window, near the latest bracket, where a sweep of the grid of `period` falls if
        (nearly) every recent bracket holds one; None unless the brackets say so clearly.

        Each bracket narrower than `period` covers an arc of the grid's cycle; a sweep's
        phase is covered by every bracket, any other point only by chance (by a share of
        them as large as the arcs). The phase counts when at least `_SHARED` of the
        brackets cover it and the evidence, the sum of log(period / width) over them,
        reaches `_EVIDENCE` (a chance of about e**-_EVIDENCE that brackets at random
        times would agree so well).
        """
        tolerance = self.tolerance
        arcs = [
            (start - tolerance, end - start + 2 * tolerance)
            for start, end in itertools.chain(self._brackets, self._wide)
            if end - start + 2 * tolerance < period
        ]
        if len(arcs) < self.min_sweeps:
            return None
        events: list[tuple[float, int, float]] = []
        for start, width in arcs:
            offset = start % period
            weight = math.log(period / width)
            for shift in (0.0, period):  # unwrap the cycle once
                events.append((offset + shift, 1, weight))
                events.append((offset + width + shift, -1, -weight))
        events.sort(key=lambda event: (event[0], -event[1]))
        depth = best = 0
        evidence = best_evidence = 0.0
        region = (0.0, 0.0)
        for index, (position, delta, weight) in enumerate(events):
            depth += delta
            evidence += weight
            if delta > 0 and depth > best:
                best, best_evidence = depth, evidence
                region = (position, events[index + 1][0] if index + 1 < len(events) else position)
        if best < _SHARED * len(arcs) or best_evidence < _EVIDENCE:
            return None
        latest = max(end for _, end in itertools.chain(self._brackets, self._wide))
        low, high = region
        cycle = math.floor((latest - low % period) / period) * period
        return low % period + cycle, low % period + cycle + (high - low)

    def _fit(self) -> tuple[float, float] | None:
        """(period, centre of the latest sweep) that explains enough recent sweeps, or None.

        While learning, candidate periods come from the gaps between recent
        sweeps (each gap over 1, 2, 3... periods) and the largest that puts
        enough of them on one grid wins; once confident, only the current
        period is refined, so that a drifting phase is followed without
        jumping to a multiple.
        """
        resolution = _RESOLUTION * self._scale
        fit_slack = _FIT_SLACK * self._scale
        placed = self._sweeps()
        if placed:
            centre, half = placed[-1]
            self._anchor = (centre - half, centre + half)
        else:
            self._anchor = None
        sweeps = placed[-_SWEEPS_USED:]
        if len(sweeps) < self.min_sweeps:
            return None
        if self.period is not None:
            candidates = {self.period}
        else:
            candidates = set()
            recent = sweeps[-_GAPS_USED - 1 :]
            for (before, _), (after, _) in itertools.pairwise(recent):
                gap = after - before
                if gap > _LONGEST_GAP * self.max_period:
                    continue  # sweeps far apart: too many ways to divide the gap, too little said
                for k in range(1, int(gap / self.min_period) + 1):
                    period = gap / k
                    if period <= self.max_period:
                        candidates.add(round(period / resolution) * resolution)
        reference = min(sweeps, key=_half)
        # A grid finer than four times the slack of its sweeps fits nearly anything.
        slack = 2 * sorted(half for _, half in sweeps)[len(sweeps) // 2] + fit_slack
        for period in sorted(candidates, reverse=True):  # the largest consistent period wins
            if period < 4 * slack:
                break
            ks = _on_grid(sweeps, reference, period, fit_slack)
            if len(ks) < self.agreement * len(sweeps):
                continue
            distinct = {k for k, _, _ in ks}
            if len(distinct) < self.min_sweeps or max(distinct) - min(distinct) < 2:
                continue
            # Refine on every sweep kept, older ones included: the longer the span, the finer.
            return _line(_on_grid(placed, reference, period, fit_slack), period, held=self.period is not None)
        return None


def _on_grid(
    sweeps: list[tuple[float, float]], reference: tuple[float, float], period: float, slack: float
) -> list[tuple[int, float, float]]:
    """The sweeps within `slack` (plus both half-widths) of the grid through `reference`:
    (k, centre, half-width)."""
    origin, origin_half = reference
    ks = []
    for centre, half in sweeps:
        k = round((centre - origin) / period)
        if abs(centre - origin - k * period) <= half + origin_half + slack:
            ks.append((k, centre, half))
    return ks


# Wider brackets are not grouped into sweeps: two of them could overlap though each
# holds a different sweep (for any period above twice this).
_WIDEST_BRACKET = 7.5
# The prior's phase from brackets of any width below its period: this share of them must
# share the phase, with this much evidence (nats); the last _WIDE_KEPT wide ones are kept.
_SHARED = 0.9
_EVIDENCE = 5.0
_WIDE_KEPT = 64
# The max_period at which the constants in seconds here hold as they are; below it they shrink.
_SCALE_PERIOD = 60.0
# Narrow brackets windows must explain, each in another sweep, none missed, to verify an
# estimate on probation.
_CONFIRMATIONS = 3
# How much a held period weighs against a refit's slope (in the fit's weight x sweeps^2).
_HELD_WEIGHT = 100.0
# After the prior fails on probation n times, it is tried again after _HOLD << n narrow brackets.
_HOLD = 4
_MAX_REFUTED = 8
# The most a bracket just outside the predicted window moves it, in seconds; farther is a miss.
_MAX_NUDGE = 1.0
# Brackets this narrow (seconds, and at most a third of the period) are judged: of the
# last _JUDGED, _MISSES_ALLOWED misses drop the estimate.
_JUDGED_WIDTH = 3.0
_JUDGED = 10
_MISSES_ALLOWED = 3
# Only sweeps placed this narrowly (seconds, after tolerance) are fitted.
_WIDEST_SWEEP = 4.0
# A sweep seen by one bracket only counts if the bracket is this narrow (plus tolerance).
_SINGLE_WIDTH = 1.0
# Slack in seconds between a sweep and the grid that explains it.
_FIT_SLACK = 0.25
_RESOLUTION = 0.05
_SWEEPS_USED = 16
# The most brackets an estimator may keep.
_MAX_WINDOW = 100_000
# Gaps between sweeps longer than this many max_periods propose no candidate period.
_LONGEST_GAP = 2
_GAPS_USED = 8
_REFIT_EVERY = 5


def _numbers(**values: object) -> None:
    """Raise ValueError unless every value is a real number (an int or a float, not a bool)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, not {type(value).__name__}")


def _count(value: object, minimum: int) -> bool:
    """Whether `value` is a whole number (not a bool) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _end(bracket: tuple[float, float]) -> float:
    return bracket[1]


def _half(sweep: tuple[float, float]) -> float:
    return sweep[1]


def _line(ks: list[tuple[int, float, float]], period: float, *, held: bool) -> tuple[float, float]:
    """Weighted least squares of centre = phase + k * period over the sweeps `period` placed
    on its grid (narrow ones weigh more): (period, the latest sweep's centre).

    With `held` (a refit of the period already scheduled by), the slope is pulled
    towards `period` as if `_HELD_WEIGHT` worth of sweeps had measured it: a few
    new sweeps nudge a period, many move it.
    """
    weights = [1.0 / (half + 0.1) ** 2 for _, _, half in ks]
    total = sum(weights)
    mean_k = sum(w * k for w, (k, _, _) in zip(weights, ks, strict=True)) / total
    mean_c = sum(w * c for w, (_, c, _) in zip(weights, ks, strict=True)) / total
    spread = sum(w * (k - mean_k) ** 2 for w, (k, _, _) in zip(weights, ks, strict=True))
    if spread > 0:
        slope = (
            sum(w * (k - mean_k) * (c - mean_c) for w, (k, c, _) in zip(weights, ks, strict=True)) / spread
        )
        if abs(slope - period) <= period / (4 * (max(k for k, _, _ in ks) - min(k for k, _, _ in ks))):
            # the same grid, every sweep within a quarter period of it
            period = (slope * spread + period * _HELD_WEIGHT) / (spread + _HELD_WEIGHT) if held else slope
    last_k = max(k for k, _, _ in ks)
    return period, mean_c + (last_k - mean_k) * period


class CadencePolicy(PollPolicy):
    """Poll just after the gateway's predicted sweep; capped backoff until it is known.

    **Learning.** While the shared `SweepEstimator` is not confident, delays
    are those of `PollPolicy`; when at least `min_probe_tasks` waits share
    the policy, each is spread by `learning_jitter` (30%), so that the polls
    of tasks created together drift apart and their brackets, overlapping,
    place a sweep within a second or two. Such waits also probe: now and
    then a poll is sent `probe_gap` seconds before the regular one, so that a
    change between the two is placed within about a second. Probes are at
    most `probe_share` (10%) of the polls made while learning, and the share
    halves after every `PROBE_HORIZON` polls that taught nothing (a gateway
    without sweeps). Once a sweep is placed, the estimator takes its `prior`
    period (the documented 15 s) through it, on probation.

    **On probation** (an estimate from the prior, from a first fit, or
    remembered by an earlier process): polls keep the backoff's pace, each
    moved to just after a predicted window that ends no later than the
    longest delay the backoff's jitter can draw, so a wrong estimate costs
    about what the backoff costs; and `probe_rate` (15%) of the waits probe
    before the window, where a change means the estimate is wrong.
    `_CONFIRMATIONS` (3) narrow brackets, in three sweeps, that windows
    explain verify it.

    **Verified**: each poll goes `guard` seconds after the end of the next
    predicted window (skipping the sweeps before half of an upstream
    queue-wait estimate), and `probe_rate` of the waits probe with two polls
    `probe_gap` apart, from `probe_lead` seconds before the window to
    `probe_lead` after it, so that the windows follow a drifting sweep and a
    broken one is noticed (`SweepEstimator.record`, `_judge_early`).

    Probes are polls like any other: they pass the client's budget. All of
    a client's waits share one policy; `for_task` gives each wait its own
    view, which remembers the poll it owes after a probe.

    Args:
        estimator: The estimator to share; one is made if not given. Share one
            per gateway (a client does this for all its waits).
        guard: Seconds after a predicted window ends before polling.
        probe_rate: The share of polls that probe once an estimate is held.
        probe_lead: Seconds before (and, once verified, after) the window
            that probes reach.
        learning_jitter: The relative spread of each delay while learning.
        probe_share: The most extra polls while learning, as a share of the polls.
        probe_gap: Seconds between a probe and the poll after it; by default
            1 s, or half of `initial_interval` if that is shorter.
        min_probe_tasks: How many waits must share the policy before it
            spreads and probes while learning (a single wait polls exactly as
            `PollPolicy` does until an estimate is held).
        queue_trust: The share of the upstream's queue-wait estimate to skip.
        max_queue_skip: The longest a queue-wait estimate may push a poll out.
        Other arguments: as for `PollPolicy`, for the fallback.

    Raises:
        ValueError: An argument is not a number (a bool counts as none) or
            is out of range: a rate or share outside [0, 1], a probe_gap not
            > 0, a negative or infinite guard, probe_lead, queue_trust or
            max_queue_skip, a guard or probe_lead not below the estimator's
            min_period, min_probe_tasks not a whole number >= 1, or what
            `PollPolicy` refuses.
        TypeError: `estimator` is not a `SweepEstimator`.
    """

    __slots__ = (
        "_early",
        "_learning_polls",
        "_probes",
        "_share",
        "_waits",
        "estimator",
        "guard",
        "learning_jitter",
        "max_queue_skip",
        "min_probe_tasks",
        "probe_gap",
        "probe_lead",
        "probe_rate",
        "probe_share",
        "queue_trust",
    )

    PROBE_HORIZON = 1000
    """Polls while learning after which, if nothing was learned, `probe_share` halves."""

    def __init__(
        self,
        initial_interval: float = 2.0,
        max_interval: float = GATEWAY_REFRESH_SECONDS,
        *,
        estimator: SweepEstimator | None = None,
        guard: float = 0.2,
        probe_rate: float = 0.15,
        probe_lead: float = 2.0,
        learning_jitter: float = 0.3,
        probe_share: float = 0.1,
        probe_gap: float | None = None,
        min_probe_tasks: int = 3,
        queue_trust: float = 0.5,
        max_queue_skip: float = 120.0,
        multiplier: float = 1.5,
        jitter: float = 0.1,
        random: Random | None = None,
    ) -> None:
        _numbers(
            initial_interval=initial_interval,
            max_interval=max_interval,
            multiplier=multiplier,
            jitter=jitter,
            guard=guard,
            probe_rate=probe_rate,
            probe_lead=probe_lead,
            learning_jitter=learning_jitter,
            probe_share=probe_share,
            queue_trust=queue_trust,
            max_queue_skip=max_queue_skip,
        )
        if probe_gap is not None:
            _numbers(probe_gap=probe_gap)
        if estimator is not None and not isinstance(estimator, SweepEstimator):
            raise TypeError("estimator must be a SweepEstimator")
        super().__init__(initial_interval, max_interval, multiplier=multiplier, jitter=jitter, random=random)
        if not 0 <= probe_rate <= 1:
            raise ValueError("probe_rate must be between 0 and 1")
        if not 0 <= learning_jitter <= 1:
            raise ValueError("learning_jitter must be between 0 and 1")
        if not 0 <= probe_share <= 1:
            raise ValueError("probe_share must be between 0 and 1")
        if probe_gap is None:
            probe_gap = min(1.0, initial_interval / 2)
        if not (probe_gap > 0 and math.isfinite(probe_gap)):
            raise ValueError("probe_gap must be > 0")
        for name, value in (
            ("guard", guard),
            ("probe_lead", probe_lead),
            ("queue_trust", queue_trust),
            ("max_queue_skip", max_queue_skip),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be >= 0 and finite")
        if not _count(min_probe_tasks, 1):
            raise ValueError("min_probe_tasks must be a whole number >= 1")

        self.estimator = estimator if estimator is not None else SweepEstimator()
        if guard >= self.estimator.min_period or probe_lead >= self.estimator.min_period:
            raise ValueError("guard and probe_lead must be below the estimator's min_period")
        self.guard = guard
        self.probe_rate = probe_rate
        self.probe_lead = probe_lead
        self.learning_jitter = learning_jitter
        self.probe_share = probe_share
        self.probe_gap = probe_gap
        self.min_probe_tasks = min_probe_tasks
        self.queue_trust = queue_trust
        self.max_queue_skip = max_queue_skip
        self._waits: weakref.WeakSet[_TaskCadence] = weakref.WeakSet()
        self._learning_polls = 0
        self._probes = 0
        self._share = probe_share
        self._early: collections.deque[bool] = collections.deque(maxlen=_JUDGED)

    @property
    def extra_polls(self) -> int:
        """Probes sent while learning since the estimate was last confident."""
        return self._probes

    def for_task(self) -> TaskPolicy:
        """A wait's own view of this policy: it keeps whether the wait's next poll follows a probe."""
        tracker = _TaskCadence(self)
        self._waits.add(tracker)
        return tracker

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
        estimator = self.estimator
        if now is not None:
            estimator.update()
        skip = min(queue_wait * self.queue_trust, self.max_queue_skip) if queue_wait else 0.0
        if retry_after is not None or now is None or not estimator.confident:
            self._learning_polls += 1
            if self._learning_polls % self.PROBE_HORIZON == 0:
                self._share /= 2  # learning nothing: a gateway without sweeps costs less and less
            fallback = super().next_delay(polls, retry_after=retry_after)
            if (
                retry_after is None
                and self.jitter < self.learning_jitter
                and len(self._waits) >= self.min_probe_tasks
            ):
                # Spread the polls of tasks created together while learning.
                spread = 1.0 + self.learning_jitter * (2.0 * self.random() - 1.0)
                fallback = min(self.max_interval, fallback * spread)
            return max(fallback, skip)
        if estimator.verified and self._learning_polls:
            self._learning_polls = self._probes = 0  # learning succeeded: next time, probe afresh
            self._share = self.probe_share
        if estimator.verified:
            return max(0.05, estimator.next_poll_time(now + skip, self.guard) - now)
        # On probation the backoff's pace holds: each poll goes just after the latest
        # predicted window that ends before the longest delay the backoff's jitter can
        # draw (or a period after the skip) and not before half the backoff's delay (or
        # a period before that longest delay, if that is later); at the backoff's own time
        # if no window does. A wrong estimate (one remembered from an earlier process, say)
        # so costs about what the backoff costs until it is found out.
        period = estimator.period
        assert period is not None
        base = backoff_delay(
            max(0, polls - 1),
            initial=self.initial_interval,
            maximum=self.max_interval,
            multiplier=self.multiplier,
        )
        latest = skip + period if skip > base else min(base * (1 + self.jitter), self.max_interval)
        earliest = max(min(base / 2, latest - period), skip)
        first = estimator.next_poll_time(now + earliest, self.guard) - now
        if first > latest:
            return max(super().next_delay(polls), skip)
        return max(0.05, first + math.floor((latest - first) / period) * period)

    def _judge_early(self, changed: bool) -> None:
        """A probe sent well before a predicted window saw a change, or not.

        If the sweep is where the windows say, such a probe finds nothing new:
        the change comes in the window, after it (the poll after the last
        window saw what that sweep brought). On a gateway without sweeps, or
        with a wrong estimate, it finds changes as often as any poll does. So
        when `_MISSES_ALLOWED` of the last `_JUDGED` early probes saw one, the
        estimate is dropped.
        """
        judged = self._early
        judged.append(changed)
        if changed and sum(judged) >= _MISSES_ALLOWED and self.estimator.confident:
            self.estimator.forget()
            judged.clear()

    def _take_probe(self) -> bool:
        """Whether the probe budget allows one more probe now (and count it)."""
        if len(self._waits) < self.min_probe_tasks or self._probes >= self._share * self._learning_polls:
            return False
        self._probes += 1
        return True

    def _probe(self, now: float, delay: float) -> tuple[float, bool] | None:
        """A probe instead of the regular poll `delay` from `now`, if one is due: (when to
        send it, whether it goes well before the predicted window). The wait polls again
        `probe_gap` after it.

        Once confident, `probe_rate` of the waits probe somewhere from
        `probe_lead` before the predicted window to `probe_lead` after it, and
        again `probe_gap` later (then after the window, if that is still to
        come): a change between the two places the sweep within about a
        second, wherever it really is, so that the window follows a drifting
        sweep; a change before the first tells a wrong estimate (a miss).
        While learning, see the class docstring.
        """
        estimator = self.estimator
        if estimator.confident:
            probe_rate = self.probe_rate if estimator.verified else max(self.probe_rate, 0.15)
            if self.random() >= probe_rate:
                return None
            width = estimator.phase_end - estimator.phase_start
            end = now + delay - self.guard  # the window the regular poll follows
            # On probation, probe only before the window: a change seen there refutes
            # the estimate; after it, the regular poll keeps its place.
            reach = 2 * self.probe_lead + width if estimator.verified else self.probe_lead
            at = end - width - self.probe_lead + reach * self.random()
            if at < now + self.probe_gap / 2:
                return None
            return at, at < end - width - estimator.nudge
        if delay >= 2 * self.probe_gap and self._take_probe():
            return now + delay - self.probe_gap, False  # just before the regular poll
        return None

    def __repr__(self) -> str:
        learned = f"period={self.estimator.period:g}" if self.estimator.confident else "learning"
        return f"CadencePolicy({learned}, fallback={super().__repr__()})"


class _TaskCadence:
    """One wait's view of a `CadencePolicy`: the shared policy, plus the poll it owes after a probe."""

    __slots__ = ("__weakref__", "after_probe", "early", "policy")

    def __init__(self, policy: CadencePolicy) -> None:
        self.policy = policy
        self.after_probe: float | None = None
        """After a probe: NaN while its pair (`probe_gap` later) is due; infinity once the
        pair is sent (verified, the next poll then goes just after the window, not probing)."""
        self.early = False
        """Whether the poll in flight is a probe sent well before the predicted window."""

    def observe(self, since: float, received_at: float, changed: bool) -> None:
        if self.early:
            self.early = False
            self.policy._judge_early(changed)
        self.policy.observe(since, received_at, changed)

    def next_delay(
        self,
        polls: int,
        *,
        retry_after: float | None = None,
        now: float | None = None,
        queue_wait: float | None = None,
    ) -> float:
        policy = self.policy
        after, self.after_probe = self.after_probe, None
        if after is not None and retry_after is None and now is not None:
            if math.isnan(after):  # the probe was answered: its pair follows, then the window
                self.after_probe = math.inf
                return policy.probe_gap
            estimator = policy.estimator
            if math.isinf(after) and estimator.verified and queue_wait is None:
                return max(0.05, estimator.next_poll_time(now, policy.guard) - now)
            # On probation the policy's own rule places the next poll: the backoff's pace.
        delay = policy.next_delay(polls, retry_after=retry_after, now=now, queue_wait=queue_wait)
        if retry_after is not None or now is None or queue_wait is not None:
            return delay
        probe = policy._probe(now, delay)
        if probe is None:
            return delay
        at, self.early = probe
        self.after_probe = math.nan
        return at - now
