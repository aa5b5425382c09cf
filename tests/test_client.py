"""Tier 2: the client against aioresponses: headers, URLs, error mapping and retries."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from sora_async import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    SoraClient,
    TaskNotFoundError,
    TaskStatus,
)

from .conftest import envelope

BASE = "https://api.test"
TASK_URL = f"{BASE}/sora/v1/videos/task_1"
CREATE_URL = f"{BASE}/sora/v1/videos"
KEY = "sk-test-0123456789"
NO_WAIT = RetryPolicy(initial_delay=0.001, max_delay=0.002)


class _NoUpload:
    """Stands in for the request's stream writer: the mock sent no bytes."""

    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 omits `stream_writer`, which aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); supply a writer for an already-sent request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoUpload())
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        monkeypatch.setattr("aioresponses.core.ClientResponse", _CompatResponse)
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url=BASE + "/", retry=NO_WAIT, max_retries=3) as c:
        yield c


def calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return list(m.requests.get((method, URL(url)), []))


async def test_get_task_sends_auth_and_parses(mocked: aioresponses, client: SoraClient) -> None:
    """get_task sends the bearer key and returns the decoded Task."""
    mocked.get(TASK_URL, body=envelope(task_id="task_1", status="QUEUED", progress="20%"))
    task = await client.get_task("task_1")
    assert task.status is TaskStatus.QUEUED
    assert task.percent == 20.0
    (call,) = calls(mocked, "GET", TASK_URL)
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"
    assert call.kwargs["headers"]["Accept"] == "application/json"
    assert call.kwargs["allow_redirects"] is False


async def test_task_id_is_quoted_in_the_url(mocked: aioresponses, client: SoraClient) -> None:
    """An id with reserved characters stays one path segment."""
    url = f"{BASE}/sora/v1/videos/a%2Fb%3Fc"
    mocked.get(URL(url, encoded=True), body=envelope(task_id="a/b?c"))
    task = await client.get_task("a/b?c")
    assert task.task_id == "a/b?c"
    ((_, sent),) = mocked.requests.keys()
    assert sent.raw_path == "/sora/v1/videos/a%2Fb%3Fc"
    assert not sent.query_string


async def test_invalid_task_id_sends_nothing(mocked: aioresponses, client: SoraClient) -> None:
    """An empty id is a ValueError and no request goes out."""
    with pytest.raises(ValueError, match="task_id"):
        await client.get_task("")
    assert not mocked.requests


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, {"code": "task_not_exist", "message": "task_not_exist", "data": None}, TaskNotFoundError),
        (400, {"code": "invalid_request", "message": "bad", "data": None}, BadRequestError),
        (
            401,
            {"error": {"message": "Invalid token (request id: r1)", "type": "x", "code": ""}},
            AuthenticationError,
        ),
        (403, {"code": "quota_not_enough", "message": "no quota", "data": None}, PermissionDeniedError),
        (500, {"error": {"message": "bad", "type": "x", "code": "invalid_request"}}, BadRequestError),
    ],
)
async def test_non_retryable_errors_map_and_are_sent_once(
    mocked: aioresponses, client: SoraClient, status: int, body: dict[str, Any], cls: type[Exception]
) -> None:
    """400, 401, 403 and 500 invalid_request raise their class after exactly one request."""
    mocked.get(TASK_URL, status=status, payload=body, repeat=True)
    with pytest.raises(cls):
        await client.get_task("task_1")
    assert len(calls(mocked, "GET", TASK_URL)) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 524])
async def test_retryable_statuses_are_retried_then_succeed(
    mocked: aioresponses, client: SoraClient, status: int
) -> None:
    """A transient status is retried and the next good answer is returned."""
    mocked.get(TASK_URL, status=status, body=b"")
    mocked.get(TASK_URL, body=envelope(task_id="task_1"))
    task = await client.get_task("task_1")
    assert task.task_id == "task_1"
    assert len(calls(mocked, "GET", TASK_URL)) == 2


async def test_retries_are_bounded_by_max_retries(mocked: aioresponses, client: SoraClient) -> None:
    """After max_retries resends the last error is raised: 1 + 3 requests in all."""
    mocked.get(TASK_URL, status=503, body=b"", repeat=True)
    with pytest.raises(ServerError) as caught:
        await client.get_task("task_1")
    assert caught.value.status_code == 503
    assert len(calls(mocked, "GET", TASK_URL)) == 4


