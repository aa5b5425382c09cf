"""Batch waiting: as_completed and wait_many against FakeSoraServer on loopback."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from sora_async import (
    InvalidTaskIdError,
    PollPolicy,
    RetryPolicy,
    SoraClient,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    WaitTimeoutError,
)
from sora_async.testing import FakeSoraServer, Fault

from .conftest import FAST_POLL, eventually

KEY = "sk-batch-test"


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer() as fake:
        yield fake


@pytest.fixture
async def client(server: FakeSoraServer) -> AsyncIterator[SoraClient]:
    retry = RetryPolicy(initial_delay=0.001, max_delay=0.005)
    async with SoraClient(KEY, base_url=server.url, poll=FAST_POLL, retry=retry) as c:
        yield c


async def test_none_lost_with_mixed_outcomes(server: FakeSoraServer, client: SoraClient) -> None:
    """2,000 ids with success, failure, not-found and timeout outcomes give 2,000 right-typed outcomes.

    The timeout is wide: on Python 3.10 the 3,700 polls alone take 2.5 s of
    a 2-core machine, and only the 100 stuck ids should reach it.
    """
    succeed = [server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")]) for _ in range(1400)]
    fail = [server.add_task(timeline=[("QUEUED", "20%"), ("FAILURE", "100%")]) for _ in range(300)]
    missing = [f"task_missing_{n}" for n in range(200)]
    stuck = [server.add_task(timeline=[("QUEUED", "20%")]) for _ in range(100)]
    expected: dict[str, type] = {
        **dict.fromkeys(succeed, Task),
        **dict.fromkeys(fail, TaskFailedError),
        **dict.fromkeys(missing, TaskNotFoundError),
        **dict.fromkeys(stuck, WaitTimeoutError),
    }
    seen: collections.Counter[str] = collections.Counter()
    poll = PollPolicy(initial_interval=0.2, max_interval=0.2, jitter=0.0)
    async for task_id, outcome in client.as_completed(expected, concurrency=32, timeout=6.0, poll=poll):
        seen[task_id] += 1
        assert type(outcome) is expected[task_id], (task_id, outcome)
    assert len(seen) == 2000
    assert set(seen.values()) == {1}
    assert all(server.polls(task_id) == 1 for task_id in missing)


async def test_wait_many_collects_outcomes(server: FakeSoraServer, client: SoraClient) -> None:
    """wait_many returns one entry per id: the SUCCESS task or the error."""
    good = server.add_task(timeline=[("SUCCESS", "100%")])
    bad = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    results = await client.wait_many([good, bad])
    assert isinstance(results[good], Task)
    assert results[good].status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    failure = results[bad]
    assert isinstance(failure, TaskFailedError)
    assert failure.fail_reason == "moderation"


async def test_generator_input(server: FakeSoraServer, client: SoraClient) -> None:
    """A generator of ids works and is read once."""
    ids = [server.add_task(timeline=[("SUCCESS", "100%")]) for _ in range(20)]

    def generate() -> Iterator[str]:
        yield from ids

    results = await client.wait_many(generate())
    assert set(results) == set(ids)


async def test_duplicate_ids_polled_once_yielded_per_occurrence(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """A repeated id is polled as one task but yielded once for each time it was given."""
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")])
    other = server.add_task(timeline=[("SUCCESS", "100%")])
    yielded = [tid async for tid, _ in client.as_completed([task_id, other, task_id, task_id])]
    assert sorted(yielded) == sorted([task_id, other, task_id, task_id])
    assert server.polls(task_id) == 2


BAD_IDS = ["", "   ", "a b", "x" * 257, ".", "..", "tab\tinside", "nul\x00"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_one_bad_id_is_its_own_outcome_and_never_stops_the_others(
    server: FakeSoraServer, client: SoraClient, bad: str
) -> None:
    """An id that cannot be sent gets an InvalidTaskIdError (a ValueError) outcome; the rest finish."""
    good = server.add_task()
    results = await client.wait_many([good, bad, good])
    assert isinstance(results[good], Task)
    outcome = results[bad.strip()]
    assert isinstance(outcome, InvalidTaskIdError)
    assert isinstance(outcome, ValueError)
    assert outcome.task_id == bad.strip()
    assert server.polls(good) >= 1
    assert server.requests[bad.strip()] == 0


async def test_only_bad_ids_end_at_once_and_send_nothing(server: FakeSoraServer, client: SoraClient) -> None:
    """A batch of nothing but bad ids yields each outcome (repeats included) and sends no request."""
    async with client.as_completed(["", "a b", ""], timeout=5) as outcomes:
        seen = [(task_id, type(outcome)) async for task_id, outcome in outcomes]
    assert sorted(seen) == sorted([("", InvalidTaskIdError)] * 2 + [("a b", InvalidTaskIdError)])
    assert not server.arrivals


async def test_ids_are_stripped_of_surrounding_white_space(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """' id\n' is the id 'id' in a batch and in every single-task call."""
    task_id = server.add_task()
    results = await client.wait_many([f" {task_id}\n", task_id])
    assert list(results) == [task_id]
    assert isinstance(results[task_id], Task)
    assert (await client.get_task(f"\t{task_id} ")).task_id == task_id
    assert (await client.wait_until_done(f" {task_id}", timeout=10)).task_id == task_id
    async for snapshot in client.watch(f"{task_id}  ", timeout=10):
        assert snapshot.task_id == task_id


async def test_a_non_string_or_a_single_string_is_refused_up_front(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """Type errors are the caller's bug, found by a type checker: raised at once, nothing sent."""
    with pytest.raises(TypeError):
        client.as_completed("task_ok")
    with pytest.raises(TypeError):
        client.as_completed(["task_ok", None])  # type: ignore[list-item]
    assert not server.arrivals


