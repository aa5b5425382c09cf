"""The learned cadence, carried from one client (one process) to the next, through the public client.

A client's default `CadencePolicy` loads what an earlier client remembered for its API root
before its first poll (from its journal, else from `cadence.json` in the state folder,
which the conftest points at a temporary folder for every test), adopts it on probation,
and saves what it verified. A client closed and another opened on the same journal or state
folder stand for two processes.

The fake gateway sweeps every `PERIOD` = 1.2 s, standing for 15 s, and the policy's times are
scaled to match (a stored cadence must have a period of at least 1 s, `MIN_PERIOD`, so the
clock is compressed a little less than in test_cadence_e2e.py). Every time is on the
server's clock, `time.monotonic()`, which is also the client's loop clock; stored cadences
are in Unix time.
"""

from __future__ import annotations

import asyncio
import math
import os
import pathlib
import random
import time
from collections.abc import Callable

import pytest

from sora_async import CadencePolicy, PollPolicy, SoraClient, SQLiteJournal, SweepEstimator, TaskStatus
from sora_async._cadence_memory import MAX_AGE
from sora_async._cadence_store import CadenceFile, StoredCadence, default_cadence_file
from sora_async.testing import FakeSoraServer

from .conftest import eventually

PERIOD = 1.2
"""The fake gateway's sweep period, standing for 15 s."""
SCALE = PERIOD / 15
PHASE = 0.37
"""Sweeps happen at PHASE + k * PERIOD on the server's clock."""
TOLERANCE = 0.5 * SCALE
DONE = [("SUCCESS", "100%")]
"""A task already finished: waiting for it is one poll."""
STEPS = [
    ("QUEUED", "0%"),
    ("IN_PROGRESS", "10%"),
    ("IN_PROGRESS", "20%"),
    ("IN_PROGRESS", "30%"),
    ("IN_PROGRESS", "40%"),
    ("IN_PROGRESS", "50%"),
    ("IN_PROGRESS", "60%"),
    ("IN_PROGRESS", "70%"),
    ("IN_PROGRESS", "80%"),
    ("IN_PROGRESS", "90%"),
    ("SUCCESS", "100%"),
]
"""A long timeline: with a state of 1.5 to 2.5 periods, a task changes for 15 sweeps or more."""


def short(changes: int) -> list[tuple[str, str]]:
    """A timeline of `changes` changes: the first states of STEPS, then SUCCESS."""
    return [*STEPS[:changes], STEPS[-1]]


def scaled_policy(random: Callable[[], float] | None = None) -> CadencePolicy:
    """The default `CadencePolicy` with every time scaled to the compressed sweep."""
    return CadencePolicy(
        initial_interval=2 * SCALE,
        max_interval=PERIOD,
        guard=0.2 * SCALE,
        probe_gap=1 * SCALE,
        probe_lead=2 * SCALE,
        estimator=SweepEstimator(
            min_period=5 * SCALE, max_period=60 * SCALE, tolerance=TOLERANCE, prior=PERIOD
        ),
        random=random,
    )


def scaled_backoff() -> PollPolicy:
    """The backoff default, `PollPolicy()`, with every time scaled to the compressed sweep."""
    return PollPolicy(initial_interval=2 * SCALE, max_interval=PERIOD)


def verified_policy() -> CadencePolicy:
    """A scaled policy whose estimator already holds the server's true cadence, verified (as after
    a run): what a client saves, if it saves anything."""
    policy = scaled_policy()
    estimator = policy.estimator
    now = time.monotonic()
    last = PHASE + math.floor((now - PHASE) / PERIOD) * PERIOD  # the latest sweep
    estimator.adopt(PERIOD, last - TOLERANCE, last + TOLERANCE, now=now)
    for k in (3, 2, 1):  # three narrow brackets around earlier sweeps verify it
        estimator.record(last - k * PERIOD - 0.02, last - k * PERIOD + 0.02)
    assert estimator.verified
    return policy


def unix_offset() -> float:
    """Unix time minus the server's clock."""
    return time.time() - time.monotonic()


