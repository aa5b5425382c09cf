"""Tier 3: the client against FakeSoraServer over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
import warnings
from collections.abc import AsyncIterator

import pytest

from sora_async import (
    APIConnectionError,
    AuthenticationError,
    PollPolicy,
    RetryPolicy,
    SoraClient,
    SoraError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    WaitTimeoutError,
)
from sora_async.testing import DEFAULT_TIMELINE, FakeSoraServer, Fault

from .conftest import FAST_POLL, eventually

KEY = "sk-e2e-4f1c9b2d7e"
NO_WAIT = RetryPolicy(initial_delay=0.001, max_delay=0.005)


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeSoraServer) -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url=server.url, poll=FAST_POLL, retry=NO_WAIT) as c:
        yield c


async def test_generate_runs_to_success(server: FakeSoraServer, client: SoraClient) -> None:
    """generate creates a task, polls it through the timeline and returns the SUCCESS snapshot."""
    task = await client.generate("a paper boat", width=1280, height=720)
    assert task.status is TaskStatus.SUCCESS
    assert server.polls(task.task_id) == len(DEFAULT_TIMELINE)
    assert server.tasks[task.task_id].request["width"] == 1280
    assert task.video is not None
    assert task.video.width == 1280
    assert task.video_url is not None
    assert task.video_url.startswith(server.url)


async def test_failure_raises_task_failed_error(server: FakeSoraServer, client: SoraClient) -> None:
    """A task that ends in FAILURE raises TaskFailedError carrying the task and reason."""
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("FAILURE", "100%")], fail_reason="content policy")
    with pytest.raises(TaskFailedError) as caught:
        await client.wait_until_done(task_id)
    assert caught.value.fail_reason == "content policy"
    assert caught.value.task.status is TaskStatus.FAILURE
    assert caught.value.task_id == task_id
    assert not caught.value.retryable


async def test_unknown_task_is_not_found(client: SoraClient) -> None:
    """Waiting on an id the gateway does not know raises TaskNotFoundError at once."""
    with pytest.raises(TaskNotFoundError):
        await client.wait_until_done("task_missing")


async def test_wait_times_out_without_overshooting(server: FakeSoraServer) -> None:
    """A task that never ends raises WaitTimeoutError with the last snapshot, at its deadline and no later."""
    task_id = server.add_task(timeline=[("QUEUED", "20%")])
    policy = PollPolicy(initial_interval=0.1, max_interval=0.1, jitter=0.0)
    async with SoraClient(KEY, base_url=server.url) as c:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as caught:
            await c.wait_until_done(task_id, timeout=0.35, poll=policy)
        elapsed = time.monotonic() - started
    assert caught.value.task_id == task_id
    assert caught.value.last_task is not None
    assert caught.value.last_task.status is TaskStatus.QUEUED
    assert isinstance(caught.value, TimeoutError)
    # Polls at 0, 0.1, 0.2 and 0.3 s, then the last one moved up to just before the deadline.
    assert 4 <= server.polls(task_id) <= 6
    assert caught.value.polls == server.polls(task_id)
    assert 0.3 <= elapsed < 0.35 + 0.1
    assert caught.value.elapsed is not None
    assert 0.3 <= caught.value.elapsed <= elapsed


async def test_generate_uses_one_deadline(server: FakeSoraServer) -> None:
    """generate's timeout covers the create too: a slow create leaves less time to wait."""
    server.script_next([("QUEUED", "20%")])
    server.inject(Fault(200, {"code": "success", "data": "task_slow"}, delay=0.3), route="create")
    server.add_task("task_slow", timeline=[("QUEUED", "20%")])
    policy = PollPolicy(initial_interval=0.05, max_interval=0.05, jitter=0.0)
    async with SoraClient(KEY, base_url=server.url) as c:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError):
            await c.generate("slow", timeout=0.5, poll=policy)
        assert time.monotonic() - started < 0.5 + 0.1
    assert 1 <= server.polls("task_slow") <= 5


async def test_on_progress_called_once_per_change(server: FakeSoraServer, client: SoraClient) -> None:
    """on_progress sees the first snapshot and each change, never a repeat; async callbacks work."""
    timeline = [
        ("QUEUED", "20%"),
        ("QUEUED", "20%"),
        ("IN_PROGRESS", "30%"),
        ("IN_PROGRESS", "30%"),
        ("IN_PROGRESS", "55%"),
        ("SUCCESS", "100%"),
    ]
    seen_sync: list[tuple[str, str]] = []
    seen_async: list[tuple[str, str]] = []

    async def record_async(task: Task) -> None:
        await asyncio.sleep(0)
        seen_async.append((task.status, task.progress))

    first = server.add_task(timeline=timeline)
    second = server.add_task(timeline=timeline)
    await client.wait_until_done(first, on_progress=lambda t: seen_sync.append((t.status, t.progress)))
    await client.wait_until_done(second, on_progress=record_async)
    expected = [("QUEUED", "20%"), ("IN_PROGRESS", "30%"), ("IN_PROGRESS", "55%"), ("SUCCESS", "100%")]
    assert seen_sync == expected
    assert seen_async == expected
    assert server.polls(first) == len(timeline)


async def test_watch_yields_changes_in_order_and_ends(server: FakeSoraServer, client: SoraClient) -> None:
    """watch yields each distinct state in order, ends after FAILURE, and does not raise."""
    task_id = server.add_task(
        timeline=[("SUBMITTED", "10%"), ("SUBMITTED", "10%"), ("IN_PROGRESS", "30%"), ("FAILURE", "100%")]
    )
    statuses = [task.status async for task in client.watch(task_id)]
    assert statuses == [TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS, TaskStatus.FAILURE]
    assert server.polls(task_id) == 4


