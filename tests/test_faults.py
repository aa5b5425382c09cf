"""The fault matrix: one test per row of docs/RELIABILITY.md.

Each test asserts the error type (or success), how many requests the server
saw, and that the call ended within a generous time bound.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from sora_async import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    PermissionDeniedError,
    PollPolicy,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    SoraClient,
    TaskNotFoundError,
    TaskStatus,
    WaitTimeoutError,
)
from sora_async.testing import FakeSoraServer, Fault

KEY = "sk-fault-matrix-5d1e"
QUICK = RetryPolicy(initial_delay=0.01, max_delay=0.05)
FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
JSON_5XX = {"error": {"message": "upstream failed", "type": "server_error", "code": "upstream_error"}}


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeSoraServer) -> AsyncIterator[SoraClient]:
    async with SoraClient(
        KEY, base_url=server.url, timeout=0.5, max_retries=2, retry=QUICK, poll=FAST_POLL
    ) as c:
        yield c


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.started


async def fetch_after(server: FakeSoraServer, client: SoraClient, fault: Fault, times: int = 1) -> Any:
    """Inject `fault` for the next `times` queries of a fresh task, then get_task it."""
    task_id = server.add_task(timeline=[("IN_PROGRESS", "30%")])
    server.inject(fault, task_id=task_id, times=times)
    return task_id, await client.get_task(task_id)


# --- rate limiting ------------------------------------------------------------------


async def test_429_with_retry_after_seconds(server: FakeSoraServer, client: SoraClient) -> None:
    """429 + Retry-After: 1 is retried once, no sooner than a second later."""
    with Timer() as timer:
        task_id, task = await fetch_after(server, client, Fault.rate_limited(retry_after="1"))
    assert task.status is TaskStatus.IN_PROGRESS
    assert server.polls(task_id) == 2
    assert 1.0 <= timer.elapsed < 3.0


async def test_429_with_retry_after_http_date(server: FakeSoraServer, client: SoraClient) -> None:
    """429 + Retry-After as an HTTP date is honoured like seconds."""
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    with Timer() as timer:
        task_id, _ = await fetch_after(server, client, Fault.rate_limited(retry_after=when))
    assert server.polls(task_id) == 2
    assert 0.9 <= timer.elapsed < 4.0  # the date has whole-second resolution


async def test_429_without_retry_after(server: FakeSoraServer, client: SoraClient) -> None:
    """429 without Retry-After backs off briefly and retries."""
    with Timer() as timer:
        task_id, _ = await fetch_after(server, client, Fault.rate_limited(retry_after=None))
    assert server.polls(task_id) == 2
    assert timer.elapsed < 2.0


# --- server errors ----------------------------------------------------------------------

BODIES: dict[str, Any] = {"json": JSON_5XX, "html": "<html><h1>Bad Gateway</h1></html>", "empty": None}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 524])
@pytest.mark.parametrize("body", ["json", "html", "empty"])
async def test_5xx_is_retried(server: FakeSoraServer, client: SoraClient, status: int, body: str) -> None:
    """500, 502, 503, 504 and 524 with JSON, HTML or empty bodies are retried, then succeed."""
    content_type = "text/html" if body == "html" else "application/json"
    with Timer() as timer:
        task_id, task = await fetch_after(
            server, client, Fault(status, BODIES[body], content_type=content_type)
        )
    assert task.status is TaskStatus.IN_PROGRESS
    assert server.polls(task_id) == 2
    assert timer.elapsed < 2.0


async def test_5xx_persisting_gives_up_after_max_retries(server: FakeSoraServer, client: SoraClient) -> None:
    """A 5xx that never clears raises ServerError after 1 + max_retries requests."""
    with Timer() as timer, pytest.raises(ServerError) as caught:
        await fetch_after(server, client, Fault.server_error(503), times=100)
    assert caught.value.status_code == 503
    assert sum(server.requests.values()) == 3
    assert timer.elapsed < 2.0


async def test_500_invalid_request_not_retried(server: FakeSoraServer, client: SoraClient) -> None:
    """A 500 whose code is invalid_request is a BadRequestError, sent once."""
    body = {"error": {"message": "bad field", "type": "invalid_request_error", "code": "invalid_request"}}
    with pytest.raises(BadRequestError):
        await fetch_after(server, client, Fault(500, body), times=5)
    assert sum(server.requests.values()) == 1


async def test_get_task_failed_envelope_is_retried(server: FakeSoraServer, client: SoraClient) -> None:
    """HTTP 200 with code get_task_failed is a transient ServerError: retried."""
    task_id, _ = await fetch_after(
        server, client, Fault(200, {"code": "get_task_failed", "message": "x", "data": None})
    )
    assert server.polls(task_id) == 2


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            401,
            {
                "error": {
                    "message": "Invalid token (request id: 2025X)",
                    "type": "comet_api_error",
                    "code": "",
                }
            },
            AuthenticationError,
        ),
        (
            403,
            {"code": "quota_not_enough", "message": "quota not enough", "data": None},
            PermissionDeniedError,
        ),
        (400, {"code": "task_not_exist", "message": "task_not_exist", "data": None}, TaskNotFoundError),
        (200, {"code": "invalid_request", "message": "bad id", "data": None}, BadRequestError),
    ],
)
async def test_refusals_are_not_retried(
    server: FakeSoraServer, client: SoraClient, status: int, body: dict[str, Any], error: type[APIError]
) -> None:
    """401, 403 quota_not_enough, 400 task_not_exist and error envelopes raise at once, sent once."""
    with Timer() as timer, pytest.raises(error) as caught:
        await fetch_after(server, client, Fault(status, body), times=5)
    assert sum(server.requests.values()) == 1
    assert not caught.value.retryable
    assert timer.elapsed < 1.0


async def test_redirect_to_html_is_not_followed(server: FakeSoraServer, client: SoraClient) -> None:
    """A 301 to another path is reported, not followed: the HTML page is never fetched."""
    with pytest.raises(APIError, match="redirect"):
        await fetch_after(server, client, Fault.redirect("/_fake/moved.html"), times=5)
    assert sum(server.requests.values()) == 1
    assert not [r for r in server.recorded if r.path.startswith("/_fake/moved")]


async def test_redirect_to_other_host_gets_nothing(server: FakeSoraServer, client: SoraClient) -> None:
    """A redirect to another host is not followed, so that host never sees the key."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="gotcha")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        with pytest.raises(APIError, match="redirect"):
            await fetch_after(server, client, Fault.redirect(f"http://{host}:{port}/steal", status=302))
    finally:
        await runner.cleanup()
    assert len(seen) == 0