DELIVERY_JITTER = 0.2
"""Seconds by which the server may see requests later than the budget let them go.

The fake server shares the client's event loop and process: on a loaded
machine (the suite runs in 4 processes on 2 cores) requests admitted on time
can reach its handler in a bunch, so a one-second window there may hold a
little more than the rate allowed. The span of the whole run is the check
load cannot blur: N requests at the rate take at least (N - burst) / rate
seconds, less that jitter at the ends."""


async def test_rate_limit_holds_at_the_server(server: FakeSoraServer, client: SoraClient) -> None:
    """With rate_limit=300, no one-second window at the server sees more than rate + burst (plus margin)."""
    timeline = [("QUEUED", "20%"), ("IN_PROGRESS", "30%"), ("SUCCESS", "100%")]
    ids = [server.add_task(timeline=timeline) for _ in range(200)]
    results = await client.wait_many(ids, concurrency=64, rate_limit=300.0)
    assert all(isinstance(outcome, Task) for outcome in results.values())
    assert len(server.arrivals) == 600
    assert server.arrivals[-1] - server.arrivals[0] >= (600 - 30) / 300 - DELIVERY_JITTER
    assert server.max_requests_in_window(1.0) <= 300 * (1 + DELIVERY_JITTER) + 30 + 15


async def test_clients_budget_is_shared_by_every_call(server: FakeSoraServer) -> None:
    """wait_until_done calls and a batch on one rate-limited client share its budget."""
    timeline = [("QUEUED", "20%"), ("IN_PROGRESS", "30%"), ("SUCCESS", "100%")]
    singles = [server.add_task(timeline=timeline) for _ in range(80)]
    batch = [server.add_task(timeline=timeline) for _ in range(120)]
    async with SoraClient(KEY, base_url=server.url, poll=FAST_POLL, rate_limit=250.0) as c:
        await asyncio.gather(c.wait_many(batch, concurrency=32), *(c.wait_until_done(t) for t in singles))
    assert len(server.arrivals) == 600
    assert server.arrivals[-1] - server.arrivals[0] >= (600 - 25) / 250 - DELIVERY_JITTER
    assert server.max_requests_in_window(1.0) <= 250 * (1 + DELIVERY_JITTER) + 25 + 15


async def test_429_pauses_the_whole_batch(server: FakeSoraServer, client: SoraClient) -> None:
    """One 429 with Retry-After stops every poller of the batch until it has passed."""
    ids = [server.add_task(timeline=[("QUEUED", "20%")] * 40 + [("SUCCESS", "100%")]) for _ in range(20)]
    poll = PollPolicy(initial_interval=0.02, max_interval=0.02, jitter=0.0)
    batch = asyncio.create_task(client.wait_many(ids, concurrency=8, poll=poll))
    await eventually(lambda: server.polls(ids[5]) >= 10)
    server.inject(Fault.rate_limited(retry_after="1"), task_id=ids[5])
    results = await batch
    assert all(isinstance(outcome, Task) for outcome in results.values())
    ((moment, _, _),) = server.faults_sent
    # Requests already in flight may land just after the 429; then silence for the pause.
    during_pause = [t for t in server.arrivals if moment + 0.1 < t < moment + 0.9]
    assert during_pause == []
    assert server.polls(ids[5]) == 42  # the throttled poll was repeated once, not once per poller


