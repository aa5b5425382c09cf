"""The cadence-aware policy on a virtual clock: learning the sweep, probation, probes, drift.

Every test here is pure: times are plain numbers, nothing sleeps. The
end-to-end checks against the fake server are in test_cadence_e2e.py, the
memory across processes in test_cadence_memory.py, and the figures for
whole workloads in benchmarks/polling_sim.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import msgspec
import pytest

from sora_async import CadencePolicy, PollPolicy, SweepEstimator, Task, TaskStatus
from sora_async._models import queue_wait_hint


def sweep_brackets(
    period: float, phase: float, sweeps: range, *, per_sweep: int = 4, widest: float = 5.0, seed: int = 0
) -> list[tuple[float, float]]:
    """Brackets around the sweeps phase + k * period (each task refreshed within 0.3 s of it),
    `per_sweep` of them per sweep, of random widths up to `widest`, in the order they end."""
    draw = random.Random(seed)
    brackets = []
    for k in sweeps:
        sweep = phase + k * period
        for _ in range(per_sweep):
            moment = sweep + draw.uniform(0, 0.3)
            width = draw.uniform(0.5, widest)
            start = moment - draw.uniform(0.01, width - 0.01)
            brackets.append((start, start + width))
    return sorted(brackets, key=lambda bracket: bracket[1])


def feed(estimator: SweepEstimator, brackets: list[tuple[float, float]]) -> None:
    for start, end in brackets:
        estimator.record(start, end)
        estimator.update()


def held(estimator: SweepEstimator) -> bool:
    """Whether the estimator holds an estimate (a call, so that type checkers do not narrow)."""
    return estimator.confident


def holds(estimator: SweepEstimator, sweep: float) -> bool:
    """Whether a predicted window (with its tolerance) holds the true sweep at `sweep`."""
    start = estimator.next_sweep_start(sweep - (estimator.phase_end - estimator.phase_start) - 1e-9)
    return start - estimator.tolerance <= sweep <= start + (estimator.phase_end - estimator.phase_start) + 0.3


# --- the estimator -------------------------------------------------------------


@pytest.mark.parametrize("period", [10.0, 15.0, 30.0])
def test_it_discovers_the_period_and_phase_from_overlapping_brackets(period: float) -> None:
    """Without a prior, brackets around real sweeps give the period (not a divisor or a
    multiple) and a window that holds the sweeps; narrow ones that agree verify it."""
    estimator = SweepEstimator(prior=None)
    feed(estimator, sweep_brackets(period, 3.2, range(12)))
    assert estimator.confident
    assert estimator.period is not None
    assert abs(estimator.period - period) < 0.05
    assert all(holds(estimator, 3.2 + k * period) for k in range(12, 20))
    feed(estimator, sweep_brackets(period, 3.2, range(12, 16), widest=1.5, seed=1))
    assert estimator.verified


@pytest.mark.parametrize("prior", [None, 15.0])
def test_changes_at_random_times_are_never_taken_for_a_verified_cadence(prior: float | None) -> None:
    """Brackets of changes at random times (a gateway without sweeps): a grid that fits a few
    of them by chance is held on probation only briefly, and seldom verified (the policy's
    early probes drop such an estimate; see test_probes_while_learning...)."""
    estimator = SweepEstimator(prior=prior)
    draw = random.Random(4)
    moment = 0.0
    held = verified = 0
    for _ in range(5000):
        moment += draw.uniform(0.5, 3.0)
        estimator.record(moment - draw.uniform(0.3, 5.0), moment)
        estimator.update()
        held += estimator.confident
        verified += estimator.verified
    assert held < 0.05 * 5000
    assert verified < 0.02 * 5000


def test_the_documented_period_is_tried_through_the_first_sweep_placed() -> None:
    """With the default prior (the gateway's documented 15 s), one sweep placed by the
    brackets of several tasks is enough to schedule by, on probation."""
    estimator = SweepEstimator()
    assert estimator.prior == 15.0
    feed(estimator, sweep_brackets(15.0, 4.0, range(1), per_sweep=6))
    assert estimator.confident
    assert not estimator.verified
    assert estimator.period == 15.0
    assert all(holds(estimator, 4.0 + k * 15.0) for k in range(1, 6))


def test_three_narrow_brackets_a_window_explains_verify_an_estimate() -> None:
    estimator = SweepEstimator()
    feed(estimator, sweep_brackets(15.0, 4.0, range(1), per_sweep=6))
    for k in (1, 2):
        estimator.record(4.0 + k * 15 - 0.5, 4.0 + k * 15 + 0.8)
        assert not estimator.verified
    estimator.record(4.0 + 3 * 15 - 0.5, 4.0 + 3 * 15 + 0.8)
    assert estimator.verified


def test_on_probation_one_miss_drops_the_estimate_and_the_prior_waits_before_its_next_try() -> None:
    """A change between two predicted windows refutes an estimate on probation; the prior is
    tried again only after more narrow brackets, twice as many after every refutation."""
    estimator = SweepEstimator()
    feed(estimator, sweep_brackets(15.0, 4.0, range(1), per_sweep=6))
    assert held(estimator)
    estimator.record(4.0 + 15 + 6.0, 4.0 + 15 + 7.0)  # 6 s after a predicted sweep
    assert not held(estimator)
    waited = 0  # narrow brackets of one sweep, which alone fit no period: only the prior can
    for start, end in sweep_brackets(15.0, 4.0, range(5, 6), per_sweep=30, widest=1.0, seed=2):
        estimator.record(start, end)
        estimator.update()
        if estimator.confident:
            break
        waited += 1
    assert waited >= 6  # _HOLD << 1 narrow brackets (the refuting one counts) before the next try
    assert estimator.confident
    assert estimator.period == 15.0


def test_a_verified_estimate_survives_one_miss_but_not_two_in_a_row() -> None:
    estimator = verified_estimator()
    base = 4.0 + 40 * 15.0
    estimator.record(base + 6.0, base + 7.0)
    assert estimator.confident
    estimator.record(base + 15 + 6.0, base + 15 + 7.0)
    assert not estimator.confident


def test_three_narrow_misses_among_the_last_ten_drop_a_verified_estimate() -> None:
    estimator = verified_estimator()
    base = 4.0 + 40 * 15.0
    for k in range(3):
        estimator.record(base + k * 30 + 6.0, base + k * 30 + 7.0)  # a miss
        assert estimator.confident == (k < 2)
        estimator.record(base + k * 30 + 15 - 0.3, base + k * 30 + 15 + 0.6)  # explained


def verified_estimator() -> SweepEstimator:
    estimator = SweepEstimator()
    feed(estimator, sweep_brackets(15.0, 4.0, range(40), per_sweep=2, widest=1.5, seed=3))
    assert estimator.verified
    return estimator


def test_a_drifting_sweep_is_followed() -> None:
    """The gateway's period is 15.02 s (a sweep that takes a little longer than its sleep):
    over 300 sweeps the phase moves by 6 s, and the windows move with it."""
    estimator = SweepEstimator()
    period = 15.02
    draw = random.Random(5)
    for k in range(300):
        sweep = 4.0 + k * period
        for _ in range(2):
            moment = sweep + draw.uniform(0, 0.3)
            start = moment - draw.uniform(0.05, 1.2)
            estimator.record(start, start + 1.3)
            estimator.update()
        if k >= 5:
            assert estimator.confident, k
    assert estimator.verified
    assert holds(estimator, 4.0 + 300 * period)
    assert estimator.period is not None
    assert abs(estimator.period - period) < 0.01


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (math.nan, 0.0, 1.0),
        (15.0, math.inf, 1.0),
        (15.0, 0.0, math.nan),
        (2.0, 0.0, 1.0),  # below min_period
        (600.0, 0.0, 1.0),  # above max_period
        (15.0, 1.0, 0.0),  # a window that ends before it starts
        (15.0, 0.0, 8.0),  # a window wider than half the period
    ],
)
def test_adopt_ignores_a_cadence_it_cannot_use(period: float, start: float, end: float) -> None:
    estimator = SweepEstimator()
    estimator.adopt(period, start, end, now=1000.0)
    assert not estimator.confident


def test_an_adopted_cadence_is_on_probation_near_now() -> None:
    """An adopted cadence is moved to the current cycle, held on probation, and dropped at
    the first change it cannot explain."""
    estimator = SweepEstimator()
    estimator.adopt(15.0, 3.0, 4.0, now=90_000.0)
    assert estimator.confident
    assert not estimator.verified
    assert 90_000.0 - 15 <= estimator.phase_start <= 90_000.0
    assert estimator.next_sweep_start(90_000.0) % 15.0 == pytest.approx(3.0)
    estimator.record(90_000.0 + 9.0, 90_000.0 + 10.0)  # 6 s after a predicted window
    assert not estimator.confident


def test_learned_gives_only_a_verified_estimate_when_asked() -> None:
    estimator = SweepEstimator()
    estimator.adopt(15.0, 3.0, 4.0, now=100.0)
    assert estimator.learned() is not None
    assert estimator.learned(verified=True) is None
    assert verified_estimator().learned(verified=True) is not None


def test_a_bracket_wider_than_the_longest_period_is_ignored() -> None:
    estimator = verified_estimator()
    estimator.record(10_000.0, 10_000.0 + 61.0)  # holds no information
    estimator.record(11_000.0, 11_000.0 + 61.0)
    assert estimator.confident


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_period": 0.0},
        {"min_period": 10.0, "max_period": 5.0},
        {"max_period": math.inf},
        {"tolerance": -1.0},
        {"tolerance": 2.0},  # above a quarter of min_period
        {"min_sweeps": 1},
        {"agreement": 0.0},
        {"window": 1},
        {"min_sweeps": 2.5},
        {"window": 200.0},
        {"prior": 0.0},
        {"prior": math.nan},
        {"prior": 100.0},  # above max_period
        {"tolerance": True},
        {"agreement": "0.8"},
        {"window": 10**30},
    ],
)
def test_estimator_arguments_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"need|tolerance|prior|number"):
        SweepEstimator(**kwargs)  # type: ignore[arg-type]


# --- the policy ------------------------------------------------------------------


def test_a_single_wait_learning_polls_exactly_like_the_backoff() -> None:
    """Until an estimate is held, one wait alone gets PollPolicy's delays: no spread, no probes."""
    draws = [random.Random(7), random.Random(7)]
    backoff = PollPolicy(random=draws[0].random)
    policy = CadencePolicy(random=draws[1].random)
    wait = policy.for_task()
    for polls in range(1, 30):
        now = polls * 10.0
        assert wait.next_delay(polls, now=now) == backoff.next_delay(polls)
    assert policy.extra_polls == 0


def run_world(
    policy: PollPolicy,
    changes_of: Callable[[int], list[float]],
    *,
    tasks: int,
    round_trip: float = 0.15,
) -> tuple[int, list[float]]:
    """Drive `tasks` waits of `policy` on a virtual clock until each has seen all its changes.

    `changes_of(i)` gives the times at which task i's visible state changes (its last is
    the final state). Returns the polls sent and the detection lag of every change.
    """
    import heapq

    waits = [policy.for_task() for _ in range(tasks)]
    timelines = [changes_of(index) for index in range(tasks)]
    seen = [0] * tasks
    polls = [0] * tasks
    last_sent = [0.0] * tasks
    heap = [(timelines[index][0] - 0.01, index) for index in range(tasks)]
    heapq.heapify(heap)
    lags: list[float] = []
    sent_total = 0
    while heap:
        sent, index = heapq.heappop(heap)
        sent_total += 1
        polls[index] += 1
        received = sent + round_trip
        shown = sum(1 for moment in timelines[index] if moment <= sent + round_trip / 2)
        changed = shown > seen[index]
        lags += [received - moment for moment in timelines[index][seen[index] : shown]]
        if polls[index] > 1:
            waits[index].observe(last_sent[index], received, changed)
        seen[index] = max(seen[index], shown)
        last_sent[index] = sent
        if seen[index] < len(timelines[index]):
            heapq.heappush(heap, (received + waits[index].next_delay(polls[index], now=received), index))
    return sent_total, lags


def swept_changes(period: float, phase: float, seed: int) -> Callable[[int], list[float]]:
    """Tasks created together at 0.0, shown at sweeps (each refreshed within 0.3 s of its
    start): the first sweep shows the upstream's queued state, then the upstream changes
    4 more times over 0-300 s."""
    draw = random.Random(seed)

    def changes(index: int) -> list[float]:
        upstream = [0.0, *sorted(draw.uniform(0, 300) for _ in range(4))]
        offset = draw.uniform(0, 0.3)
        return sorted({phase + math.ceil((moment - phase) / period) * period + offset for moment in upstream})

    return changes


def test_a_batch_created_together_learns_within_a_few_sweeps() -> None:
    """40 tasks created at once against a 15 s sweep: the policy holds the right estimate
    within three sweeps, verifies it, and detects changes about a second after they show."""
    policy = CadencePolicy(random=random.Random(8).random)
    sent, lags = run_world(policy, swept_changes(15.0, 6.0, seed=9), tasks=40)
    estimator = policy.estimator
    assert estimator.verified
    assert estimator.period is not None
    assert abs(estimator.period - 15.0) < 0.05
    assert sum(lags) / len(lags) < 2.0
    backoff_sent, backoff_lags = run_world(
        PollPolicy(random=random.Random(8).random), swept_changes(15.0, 6.0, seed=9), tasks=40
    )
    assert sum(backoff_lags) / len(backoff_lags) > 4.0
    assert sent <= 1.3 * backoff_sent


def test_probes_while_learning_stay_within_their_share_and_wane_without_sweeps() -> None:
    """Against changes at random times, the extra polls of learning are at most 10% of the
    polls, and requests x mean lag stays within 10% of the backoff's."""
    draw = random.Random(10)

    def random_changes(index: int) -> list[float]:
        start = index * 2.0
        return sorted(start + draw.uniform(0, 300) for _ in range(6)) if index else [0.0, 100.0]

    policy = CadencePolicy(random=random.Random(11).random)
    sent, lags = run_world(policy, random_changes, tasks=300)
    assert policy.extra_polls <= 0.1 * sent
    draw.seed(10)
    backoff_sent, backoff_lags = run_world(
        PollPolicy(random=random.Random(11).random), random_changes, tasks=300
    )
    assert sent <= 1.25 * backoff_sent
    product = sent * sum(lags) / len(lags)
    assert product <= 1.1 * backoff_sent * sum(backoff_lags) / len(backoff_lags)


def test_while_learning_many_waits_never_poll_later_than_max_interval() -> None:
    """The learning spread makes delays shorter or longer, but never past `max_interval`."""
    policy = CadencePolicy(random=random.Random(14).random)
    waits = [policy.for_task() for _ in range(10)]
    delays = [wait.next_delay(polls, now=polls * 20.0) for wait in waits for polls in range(1, 40)]
    assert max(delays) <= 15.0
    assert min(delays[20:]) < 12.0  # spread: not all at the cap


def test_verified_polls_go_just_after_the_next_window() -> None:
    policy = CadencePolicy(random=lambda: 0.5, probe_rate=0.0)
    policy.estimator = verified_estimator()
    wait = policy.for_task()
    estimator = policy.estimator
    for now in (1000.0, 1003.7, 1011.2):
        at = now + wait.next_delay(5, now=now)
        end = estimator.next_poll_time(now, 0.0)
        assert at == pytest.approx(end + policy.guard)
        assert at - now <= estimator.period + policy.guard  # type: ignore[operator]


def test_on_probation_a_poll_never_comes_later_than_the_backoffs_longest_delay() -> None:
    """A remembered cadence that is wrong costs about what the backoff costs: each delay is
    at most the longest the backoff's jitter can draw, and lands just after a predicted window
    or at the backoff's own time."""
    longest = PollPolicy(random=lambda: 1.0)
    policy = CadencePolicy(random=lambda: 0.9, probe_rate=0.0)
    policy.estimator.adopt(15.0, 3.0, 4.0, now=0.0)
    wait = policy.for_task()
    backoff = PollPolicy(random=lambda: 0.9)
    snapped = 0
    for polls in range(1, 40):
        now = polls * 7.3
        delay = wait.next_delay(polls, now=now)
        assert delay <= longest.next_delay(polls) + 1e-9
        after_window = (now + delay - 4.0 - policy.guard) % 15.0
        snapped += after_window < 1e-6 or after_window > 15.0 - 1e-6
        assert snapped or delay == backoff.next_delay(polls)
    assert snapped >= 30  # at the cap, every poll lands just after a window


def test_a_probe_is_followed_by_a_poll_probe_gap_later() -> None:
    """With probe_rate 1 a verified policy's wait probes around the window, then polls
    `probe_gap` after the probe."""
    policy = CadencePolicy(random=random.Random(13).random, probe_rate=1.0)
    policy.estimator = verified_estimator()
    wait = policy.for_task()
    now = 2000.0
    probe = wait.next_delay(5, now=now)
    window_end = policy.estimator.next_poll_time(now, 0.0)
    window_start = window_end - (policy.estimator.phase_end - policy.estimator.phase_start)
    assert window_start - policy.probe_lead <= now + probe <= window_end + policy.probe_lead
    after = now + probe + 0.15
    assert wait.next_delay(6, now=after) == policy.probe_gap


def test_queue_wait_skips_sweeps_once_verified() -> None:
    """A long expected queue wait pushes the next poll out by half of it, to just after a window."""
    policy = CadencePolicy(random=lambda: 0.5, probe_rate=0.0)
    assert policy.next_delay(1, now=0.0, queue_wait=100.0) == 50.0  # learning: the skip alone
    policy.estimator = verified_estimator()
    now = 1000 * 15 + 7.0
    hinted = policy.next_delay(3, now=now, queue_wait=100.0)
    assert 50.0 <= hinted < 50.0 + 15.0
    end = policy.estimator.next_poll_time(now + 50.0, 0.0)
    assert now + hinted == pytest.approx(end + policy.guard)
    assert policy.next_delay(3, now=now, queue_wait=10_000.0) < 120.0 + 15.0 + 1.0  # capped


def test_a_retry_after_wins_over_the_cadence() -> None:
    policy = CadencePolicy(random=lambda: 0.5)
    policy.estimator = verified_estimator()
    assert policy.for_task().next_delay(3, now=5000.0, retry_after=40.0) >= 40.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probe_rate": 1.5},
        {"learning_jitter": -0.1},
        {"probe_share": 2.0},
        {"probe_gap": 0.0},
        {"probe_gap": math.nan},
        {"guard": -0.1},
        {"guard": math.inf},
        {"probe_lead": math.nan},
        {"queue_trust": -1.0},
        {"max_queue_skip": math.nan},
        {"min_probe_tasks": 0},
        {"min_probe_tasks": 2.5},
        {"min_probe_tasks": True},
        {"guard": True},
        {"probe_rate": "0.1"},
        {"probe_lead": None},
        {"guard": 1e30},  # finite, but past the estimator's min_period: a poll storm once verified
        {"probe_lead": 1e6},
    ],
)
def test_policy_arguments_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|below"):
        CadencePolicy(**kwargs)  # type: ignore[arg-type]


def test_an_estimator_that_is_not_one_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="SweepEstimator"):
        CadencePolicy(estimator="15")  # type: ignore[arg-type]


def test_the_default_probe_gap_scales_with_a_short_initial_interval() -> None:
    assert CadencePolicy().probe_gap == 1.0
    assert CadencePolicy(initial_interval=0.1, max_interval=1.0).probe_gap == pytest.approx(0.05)


# --- the upstream's queue estimate -------------------------------------------------


def test_queue_wait_hint_is_read_only_while_waiting() -> None:
    """The upstream's queue-wait estimate is read for queued tasks; garbage or other states give None."""

    def task(status: TaskStatus, payload: bytes) -> Task:
        return Task(task_id="t", status=status, raw_status=status.value, data=msgspec.Raw(payload))

    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": 90}')) == 90.0
    assert queue_wait_hint(task(TaskStatus.IN_PROGRESS, b'{"estimated_queue_wait_time": 90}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": null}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": "soon"}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": -5}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b"[1, 2]")) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b"null")) is None