def stored(*, age: float = 600.0, off_by: float = 0.0) -> StoredCadence:
    """The server's cadence as an earlier client would have stored it, verified `age` seconds
    ago, its sweeps moved by `off_by` periods."""
    wall = time.time()
    return StoredCadence(
        period=PERIOD,
        phase=PHASE + off_by * PERIOD - TOLERANCE + unix_offset(),
        spread=2 * TOLERANCE,
        learned_at=wall - age - 100.0,
        verified_at=wall - age,
    )


def phase_error(centre: float) -> float:
    """How far (in periods, at most 0.5) `centre` (server clock) is from the nearest sweep."""
    offset = ((centre - PHASE) % PERIOD) / PERIOD
    return min(offset, 1.0 - offset)


def estimator_error(estimator: SweepEstimator) -> float:
    """How far (in periods) the centre of the estimator's windows is from the sweeps."""
    return phase_error((estimator.phase_start + estimator.phase_end) / 2)


def stored_error(cadence: StoredCadence) -> float:
    """How far (in periods) the centre of a stored cadence's window is from the server's sweeps."""
    return phase_error(cadence.phase + cadence.spread / 2 - unix_offset())


def cadence_file() -> pathlib.Path:
    path = default_cadence_file()
    assert path is not None
    assert path.parent == pathlib.Path(os.environ["SORA_ASYNC_STATE_DIR"])  # the conftest's folder
    return path


async def journal_cadence(path: pathlib.Path, base_url: str) -> StoredCadence | None:
    """What another process reads from the journal at `path`."""
    journal = SQLiteJournal(path)
    try:
        return await journal.load_cadence(base_url)
    finally:
        await journal.aclose()


async def save_in_journal(path: pathlib.Path, base_url: str, cadence: StoredCadence) -> None:
    journal = SQLiteJournal(path)
    try:
        await journal.save_cadence(base_url, cadence)
    finally:
        await journal.aclose()


class SpyJournal(SQLiteJournal):
    """A journal counting cadence loads and saves; a load waits for `hold`, when given."""

    def __init__(self, path: pathlib.Path, *, hold: asyncio.Event | None = None) -> None:
        super().__init__(path)
        self.loads = 0
        self.saves = 0
        self.hold = hold

    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        self.loads += 1
        if self.hold is not None:
            await self.hold.wait()
        return await super().load_cadence(base_url)

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:
        self.saves += 1
        await super().save_cadence(base_url, cadence)


class FileSpy:
    """Counts the loads and saves of every `CadenceFile` (the store of a client without a journal)."""

    def __init__(self) -> None:
        self.loads = 0
        self.saves = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        load, save = CadenceFile.load_cadence, CadenceFile.save_cadence

        async def counted_load(store: CadenceFile, base_url: str) -> StoredCadence | None:
            self.loads += 1
            return await load(store, base_url)

        async def counted_save(store: CadenceFile, base_url: str, cadence: StoredCadence) -> None:
            self.saves += 1
            await save(store, base_url, cadence)

        monkeypatch.setattr(CadenceFile, "load_cadence", counted_load)
        monkeypatch.setattr(CadenceFile, "save_cadence", counted_save)


async def until_verified(client: SoraClient, server: FakeSoraServer, policy: CadencePolicy) -> float:
    """Wait for a batch of 30 long tasks until the policy is verified; return when, in Unix time."""
    draw = random.Random(5)
    ids = []
    for _ in range(30):
        ids.append(server.add_task(timeline=STEPS))
        server.tasks[ids[-1]].step_seconds = draw.uniform(1.5, 2.5) * PERIOD
    waiting = asyncio.create_task(client.wait_many(ids, concurrency=30, timeout=60.0))
    try:
        await eventually(lambda: policy.estimator.verified or waiting.done(), timeout=45.0)
        assert policy.estimator.verified, policy.estimator.learned()
        return time.time()
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


def told(policy: CadencePolicy) -> CadencePolicy:
    """`policy`, holding the server's true cadence on probation, as if it had just placed it: its
    own polls still have to verify it. (Learning from nothing is test_cadence_e2e.py's subject.)"""
    now = time.monotonic()
    last = PHASE + math.floor((now - PHASE) / PERIOD) * PERIOD
    policy.estimator.adopt(PERIOD, last - TOLERANCE, last + TOLERANCE, now=now)
    assert policy.estimator.confident
    assert not policy.estimator.verified
    return policy