async def test_settles_under_a_server_rate_limit() -> None:
    """Asking for far more than the server allows converges: few 429s once settled."""
    async with FakeSoraServer(rate_limit=50) as fake:
        ids = [fake.add_task(timeline=[("QUEUED", "20%")] * 200 + [("SUCCESS", "100%")]) for _ in range(50)]
        poll = PollPolicy(initial_interval=0.01, max_interval=0.01, jitter=0.0)
        async with SoraClient(KEY, base_url=fake.url, poll=poll) as c:
            results = await c.wait_many(ids, concurrency=16, rate_limit=500.0, timeout=3.0)
        per_second = fake.requests_per_second()
    assert len(results) == 50
    assert fake.throttled < len(fake.arrivals) * 0.2
    assert max(per_second[1:3]) <= 50 + 15  # settled near the server's limit


async def test_cancelling_the_consumer_stops_all_polling(server: FakeSoraServer) -> None:
    """Cancelling the consumer of as_completed mid-batch stops every poll: no client tasks left,
    and no request starts afterwards (counted where requests start, in the client's session)."""
    started: list[float] = []

    async def on_request_start(*_: object) -> None:
        started.append(time.monotonic())

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    ids = server.add_tasks(300, never_finish=True)
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        SoraClient("test-key", base_url=server.url, poll=FAST_POLL, session=session) as client,
    ):
        before = asyncio.all_tasks()
        outcomes = client.as_completed(ids, concurrency=16)
        consumer = asyncio.create_task(anext(outcomes))
        await eventually(lambda: len(started) >= 100)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        stopped = time.monotonic()
        await outcomes.aclose()
        # The server's keep-alive handlers belong to the server, not to the batch.
        left = [t for t in asyncio.all_tasks() - before if "RequestHandler" not in repr(t.get_coro())]
        assert left == []
        await asyncio.sleep(0.2)  # time for a stray poll to show itself
        assert len([t for t in started if t > stopped]) == 0


async def test_on_progress_sees_each_change_of_every_task_before_its_outcome(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """Each task's first snapshot and each change, the final one included, come before its outcome."""
    steps = [("QUEUED", "20%"), ("IN_PROGRESS", "50%"), ("SUCCESS", "100%")]
    ids = [server.add_task(timeline=steps) for _ in range(3)]
    failed = server.add_task(timeline=[("QUEUED", "20%"), ("FAILURE", "100%")])
    seen: dict[str, list[str]] = collections.defaultdict(list)
    order: list[tuple[str, str]] = []

    def progress(task: Task) -> None:
        seen[task.task_id].append(task.raw_status)
        order.append(("snapshot", task.task_id))

    async with client.as_completed([*ids, failed], on_progress=progress) as outcomes:
        async for task_id, _ in outcomes:
            order.append(("outcome", task_id))
    for task_id in ids:
        assert seen[task_id] == ["QUEUED", "IN_PROGRESS", "SUCCESS"]  # polled each state once or more
    assert seen[failed] == ["QUEUED", "FAILURE"]
    for task_id in [*ids, failed]:
        assert order.index(("outcome", task_id)) > max(
            n for n, (kind, t) in enumerate(order) if t == task_id and kind == "snapshot"
        )


async def test_on_progress_may_be_async_and_wait_many_takes_it(
    server: FakeSoraServer, client: SoraClient
) -> None:
    ids = [server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")]) for _ in range(5)]
    seen: list[str] = []

    async def progress(task: Task) -> None:
        await asyncio.sleep(0)
        seen.append(task.raw_status)

    results = await client.wait_many(ids, on_progress=progress)
    assert all(isinstance(outcome, Task) for outcome in results.values())
    assert sorted(seen) == ["QUEUED"] * 5 + ["SUCCESS"] * 5


@pytest.mark.parametrize(
    "error", [RuntimeError("callback bug"), TaskNotFoundError("not the task's", status_code=400)]
)
async def test_an_error_in_on_progress_ends_the_iteration_and_is_not_an_outcome(
    server: FakeSoraServer, client: SoraClient, error: Exception
) -> None:
    """The callback's own error is raised by the iteration, even a SoraError, and no poll goes on."""
    ids = [server.add_task(timeline=[("QUEUED", "20%")] * 1000) for _ in range(3)]

    def progress(task: Task) -> None:
        raise error

    outcomes: list[object] = []

    async def consume() -> None:
        async with client.as_completed(ids, on_progress=progress) as batch:
            async for _, outcome in batch:
                outcomes.append(outcome)

    with pytest.raises(type(error)) as raised:
        await consume()
    assert raised.value is error
    assert outcomes == []
    polls = sum(server.polls(t) for t in ids)
    await asyncio.sleep(0.1)
    assert sum(server.polls(t) for t in ids) == polls