# --- broken transport -----------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.reset(), Fault.reset_mid_body(), Fault.truncated()], ids=str)
async def test_broken_connections_are_retried(
    server: FakeSoraServer, client: SoraClient, fault: Fault
) -> None:
    """A reset before headers, a reset mid-body, and a truncated body are retried, then succeed."""
    with Timer() as timer:
        task_id, task = await fetch_after(server, client, fault)
    assert task.status is TaskStatus.IN_PROGRESS
    assert server.polls(task_id) == 2
    assert timer.elapsed < 2.0


async def test_broken_connections_persisting_raise(server: FakeSoraServer, client: SoraClient) -> None:
    """Resets that never stop end in APIConnectionError after 1 + max_retries attempts.

    aiohttp itself resends an idempotent request once when the server drops
    the connection, so each of the 3 attempts reaches the server twice.
    """
    with pytest.raises(APIConnectionError):
        await fetch_after(server, client, Fault.reset(), times=100)
    assert sum(server.requests.values()) == 6


@pytest.mark.parametrize("fault", [Fault.stalled(), Fault(200, {}, delay=5.0)], ids=["stall", "delay"])
async def test_stalls_and_delays_time_out(server: FakeSoraServer, client: SoraClient, fault: Fault) -> None:
    """A body that stalls, or an answer delayed past the timeout, raises APITimeoutError per attempt."""
    with Timer() as timer, pytest.raises(APITimeoutError):
        await fetch_after(server, client, fault, times=100)
    assert sum(server.requests.values()) == 3
    assert timer.elapsed < 3 * 0.5 + 1.0  # three attempts of 0.5 s, plus backoff