async def test_unknown_status_does_not_end_the_wait(server: FakeSoraServer, client: SoraClient) -> None:
    """A status never seen before is reported as UNKNOWN and polling goes on to SUCCESS."""
    task_id = server.add_task(
        timeline=[("QUEUED", "20%"), ("REVIEWING", "??"), ("REVIEWING", "garbage"), ("SUCCESS", "100%")]
    )
    seen = [(task.status, task.raw_status, task.percent) async for task in client.watch(task_id)]
    assert seen[1] == (TaskStatus.UNKNOWN, "REVIEWING", None)
    assert seen[-1][0] is TaskStatus.SUCCESS
    assert (await client.wait_until_done(task_id)).status is TaskStatus.SUCCESS


async def test_transient_faults_are_absorbed(server: FakeSoraServer, client: SoraClient) -> None:
    """429 with Retry-After, a 502 page and a malformed body during a wait are retried through."""
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")])
    server.inject(Fault.rate_limited(retry_after="0"), task_id=task_id)
    server.inject(Fault.server_error(502), task_id=task_id)
    task = await client.wait_until_done(task_id)
    assert task.status is TaskStatus.SUCCESS
    assert server.polls(task_id) == 4  # two faults, then two real answers


async def test_malformed_body_is_a_typed_error(server: FakeSoraServer, client: SoraClient) -> None:
    """A 200 with a broken body becomes ResponseDecodeError, not a crash."""
    task_id = server.add_task()
    server.inject(Fault.malformed(), task_id=task_id)
    with pytest.raises(SoraError, match="not the expected JSON"):
        await client.get_task(task_id)


@pytest.mark.parametrize("shape", ["envelope", "object", "envelope_object"])
async def test_create_answer_shapes_end_to_end(shape: str) -> None:
    """Each create answer shape the server may send yields a usable task id."""
    async with (
        FakeSoraServer(create_response=shape) as fake,  # type: ignore[arg-type]
        SoraClient(KEY, base_url=fake.url, poll=FAST_POLL) as c,
    ):
        task = await c.generate("shape test")
    assert task.status is TaskStatus.SUCCESS


async def test_connection_refused_is_retried_then_raised() -> None:
    """Refused connections are retried (even for create) and end in APIConnectionError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with SoraClient(KEY, base_url=f"http://127.0.0.1:{port}", max_retries=2, retry=NO_WAIT) as c:
        with pytest.raises(APIConnectionError) as caught:
            await c.create_video("nobody home")
    assert caught.value.request_sent is False


async def test_cancellation_leaves_nothing_behind(server: FakeSoraServer) -> None:
    """Cancelling a wait mid-request closes its connection and leaves no tasks or unclosed warnings."""
    task_id = server.add_task(timeline=[("QUEUED", "20%")])
    server.inject(Fault(200, {}, delay=30.0), task_id=task_id, times=1)
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = SoraClient(KEY, base_url=server.url, poll=FAST_POLL)
        waiter = asyncio.create_task(client.wait_until_done(task_id))
        await eventually(lambda: server.polls(task_id) == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await eventually(lambda: server.open_connections == 0)
        await client.aclose()
        await eventually(lambda: asyncio.all_tasks() <= before)
        del client, waiter
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]
    assert server.polls(task_id) == 1  # nothing was sent after the cancel


async def test_key_never_leaks(server: FakeSoraServer, caplog: pytest.LogCaptureFixture) -> None:
    """The key appears in no log record, exception text or repr, even when a server echoes it."""
    caplog.set_level(logging.DEBUG, logger="sora_async")
    texts: list[str] = []
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("FAILURE", "100%")], fail_reason="nope")
    server.inject(Fault(500, {"error": {"message": f"upstream saw Bearer {KEY}"}}), task_id=task_id)
    server.inject(Fault(401, {"error": {"message": f"bad key {KEY}", "code": KEY}}), route="create")
    async with SoraClient(KEY, base_url=server.url, poll=FAST_POLL, retry=NO_WAIT) as c:
        texts.append(repr(c))
        for attempt in (c.create_video("x"), c.wait_until_done(task_id), c.get_task("missing")):
            try:
                await attempt
            except SoraError as exc:
                error: BaseException | None = exc
                while error is not None:
                    texts.extend([str(error), repr(error)])
                    error = error.__cause__ or error.__context__
    async with SoraClient("wrong-key", base_url=server.url) as bad:
        with pytest.raises(AuthenticationError) as caught:
            await bad.get_task(task_id)
        texts.append(repr(caught.value))
    texts.extend(record.getMessage() for record in caplog.records)
    assert any("retry" in text for text in texts)  # the DEBUG logging really ran
    assert len(texts) > 8
    assert not [text for text in texts if KEY in text]


async def test_fake_server_clock_mode() -> None:
    """In clock mode a task advances one state per step_seconds of the server's clock."""
    now = [100.0]
    async with FakeSoraServer(advance="clock", step_seconds=10.0, clock=lambda: now[0]) as fake:
        task_id = fake.add_task()
        async with SoraClient(KEY, base_url=fake.url) as c:
            first = await c.get_task(task_id)
            again = await c.get_task(task_id)
            now[0] += 25.0
            later = await c.get_task(task_id)
            now[0] += 1000.0
            final = await c.get_task(task_id)
    assert first.status is again.status is TaskStatus.NOT_START
    assert later.status is TaskStatus.QUEUED
    assert final.status is TaskStatus.SUCCESS