async def test_connection_errors_and_timeouts_are_retried(mocked: aioresponses, client: SoraClient) -> None:
    """A reset and a timeout on a GET are resent."""
    mocked.get(TASK_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.get(TASK_URL, exception=asyncio.TimeoutError())
    mocked.get(TASK_URL, body=envelope(task_id="task_1"))
    assert (await client.get_task("task_1")).task_id == "task_1"
    assert len(calls(mocked, "GET", TASK_URL)) == 3


async def test_timeout_maps_to_api_timeout_error(mocked: aioresponses) -> None:
    """With no retries left, a timeout is an APITimeoutError (also a connection error)."""
    mocked.get(TASK_URL, exception=asyncio.TimeoutError(), repeat=True)
    async with SoraClient(KEY, base_url=BASE, max_retries=0) as c:
        with pytest.raises(APITimeoutError) as caught:
            await c.get_task("task_1")
    assert isinstance(caught.value, APIConnectionError)
    assert caught.value.retryable


async def test_rate_limit_retry_after_is_honoured(mocked: aioresponses) -> None:
    """After a 429 the retry waits at least Retry-After, not the much shorter backoff."""
    sent_at: list[float] = []

    def record(url: URL, **kwargs: Any) -> None:
        sent_at.append(time.monotonic())

    mocked.get(
        TASK_URL,
        status=429,
        payload={"error": {"message": "slow"}},
        headers={"Retry-After": "0.3"},
        callback=record,
    )
    mocked.get(TASK_URL, body=envelope(task_id="task_1"), callback=record)
    async with SoraClient(KEY, base_url=BASE, retry=NO_WAIT) as c:
        await c.get_task("task_1")
    assert len(sent_at) == 2
    assert sent_at[1] - sent_at[0] >= 0.3  # NO_WAIT alone would retry within 2 ms


async def test_rate_limit_error_carries_retry_after(mocked: aioresponses) -> None:
    """When retries run out, the RateLimitError says how long the server wants."""
    mocked.get(
        TASK_URL,
        status=429,
        payload={"error": {"message": "slow"}},
        headers={"Retry-After": "7"},
        repeat=True,
    )
    async with SoraClient(KEY, base_url=BASE, max_retries=0) as c:
        with pytest.raises(RateLimitError) as caught:
            await c.get_task("task_1")
    assert caught.value.retry_after == 7.0


async def test_oversized_body_is_refused(mocked: aioresponses) -> None:
    """A body over max_response_bytes raises ResponseDecodeError."""
    mocked.get(TASK_URL, body=b"x" * 2048)
    async with SoraClient(KEY, base_url=BASE, max_response_bytes=1024) as c:
        with pytest.raises(ResponseDecodeError, match="limit"):
            await c.get_task("task_1")


# --- create -------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"code": "success", "message": "", "data": "task_9"},
        {"id": "task_9", "task_id": "task_9"},
        {"code": "success", "data": {"task_id": "task_9"}},
    ],
)
async def test_create_accepts_every_answer_shape(
    mocked: aioresponses, client: SoraClient, answer: dict[str, Any]
) -> None:
    """create_video returns the id from each documented answer shape."""
    mocked.post(CREATE_URL, payload=answer)
    assert await client.create_video("fly man", n_frames=300) == "task_9"
    (call,) = calls(mocked, "POST", CREATE_URL)
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert json.loads(call.kwargs["data"])["n_frames"] == 300


@pytest.mark.parametrize(
    "failure",
    [
        {"exception": asyncio.TimeoutError()},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"status": 502, "body": b"<html>bad gateway</html>"},
        {"status": 500, "body": b""},
        {"status": 429, "body": b"<html>slow down</html>"},
    ],
)
async def test_create_is_not_resent_when_it_may_have_arrived(
    mocked: aioresponses, client: SoraClient, failure: dict[str, Any]
) -> None:
    """A create that timed out, was cut off or got a 5xx is raised, never resent."""
    mocked.post(CREATE_URL, **failure)
    mocked.post(CREATE_URL, payload={"code": "success", "data": "task_2"})
    with pytest.raises((APIConnectionError, ServerError, RateLimitError)):
        await client.create_video("fly man")
    assert len(calls(mocked, "POST", CREATE_URL)) == 1


async def test_create_resent_after_429_error_document(mocked: aioresponses, client: SoraClient) -> None:
    """A 429 with an error document proves nothing was created, so the create is resent."""
    mocked.post(CREATE_URL, status=429, payload={"error": {"message": "rate limited", "type": "x"}})
    mocked.post(CREATE_URL, payload={"code": "success", "data": "task_3"})
    assert await client.create_video("fly man") == "task_3"
    assert len(calls(mocked, "POST", CREATE_URL)) == 2


async def test_create_bad_options_send_nothing(mocked: aioresponses, client: SoraClient) -> None:
    """An invalid option raises before any request."""
    with pytest.raises(ValueError, match="width"):
        await client.create_video("p", width=-1)
    with pytest.raises(TypeError, match="extra_body"):
        await client.create_video("p", colour="red")  # type: ignore[call-arg]
    assert not mocked.requests


# --- construction ---------------------------------------------------------------


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key anywhere, the constructor says to set COMETAPI_KEY."""
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    with pytest.raises(ValueError, match="COMETAPI_KEY"):
        SoraClient()


def test_key_and_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """COMETAPI_KEY and COMETAPI_BASE_URL are read when no arguments are given."""
    monkeypatch.setenv("COMETAPI_KEY", KEY)
    monkeypatch.setenv("COMETAPI_BASE_URL", "https://gw.example/")
    client = SoraClient()
    assert client.base_url == "https://gw.example"
    monkeypatch.delenv("COMETAPI_BASE_URL")
    assert SoraClient().base_url == "https://api.cometapi.com"


def test_repr_hides_key() -> None:
    """The client's repr shows where it talks to, never the key."""
    text = repr(SoraClient(KEY, base_url=BASE))
    assert KEY not in text
    assert BASE in text


def test_plain_http_to_remote_host_refused() -> None:
    """The key will not travel in clear text unless the caller opts in."""
    with pytest.raises(ValueError, match="clear text"):
        SoraClient(KEY, base_url="http://api.cometapi.com")
    assert SoraClient(KEY, base_url="http://gw.lan", allow_insecure_http=True).base_url == "http://gw.lan"


async def test_callers_session_is_not_closed(mocked: aioresponses) -> None:
    """A session passed in stays open after the client closes; an owned one is closed."""
    mocked.get(TASK_URL, body=envelope(task_id="task_1"), repeat=True)
    async with aiohttp.ClientSession() as session:
        async with SoraClient(KEY, base_url=BASE, session=session) as c:
            await c.get_task("task_1")
        assert not session.closed
    owned = SoraClient(KEY, base_url=BASE)
    await owned.get_task("task_1")
    await owned.aclose()
    await owned.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await owned.get_task("task_1")