async def test_stall_once_then_success(server: FakeSoraServer, client: SoraClient) -> None:
    """One stalled answer costs one timeout, then the retry succeeds."""
    with Timer() as timer:
        task_id, _ = await fetch_after(server, client, Fault.stalled())
    assert server.polls(task_id) == 2
    assert 0.5 <= timer.elapsed < 2.0


# --- bad bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": "success", "data": {',
        b"[1, 2, 3]",
        b'{"code": "success", "message": "", "data": null}',
        b'{"code": "success", "data": {"task_id": 42, "status": ["SUCCESS"]}}',
        b"\xff\xfe\x00garbage",
    ],
    ids=["malformed", "list", "null-data", "wrong-types", "binary"],
)
async def test_bad_bodies_are_decode_errors(server: FakeSoraServer, client: SoraClient, body: bytes) -> None:
    """Malformed JSON and JSON of the wrong shape raise ResponseDecodeError, not retried."""
    with pytest.raises(ResponseDecodeError):
        await fetch_after(server, client, Fault(200, body), times=5)
    assert sum(server.requests.values()) == 1


async def test_unknown_status_and_garbage_progress(server: FakeSoraServer, client: SoraClient) -> None:
    """Unknown statuses and garbage progress decode, do not end a wait, and the wait finishes."""
    task_id = server.add_task(timeline=[("WEIRD", "???"), ("NEW_THING", ""), ("SUCCESS", "100%")])
    seen = [(t.status, t.percent) async for t in client.watch(task_id)]
    assert seen == [(TaskStatus.UNKNOWN, None), (TaskStatus.UNKNOWN, None), (TaskStatus.SUCCESS, 100.0)]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_is_refused_without_buffering(server: FakeSoraServer, chunked: bool) -> None:
    """A 50 MB answer raises ResponseDecodeError, is not retried, and is not read to the end."""
    async with SoraClient(KEY, base_url=server.url, max_response_bytes=1_000_000, retry=QUICK) as c:
        task_id = server.add_task()
        server.inject(Fault.oversized(chunked=chunked), task_id=task_id, times=5)
        with Timer() as timer, pytest.raises(ResponseDecodeError, match="limit"):
            await c.get_task(task_id)
    assert server.polls(task_id) == 1
    assert timer.elapsed < 5.0


# --- waits ----------------------------------------------------------------------------


async def test_wait_outlasts_a_run_of_transient_errors(server: FakeSoraServer, client: SoraClient) -> None:
    """More consecutive 503s than max_retries do not end a wait; it polls on until SUCCESS."""
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")])
    server.inject(Fault.server_error(503), task_id=task_id, times=7)
    task = await client.wait_until_done(task_id, timeout=10)
    assert task.status is TaskStatus.SUCCESS
    assert server.polls(task_id) == 9


async def test_wait_ends_at_deadline_when_errors_never_stop(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """A wait against a failing server ends at its deadline with WaitTimeoutError from the last error."""
    task_id = server.add_task()
    server.inject(Fault.server_error(502), task_id=task_id, times=10_000)
    with Timer() as timer, pytest.raises(WaitTimeoutError) as caught:
        await client.wait_until_done(task_id, timeout=1.0)
    # The last error is the 502, or the timeout of a request cut short by the deadline.
    assert isinstance(caught.value.__cause__, ServerError | APITimeoutError)
    assert timer.elapsed < 1.0 + 1.0