async def test_a_journal_remembers_the_cadence_for_the_next_client(tmp_path: pathlib.Path) -> None:
    """A client whose polls verified the sweep saves it in its journal, as soon as it is verified
    and when it closes; the next client on that journal has nothing before its first poll, and
    after it holds that cadence, on probation."""
    path = tmp_path / "j.sqlite3"
    async with FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server:
        policy = told(scaled_policy())
        async with SoraClient("k", base_url=server.url, journal=path, poll=policy) as client:
            base_url = client.base_url
            verified_at = await until_verified(client, server, policy)
            # Saved at the first answer after it is verified, before the client closes: another
            # process sees it.
            await client.get_task(server.add_task(timeline=DONE))
            for _ in range(200):
                if await journal_cadence(path, base_url) is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no cadence in the journal while the client is open")
        closed_at = time.time()

        saved = await journal_cadence(path, base_url)
        assert saved is not None
        assert saved.period == pytest.approx(PERIOD, rel=0.03)
        assert verified_at - 1.0 <= saved.verified_at <= closed_at + 1.0
        assert saved.learned_at <= saved.verified_at
        assert stored_error(saved) <= 0.1, saved
        assert not cadence_file().exists()  # with a journal, the state folder is not used

        second = scaled_policy()
        async with SoraClient("k", base_url=server.url, journal=path, poll=second) as client:
            assert second.estimator.learned() is None  # nothing before the first poll
            done = await client.wait_until_done(server.add_task(timeline=DONE))
            assert done.status is TaskStatus.SUCCESS
            assert second.estimator.confident
            assert not second.estimator.verified  # adopted, on probation
            assert second.estimator.period == pytest.approx(saved.period)
            assert estimator_error(second.estimator) <= 0.1


async def test_without_a_journal_the_state_folder_remembers() -> None:
    """Without a journal the cadence lives in cadence.json of the state folder: one stored there
    is adopted at the first poll, and once this client's polls verify it, it is saved again."""
    before = stored(age=600.0)
    async with FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server:
        policy = scaled_policy()
        async with SoraClient("k", base_url=server.url, poll=policy) as client:
            await CadenceFile(cadence_file()).save_cadence(client.base_url, before)
            await client.wait_until_done(server.add_task(timeline=DONE))
            assert policy.estimator.confident
            assert not policy.estimator.verified
            assert estimator_error(policy.estimator) <= 0.05
            verified_at = await until_verified(client, server, policy)
        closed_at = time.time()
        after = await CadenceFile(cadence_file()).load_cadence(client.base_url)
    assert after is not None
    assert after.period == pytest.approx(PERIOD, rel=0.03)
    assert verified_at - 1.0 <= after.verified_at <= closed_at + 1.0
    assert after.learned_at == pytest.approx(before.learned_at)  # the same cadence, verified again
    assert stored_error(after) <= 0.1


async def test_a_verified_cadence_is_saved_once_then_on_close(tmp_path: pathlib.Path) -> None:
    """A verified cadence is saved after the next answer, not again at every answer (SAVE_EVERY is
    5 minutes), and once more when the client closes."""
    journal = SpyJournal(tmp_path / "j.sqlite3")
    try:
        async with (
            FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server,
            SoraClient("k", base_url=server.url, journal=journal, poll=verified_policy()) as client,
        ):
            await client.wait_many([server.add_task(timeline=DONE) for _ in range(10)])
            for _ in range(5):
                await client.get_task(server.add_task(timeline=DONE))
            await eventually(lambda: journal.saves >= 1)
            await client.wait_many([server.add_task(timeline=DONE) for _ in range(10)])
            assert journal.saves == 1
        assert journal.saves == 2
        saved = await journal.load_cadence(client.base_url)
        assert saved is not None
        assert stored_error(saved) <= 0.05
    finally:
        await journal.aclose()


