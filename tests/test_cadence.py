"""The cadence-aware policy: learning the sweep period and phase, and polling just after sweeps."""

from __future__ import annotations

import random
import time

import pytest

from sora_async import CadencePolicy, PollPolicy, SoraClient, SweepEstimator, TaskStatus
from sora_async.testing import FakeSoraServer


def feed(estimator: SweepEstimator, period: float, phase: float, count: int, seed: int = 0) -> None:
    """Intervals of 1-4 s, each containing a sweep at phase + k * period (with up to 0.3 s spread)."""
    draw = random.Random(seed)
    for k in range(count):
        sweep = phase + (k * 3 + draw.randint(0, 2)) * period + draw.uniform(0, 0.3)
        width = draw.uniform(1.0, 4.0)
        start = sweep - draw.uniform(0.05, width - 0.05)
        estimator.record(start, start + width)
    estimator.update()


@pytest.mark.parametrize("period", [10.0, 15.0, 30.0])
def test_learns_period_and_phase(period: float) -> None:
    """From intervals around real sweeps it learns the period (not a divisor or multiple) and phase."""
    estimator = SweepEstimator()
    feed(estimator, period, phase=3.2, count=60)
    assert estimator.confident
    assert estimator.period == period
    assert 2.5 <= estimator.phase_start % period <= 3.6


def test_random_changes_never_make_it_confident() -> None:
    """Changes at random times (no sweep) never produce an estimate."""
    estimator = SweepEstimator()
    draw = random.Random(4)
    for _ in range(600):
        start = draw.uniform(0, 5000)
        estimator.record(start, start + draw.uniform(1.0, 4.0))
        estimator.update()
    assert not estimator.confident


def test_a_broken_cadence_is_forgotten() -> None:
    """Two changes in a row where no sweep is predicted drop the estimate."""
    estimator = SweepEstimator()
    feed(estimator, 15.0, phase=3.0, count=60)
    assert estimator.confident
    estimator.record(2000 * 15 + 9.0, 2000 * 15 + 10.0)  # 6 s after a predicted sweep
    assert estimator.confident
    estimator.record(2001 * 15 + 9.0, 2001 * 15 + 10.0)
    assert not estimator.confident


def test_policy_falls_back_until_confident_then_polls_after_sweeps() -> None:
    """Before learning the policy gives PollPolicy's delays; after, delays end just past a sweep."""
    fallback = PollPolicy(random=lambda: 0.5)
    policy = CadencePolicy(random=lambda: 0.5, probe_rate=0.0)
    assert [policy.next_delay(n, now=100.0) for n in range(1, 6)] == [
        fallback.next_delay(n) for n in range(1, 6)
    ]
    feed(policy.estimator, 15.0, phase=3.0, count=60)
    now = 1000 * 15 + 7.0
    poll_at = now + policy.next_delay(3, now=now)
    assert poll_at > now
    assert 0 < (poll_at - 3.0) % 15 < 1.5  # just after a sweep
    assert policy.next_delay(3, retry_after=20.0, now=now) == 20.0  # the server still wins


def test_policy_probes_before_sweeps_sometimes() -> None:
    """With probe_rate 1, the next poll is one second before the predicted sweep."""
    policy = CadencePolicy(random=lambda: 0.0, probe_rate=1.0)
    feed(policy.estimator, 15.0, phase=3.0, count=60)
    now = 1000 * 15 + 5.0
    probe = now + policy.next_delay(3, now=now)
    start = policy.estimator.next_sweep_start(now)
    assert probe == pytest.approx(start - 1.0)


async def test_client_polls_cluster_after_sweeps_end_to_end() -> None:
    """Against a sweeping fake gateway the client learns the cadence, then polls just after sweeps."""
    period = 1.0  # a 15 s gateway, compressed 15 times; the policy is scaled to match
    estimator = SweepEstimator(
        min_period=0.3, max_period=1.6, step=0.05, tolerance=0.02, min_cycles=4, window=1000
    )
    policy = CadencePolicy(0.03, period, multiplier=1.1, estimator=estimator, guard=0.03, probe_rate=0.0)
    timeline = [("QUEUED", "20%"), ("IN_PROGRESS", "30%"), ("IN_PROGRESS", "60%"), ("SUCCESS", "100%")]
    async with (
        FakeSoraServer(advance="sweep", step_seconds=0.5, sweep_seconds=period, sweep_phase=0.1) as server,
        SoraClient("k", base_url=server.url, poll=policy) as client,
    ):
        learned_at = None
        for wave in range(8):
            ids = [server.add_task(timeline=timeline) for _ in range(25)]
            if learned_at is None and estimator.confident:
                learned_at = (len(server.arrivals), time.monotonic())
            results = await client.wait_many(ids, concurrency=25)
            assert all(getattr(t, "status", None) is TaskStatus.SUCCESS for t in results.values()), wave
        ended = time.monotonic()
        arrivals = list(server.arrivals)
    assert estimator.confident
    assert estimator.period == pytest.approx(period, abs=0.051)
    assert learned_at is not None
    after = arrivals[learned_at[0] :]
    # Once learned, nearly every poll lands in the first quarter of a sweep period.
    offsets = [((moment - 0.1) % period) / period for moment in after]
    assert sum(1 for offset in offsets if offset < 0.25) >= 0.8 * len(offsets)
    # About one poll per task per sweep, where a fixed poller with the same lag
    # (about 0.1 s) would send one every 0.2 s: more than twice as many.
    assert len(after) < 0.5 * 25 * (ended - learned_at[1]) / 0.2


def test_queue_wait_hint_is_read_only_while_waiting() -> None:
    """The upstream's queue-wait estimate is read for queued tasks; garbage or other states give None."""
    import msgspec

    from sora_async import Task
    from sora_async._models import queue_wait_hint

    def task(status: TaskStatus, payload: bytes) -> Task:
        return Task(task_id="t", status=status, raw_status=status.value, data=msgspec.Raw(payload))

    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": 90}')) == 90.0
    assert queue_wait_hint(task(TaskStatus.IN_PROGRESS, b'{"estimated_queue_wait_time": 90}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": null}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": "soon"}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b'{"estimated_queue_wait_time": -5}')) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b"[1, 2]")) is None
    assert queue_wait_hint(task(TaskStatus.QUEUED, b"null")) is None


def test_queue_wait_skips_sweeps() -> None:
    """A long expected queue wait pushes the next poll out by half of it, to just after a sweep."""
    policy = CadencePolicy(random=lambda: 0.5, probe_rate=0.0)
    assert policy.next_delay(1, now=0.0, queue_wait=100.0) == 50.0  # not yet confident: skip alone
    feed(policy.estimator, 15.0, phase=3.0, count=60)
    now = 1000 * 15 + 7.0
    plain = policy.next_delay(3, now=now)
    hinted = policy.next_delay(3, now=now, queue_wait=100.0)
    assert plain < 15.0
    assert 50.0 <= hinted < 50.0 + 15.0
    assert 0 < ((now + hinted) - 3.0) % 15 < 1.5  # still just after a sweep
    assert policy.next_delay(3, now=now, queue_wait=10_000.0) < 120.0 + 15.0  # capped
