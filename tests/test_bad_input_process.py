"""Bad input from the process or the network: what was created is never lost, errors travel.

Covers: every error surviving pickle, `generate` naming its task on every
failure after the create, `request_sent` meaning "bytes were written",
size limits counted after decompression, the proxy named by the
environment, and URLs that cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import math
import pickle
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import sora_async
from sora_async import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    DestinationExistsError,
    DownloadError,
    DownloadTimeoutError,
    EventLoopMismatchError,
    InvalidTaskIdError,
    JournalError,
    ModelNotAvailableError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    SoraClient,
    SoraError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    URLExpiredError,
    VideoNotReadyError,
    WaitTimeoutError,
)
from sora_async.testing import FakeSoraServer, Fault

from .conftest import FAST_POLL, eventually

KEY = "sk-process-test-key"
QUICK = RetryPolicy(initial_delay=0.001, max_delay=0.005)

SNAPSHOT = Task(task_id="task_1", status=TaskStatus.FAILURE, raw_status="FAILURE", fail_reason="moderation")

# One instance of every public error class, with every attribute set.
ERRORS: list[SoraError] = [
    SoraError("plain"),
    APIError("teapot", status_code=418, code="teapot", request_id="req-1", retryable=True),
    BadRequestError("bad", status_code=400, code="invalid_request", request_id="req-2"),
    TaskNotFoundError("no task", status_code=400, code="task_not_exist"),
    VideoNotReadyError("Task is not completed yet, current status: QUEUED", status_code=400),
    ModelNotAvailableError("No available channel for model sora-2", status_code=503, code="model_not_found"),
    AuthenticationError("who", status_code=401),
    PermissionDeniedError("quota", status_code=403, code="quota_not_enough"),
    RateLimitError("slow down", code="rate_limit", request_id="req-3", retry_after=2.5),
    ServerError("down", status_code=502, retryable=False),
    APIConnectionError("reset", request_sent=False),
    APITimeoutError("slow", request_sent=True),
    ResponseDecodeError("not json"),
    InvalidTaskIdError("task_id must not be empty"),
    TaskFailedError(SNAPSHOT),
    WaitTimeoutError("task_2", SNAPSHOT, 60.0, elapsed=59.5, polls=7),
    ClientClosedError("closed", task_id="task_3"),
    EventLoopMismatchError("other loop"),
    JournalError("journal is locked", path="jobs.sqlite3"),
    DownloadError("disk full"),
    DestinationExistsError("videos/clip.mp4"),
    DownloadTimeoutError("stalled"),
    URLExpiredError("expired"),
]


def test_the_table_holds_every_public_error_class() -> None:
    """A new public error class must be added to ERRORS, so the pickle test covers it."""
    public = {
        value
        for name in sora_async.__all__
        if isinstance(value := getattr(sora_async, name), type) and issubclass(value, SoraError)
    }
    assert {type(error) for error in ERRORS} == public
    assert len(public) == 23


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_public_attributes(error: SoraError) -> None:
    """Errors cross a process pool or a job queue: same class, message, attributes, task id."""
    error.task_id = error.task_id or "task_named"
    if isinstance(error, DownloadError):
        error.retryable = True  # an instance attribute set after __init__ survives too
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own objects)
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert repr(copy) == repr(error)
    assert copy.args == error.args
    public = {name: value for name, value in vars(error).items() if not name.startswith("_")}
    assert {name: value for name, value in vars(copy).items() if not name.startswith("_")} == public
    assert copy.retryable == error.retryable
    assert copy.task_id == error.task_id
    assert isinstance(copy, type(error).__mro__[1])


def test_an_error_with_a_note_keeps_it_through_pickle() -> None:
    error = ServerError("down", status_code=503)
    setattr(error, "__notes__", ["task task_1 was created"])  # noqa: B010 (3.10 has no add_note)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own objects)
    assert getattr(copy, "__notes__", None) == ["task task_1 was created"]


# --- generate never loses the task it created -------------------------------


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer() as fake:
        yield fake


@pytest.fixture
async def client(server: FakeSoraServer) -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url=server.url, poll=FAST_POLL, retry=QUICK, max_retries=1) as c:
        yield c


def created_id(server: FakeSoraServer) -> str:
    (task_id,) = server.tasks
    return task_id


def assert_names(exc: BaseException, task_id: str) -> None:
    notes = getattr(exc, "__notes__", [])
    assert any(task_id in note for note in notes), notes
    if isinstance(exc, SoraError):
        assert exc.task_id == task_id


async def test_a_callback_error_after_the_create_gets_the_task_in_a_note(
    server: FakeSoraServer, client: SoraClient
) -> None:
    def explode(task: Task) -> None:
        raise KeyError("the caller's own bug")

    with pytest.raises(KeyError) as caught:
        await client.generate("a boat", on_progress=explode, timeout=10)
    assert_names(caught.value, created_id(server))
    assert len(server.tasks) == 1


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault(401, {"error": {"message": "bad key", "code": "invalid_key"}}), AuthenticationError),
        (Fault(400, {"code": "task_not_exist", "message": "task_not_exist"}), TaskNotFoundError),
        (Fault(403, {"code": "quota_not_enough", "message": "no quota"}), PermissionDeniedError),
        (Fault.redirect("http://elsewhere.example/"), APIError),
    ],
    ids=["401", "task_not_exist", "403", "redirect"],
)
async def test_every_error_after_the_create_carries_the_task_id(
    server: FakeSoraServer, client: SoraClient, fault: Fault, error_type: type[SoraError]
) -> None:
    """A poll that fails for good still names the created, billed task."""
    server.inject(fault, route="query")
    with pytest.raises(error_type) as caught:
        await client.generate("a boat", timeout=10)
    assert_names(caught.value, created_id(server))
    assert server.requests["create"] == 1


async def test_a_failure_and_a_timeout_after_the_create_carry_the_task_id(server: FakeSoraServer) -> None:
    server.script_next([("FAILURE", "0%")], fail_reason="rejected")
    async with SoraClient(KEY, base_url=server.url, poll=FAST_POLL, retry=QUICK) as client:
        with pytest.raises(TaskFailedError) as failed:
            await client.generate("a boat", timeout=10)
        server.script_next([("IN_PROGRESS", "10%")] * 1000)
        with pytest.raises(WaitTimeoutError) as timed_out:
            await client.generate("a boat", timeout=0.5)
    first, second = server.tasks
    assert failed.value.task_id == first
    assert timed_out.value.task_id == second


async def test_cancelling_generate_after_the_create_names_the_task(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """The CancelledError raised inside the cancelled task (where the CLI catches Ctrl-C) names the task.

    Python 3.10 hands an awaiter outside the task a new CancelledError, so
    the note is checked where every version keeps it: inside the task.
    """
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    raised: list[BaseException] = []

    async def generate() -> None:
        try:
            await client.generate("a boat", timeout=30)
        except asyncio.CancelledError as exc:
            raised.append(exc)
            raise

    call = asyncio.create_task(generate())
    await eventually(lambda: bool(server.tasks) and server.polls(next(iter(server.tasks))) > 0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (exc,) = raised
    assert_names(exc, created_id(server))


async def test_an_error_before_the_create_names_no_task(server: FakeSoraServer, client: SoraClient) -> None:
    server.inject(Fault(401, {"error": {"message": "bad key"}}), route="create")
    with pytest.raises(AuthenticationError) as caught:
        await client.generate("a boat", timeout=10)
    assert caught.value.task_id is None
    assert not server.tasks


# --- request_sent: True only when bytes of the request were written ----------


@contextlib.asynccontextmanager
async def one_request_stuck(server: FakeSoraServer, client: SoraClient) -> AsyncIterator[str]:
    """A query the server received and never answers, holding its connection and its budget slot."""
    task_id = server.add_task()
    server.inject(Fault.stalled(), route="query")
    holder = asyncio.create_task(client.get_task(task_id, timeout=20))
    await eventually(lambda: server.requests[task_id] > 0)
    try:
        yield task_id
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


@pytest.mark.parametrize("call", ["get_task", "create_video"])
async def test_no_free_connection_before_the_deadline_is_not_sent(server: FakeSoraServer, call: str) -> None:
    """The deadline passes while waiting for aiohttp's pool (limit 1): request_sent=False, nothing arrived."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        client = SoraClient(KEY, base_url=server.url, session=session, max_retries=0)
        async with one_request_stuck(server, client) as task_id:
            attempt = (
                client.get_task(task_id, timeout=0.5)
                if call == "get_task"
                else client.create_video("a boat", timeout=0.5)
            )
            with pytest.raises(APITimeoutError) as caught:
                await attempt
            assert caught.value.request_sent is False
            assert server.requests[task_id] == 1
            assert server.requests["create"] == 0
        await client.aclose()