@pytest.mark.parametrize("with_journal", [False, True], ids=["file", "journal"])
@pytest.mark.parametrize("remember", [True, False], ids=["remember", "remember_cadence=False"])
async def test_remember_cadence_false_writes_nothing(
    tmp_path: pathlib.Path, with_journal: bool, remember: bool
) -> None:
    """A client that verified a cadence saves it (remember) or writes nothing at all (no
    cadence.json, no journal row, no save called) with remember_cadence=False."""
    journal = SpyJournal(tmp_path / "j.sqlite3") if with_journal else None
    policy = verified_policy()
    async with (
        FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server,
        SoraClient(
            "k", base_url=server.url, journal=journal, poll=policy, remember_cadence=remember
        ) as client,
    ):
        await client.wait_until_done(server.add_task(timeline=DONE))
        await client.get_task(server.add_task(timeline=DONE))
        base_url = client.base_url
    if journal is not None:
        await journal.aclose()
        assert (journal.loads, journal.saves > 0) == ((1, True) if remember else (0, False))
        assert (await journal_cadence(journal.path, base_url) is not None) is remember
        assert not cadence_file().exists()
    else:
        assert cadence_file().exists() is remember
        assert not (tmp_path / "j.sqlite3").exists()


@pytest.mark.parametrize("with_journal", [False, True], ids=["file", "journal"])
async def test_remember_cadence_false_reads_nothing(tmp_path: pathlib.Path, with_journal: bool) -> None:
    """With remember_cadence=False a valid stored cadence, in the journal or the state folder, is
    not adopted (and the control: without it, it is)."""
    path = tmp_path / "j.sqlite3"
    async with FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server:
        for remember in (False, True):
            policy = scaled_policy()
            journal = path if with_journal else None
            async with SoraClient(
                "k", base_url=server.url, journal=journal, poll=policy, remember_cadence=remember
            ) as client:
                if with_journal:
                    await save_in_journal(path, client.base_url, stored())
                else:
                    await CadenceFile(cadence_file()).save_cadence(client.base_url, stored())
                await client.wait_until_done(server.add_task(timeline=DONE))
                assert policy.estimator.confident is remember


@pytest.mark.parametrize(
    ("age", "adopted"),
    [
        pytest.param(MAX_AGE + 3600.0, False, id="7h-old"),
        pytest.param(-120.0, False, id="2min-in-the-future"),
        pytest.param(MAX_AGE - 3600.0, True, id="5h-old"),
        pytest.param(-30.0, True, id="30s-in-the-future"),
    ],
)
@pytest.mark.parametrize("with_journal", [False, True], ids=["file", "journal"])
async def test_a_stale_or_future_cadence_is_not_adopted(
    tmp_path: pathlib.Path, age: float, adopted: bool, with_journal: bool
) -> None:
    """A cadence verified more than MAX_AGE (6 h) ago, or more than 60 s in the future, is not
    adopted; one 5 h old, or 30 s in the future (clocks differ), is."""
    path = tmp_path / "j.sqlite3"
    async with FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server:
        policy = scaled_policy()
        async with SoraClient(
            "k", base_url=server.url, journal=path if with_journal else None, poll=policy
        ) as client:
            if with_journal:
                await save_in_journal(path, client.base_url, stored(age=age))
            else:
                await CadenceFile(cadence_file()).save_cadence(client.base_url, stored(age=age))
            done = await client.wait_until_done(server.add_task(timeline=DONE))
            assert done.status is TaskStatus.SUCCESS
            assert policy.estimator.confident is adopted
            if adopted:
                assert estimator_error(policy.estimator) <= 0.05


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"version": 1, "cadences": {"URL": {"period": "fast", "phase": 1}}}',
        b'{"version": 99, "cadences": {}}',
        b"\x00\xff" * 100,
    ],
    ids=["not-json", "empty", "bad-entry", "other-version", "binary"],
)
async def test_a_corrupt_cadence_file_is_ignored(content: bytes) -> None:
    """A damaged cadence.json is nothing remembered: waits go on and learn from scratch."""
    async with FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server:
        policy = scaled_policy()
        async with SoraClient("k", base_url=server.url, poll=policy) as client:
            path = cadence_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.replace(b"URL", client.base_url.encode()))
            done = await client.wait_until_done(server.add_task(timeline=DONE))
            assert done.status is TaskStatus.SUCCESS
            assert not policy.estimator.confident


def fixed_jitter() -> float:
    """Every draw: a delay 5% under the cap at the cap, as half of all draws are; and, being
    0.15 or more, no probe (probes on probation are drawn below 0.15)."""
    return 0.25


@pytest.mark.parametrize("draw", [0.15, 0.25, 0.5, 0.75, 0.999])
@pytest.mark.parametrize("period", [15.0, PERIOD], ids=["15s", "compressed"])
def test_on_probation_the_policy_polls_no_more_than_the_backoff(period: float, draw: float) -> None:
    """An adopted cadence, on probation, never adds polls to the backoff's: over 100 periods at
    the cap (no change seen), pure policy arithmetic, whatever the jitter draws. (The same draw
    decides whether a poll probes, and on probation at least 15% do whatever `probe_rate`
    says: a draw under 0.15 would make every poll a probe, so none is taken here.)"""
    scale = period / 15
    estimator = SweepEstimator(
        min_period=5 * scale, max_period=60 * scale, tolerance=0.5 * scale, prior=period
    )
    policy = CadencePolicy(
        2 * scale,
        period,
        estimator=estimator,
        guard=0.2 * scale,
        probe_gap=scale,
        probe_lead=2 * scale,
        probe_rate=0.0,
        random=lambda: draw,
    )
    backoff = PollPolicy(2 * scale, period, random=lambda: draw)
    estimator.adopt(period, 0.3 * period, 0.3 * period + scale, now=0.0)
    latency = 0.01 * scale
    wait = policy.for_task()
    now, polls = 0.0, 0
    while now < 100 * period:
        now += wait.next_delay(20, now=now) + latency
        polls += 1
    assert estimator.confident
    assert not estimator.verified
    baseline = math.ceil(100 * period / (backoff.next_delay(20) + latency))
    assert polls <= baseline + 1, f"{polls} polls on probation, {baseline} for the backoff"


async def test_a_wrong_cadence_costs_at_most_the_backoff() -> None:
    """A remembered cadence whose sweeps are half a period off is adopted, on probation; the wait
    finishes, that wrong cadence is never verified (it is forgotten, or moved onto the real
    sweeps first), and the wait keeps the backoff's pace: at most 1.3 times its requests on the
    same timeline. Both policies draw the same fixed jitter (`fixed_jitter`), so that the counts
    repeat; with the default random, the probes on probation (15% of polls, each one more poll)
    make a wait this short (about 10 polls) cost 1.1 to 1.5 times the backoff's."""
    timeline = short(4)
    step = 1.2 * PERIOD  # four changes over five sweeps
    policy = scaled_policy(random=fixed_jitter)
    async with (
        FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server,
        FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as baseline,
        SoraClient("k", base_url=server.url, poll=policy) as client,
        SoraClient(
            "k", base_url=baseline.url, poll=PollPolicy(2 * SCALE, PERIOD, random=fixed_jitter)
        ) as backoff,
    ):
        await CadenceFile(cadence_file()).save_cadence(client.base_url, stored(off_by=0.5))
        task_id = server.add_task(timeline=timeline)
        server.tasks[task_id].step_seconds = step
        baseline_id = baseline.add_task(timeline=timeline)
        baseline.tasks[baseline_id].step_seconds = step
        server.tasks[task_id].created_at = baseline.tasks[baseline_id].created_at
        adopted: list[float] = []

        async def follow() -> TaskStatus:
            status = TaskStatus.UNKNOWN
            async for task in client.watch(task_id, timeout=60.0):
                if not adopted:  # the first snapshot: the remembered cadence is held, on probation
                    assert policy.estimator.confident
                    assert not policy.estimator.verified
                    adopted.append(estimator_error(policy.estimator))
                status = task.status
            return status

        status, done = await asyncio.gather(follow(), backoff.wait_until_done(baseline_id, timeout=60.0))
    assert adopted == [pytest.approx(0.5, abs=0.02)]
    assert status is TaskStatus.SUCCESS
    assert done.status is TaskStatus.SUCCESS
    estimator = policy.estimator
    assert not estimator.verified or estimator_error(estimator) <= 0.1, estimator.learned()
    polls, baseline_polls = server.polls(task_id), baseline.polls(baseline_id)
    assert polls <= 1.3 * baseline_polls, f"{polls} polls, {baseline_polls} for the backoff"