async def test_no_turn_in_the_budget_is_not_sent(server: FakeSoraServer) -> None:
    """The deadline passes while waiting for the client's budget (max_concurrency=1): request_sent=False."""
    client = SoraClient(KEY, base_url=server.url, max_concurrency=1, max_retries=0)
    async with client, one_request_stuck(server, client):
        with pytest.raises(APITimeoutError) as caught:
            await client.create_video("a boat", timeout=0.3)
        assert caught.value.request_sent is False
        assert server.requests["create"] == 0


async def test_a_create_answered_too_late_was_sent(server: FakeSoraServer) -> None:
    """The server got the create and did not answer in time: the task may exist."""
    server.inject(Fault.stalled(), route="create")
    async with SoraClient(KEY, base_url=server.url, max_retries=3) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.create_video("a boat", timeout=0.5)
    assert caught.value.request_sent is True
    assert server.requests["create"] == 1  # never resent: that could pay twice


async def test_a_refused_connection_was_not_sent() -> None:
    async with FakeSoraServer() as closed_server:
        url = closed_server.url
    async with SoraClient(KEY, base_url=url, max_retries=0) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.get_task("task_x", timeout=5)
    assert caught.value.request_sent is False


# --- size limits count the bytes after decompression --------------------------


def gzip_of_zeros(size: int) -> bytes:
    """A gzip stream that inflates to `size` zero bytes, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, packer.flush()])


@pytest.fixture
async def bomb_server() -> AsyncIterator[str]:
    """A server whose every answer is 65 KB of gzip that inflates to 64 MB; /chunked sends no length."""
    bomb = gzip_of_zeros(64 * 1024 * 1024)
    assert len(bomb) < 100 * 1024

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )
        if request.path.startswith("/chunked"):
            response.enable_chunked_encoding()
        else:
            response.content_length = len(bomb)
        await response.prepare(request)
        await response.write(bomb)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("root", ["", "/chunked"], ids=["content-length", "chunked"])
async def test_a_gzip_bomb_stops_at_the_limit_in_bounded_memory(bomb_server: str, root: str) -> None:
    """65 KB on the wire that inflate to 64 MB: refused at 1 MB, and memory stays near the limit."""
    limit = 1024 * 1024
    async with SoraClient(
        KEY, base_url=bomb_server + root, max_response_bytes=limit, max_retries=0
    ) as client:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseDecodeError, match="over the limit of 1048576 bytes once decoded"):
                await client.get_task("task_1", timeout=10)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * limit, f"peak {peak:,} bytes"


async def test_a_gzip_body_within_the_limit_decodes(server: FakeSoraServer) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    async with SoraClient(KEY, base_url=server.url) as client:
        plain = await client.get_task(task_id)
    body = (
        b'{"code":"success","message":"","data":{"task_id":"%s","status":"SUCCESS","progress":"100%%"}}'
        % task_id.encode()
    )
    server.inject(Fault(200, gzip.compress(body), {"Content-Encoding": "gzip"}), route="query")
    async with SoraClient(KEY, base_url=server.url, max_response_bytes=len(body)) as client:
        task = await client.get_task(task_id)
    assert task.task_id == plain.task_id
    assert task.status is TaskStatus.SUCCESS


# --- the proxy the environment names, and URLs that cannot work ---------------


@pytest.mark.parametrize("port", [99999, 0, 65536, "x1", "-1", "\uff18\uff10"])  # the last: fullwidth 80
def test_a_base_url_with_an_impossible_port_is_refused_at_construction(port: int | str) -> None:
    with pytest.raises(ValueError, match="port"):
        SoraClient(KEY, base_url=f"http://127.0.0.1:{port}")


async def test_the_fake_server_on_ipv6_loopback_gives_a_usable_url() -> None:
    try:
        server = FakeSoraServer(host="::1")
        await server.start()
    except OSError as exc:  # a machine without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert server.url.startswith("http://[::1]:")
        task_id = server.add_task(timeline=[("SUCCESS", "100%")])
        async with SoraClient(KEY, base_url=server.url) as client:
            assert (await client.get_task(task_id)).status is TaskStatus.SUCCESS
    finally:
        await server.close()


# --- every timeout= means the same thing --------------------------------------

TIMEOUT_CALLS: dict[str, dict[str, Any]] = {
    "get_task": {"task_id": "task_1"},
    "create_video": {"prompt": "a boat"},
    "watch": {"task_id": "task_1"},
    "wait_until_done": {"task_id": "task_1"},
    "generate": {"prompt": "a boat"},
    "download": {"task_or_id": "task_1", "dest": "out.mp4"},
    "download_bytes": {"task_or_id": "task_1"},
    "stream_video": {"task_or_id": "task_1"},
    "as_completed": {"task_ids": ["task_1"]},
    "wait_many": {"task_ids": ["task_1"]},
    "resume": {},
    "download_pending": {"dest": "videos"},
}


def test_the_table_holds_every_method_with_a_timeout() -> None:
    methods = {
        name
        for name, member in inspect.getmembers(SoraClient, inspect.isfunction)
        if not name.startswith("_") and "timeout" in inspect.signature(member).parameters
    }
    assert methods == set(TIMEOUT_CALLS)
    assert len(methods) == 12


@pytest.mark.parametrize("method", sorted(TIMEOUT_CALLS))
@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (10**400, ValueError),
        (True, TypeError),
        ("5", TypeError),
    ],
    ids=["0", "-1", "nan", "inf", "huge-int", "True", "str"],
)
async def test_every_timeout_rejects_the_same_values_before_sending(
    server: FakeSoraServer, client: SoraClient, method: str, timeout: object, error: type[Exception]
) -> None:
    """Seconds > 0, or None for no limit, everywhere; anything else is refused and nothing is sent."""

    async def call() -> None:
        result = getattr(client, method)(**TIMEOUT_CALLS[method], timeout=timeout)
        if inspect.isawaitable(result):
            await result
        elif hasattr(result, "__anext__"):
            await result.__anext__()

    with pytest.raises(error, match="timeout"):
        await call()
    assert not server.arrivals