async def test_a_custom_poll_policy_loads_and_saves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client given a plain PollPolicy neither loads nor saves a cadence, from the journal or
    the state folder, though a valid one is stored in both."""
    journal = SpyJournal(tmp_path / "j.sqlite3")
    file = FileSpy()
    async with FakeSoraServer() as server:  # each poll moves a task on: the waits are quick
        async with SoraClient("k", base_url=server.url) as client:
            base_url = client.base_url
        await save_in_journal(journal.path, base_url, stored())
        await CadenceFile(cadence_file()).save_cadence(base_url, stored())
        content = cadence_file().read_bytes()
        file.install(monkeypatch)
        for store in (journal, None):
            async with SoraClient("k", base_url=server.url, journal=store, poll=scaled_backoff()) as client:
                outcomes = await client.wait_many([server.add_task(timeline=short(2)) for _ in range(5)])
                assert all(getattr(t, "status", None) is TaskStatus.SUCCESS for t in outcomes.values())
                await client.get_task(server.add_task(timeline=DONE))
    await journal.aclose()
    assert (journal.loads, journal.saves) == (0, 0)
    assert (file.loads, file.saves) == (0, 0)
    assert cadence_file().read_bytes() == content


async def test_concurrent_first_polls_load_once(tmp_path: pathlib.Path) -> None:
    """Twenty waits whose first polls start together load the cadence once, all wait for that one
    load, and all finish."""
    hold = asyncio.Event()
    journal = SpyJournal(tmp_path / "j.sqlite3", hold=hold)
    policy = scaled_policy()
    try:
        async with (
            FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server,
            SoraClient("k", base_url=server.url, journal=journal, poll=policy) as client,
        ):
            await save_in_journal(journal.path, client.base_url, stored())
            ids = [server.add_task(timeline=DONE) for _ in range(20)]
            waits = asyncio.gather(*(client.wait_until_done(task_id, timeout=30.0) for task_id in ids))
            await eventually(lambda: journal.loads == 1)
            await asyncio.sleep(0.05)  # every other first poll is waiting for the load by now
            assert sum(server.polls(task_id) for task_id in ids) == 0
            hold.set()
            done = await asyncio.wait_for(waits, timeout=30.0)
            assert [task.status for task in done] == [TaskStatus.SUCCESS] * 20
            assert journal.loads == 1
            assert policy.estimator.confident
            await client.wait_until_done(server.add_task(timeline=DONE))
            assert journal.loads == 1
    finally:
        await journal.aclose()


async def test_cancelling_the_first_poll_during_the_load_leaves_no_poll_hanging(
    tmp_path: pathlib.Path,
) -> None:
    """The first poll, cancelled while the load it started waits, lets the polls waiting for that
    load, and later ones, go on; the load itself goes on, and its cadence is adopted when it comes."""
    hold = asyncio.Event()
    journal = SpyJournal(tmp_path / "j.sqlite3", hold=hold)
    policy = scaled_policy()
    try:
        async with (
            FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server,
            SoraClient("k", base_url=server.url, journal=journal, poll=policy) as client,
        ):
            await save_in_journal(journal.path, client.base_url, stored())
            first = asyncio.create_task(client.wait_until_done(server.add_task(timeline=DONE)))
            await eventually(lambda: journal.loads == 1)
            waiting = asyncio.create_task(client.wait_until_done(server.add_task(timeline=DONE)))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            done = await asyncio.wait_for(waiting, timeout=10.0)
            assert done.status is TaskStatus.SUCCESS
            later = await asyncio.wait_for(client.wait_until_done(server.add_task(timeline=DONE)), 10.0)
            assert later.status is TaskStatus.SUCCESS
            snapshot = await asyncio.wait_for(client.get_task(server.add_task(timeline=DONE)), 10.0)
            assert snapshot.status is TaskStatus.SUCCESS
            hold.set()  # the store answers at last
            await eventually(lambda: policy.estimator.confident)
            assert estimator_error(policy.estimator) <= 0.05
            assert journal.loads == 1
    finally:
        await journal.aclose()


async def test_a_first_get_task_adopts_the_remembered_cadence() -> None:
    """get_task is a poll too: the first one loads the remembered cadence."""
    async with FakeSoraServer(advance="sweep", sweep_seconds=PERIOD, sweep_phase=PHASE) as server:
        policy = scaled_policy()
        async with SoraClient("k", base_url=server.url, poll=policy) as client:
            await CadenceFile(cadence_file()).save_cadence(client.base_url, stored())
            await client.get_task(server.add_task(timeline=DONE))
            assert policy.estimator.confident
