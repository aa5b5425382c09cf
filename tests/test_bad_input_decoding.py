"""Answers of unexpected shape: nulls read as empty values, wrong shapes say what did not fit.

Tier 1 for the decode messages, tier 3 (the fake server on loopback) for a
wait that meets nulls and malformed answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sora_async import (
    APIError,
    BadRequestError,
    PollPolicy,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    SoraClient,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    WaitTimeoutError,
)
from sora_async._protocol import error_from_response, parse_create_response, parse_task_response
from sora_async.testing import FakeSoraServer, Fault

KEY = "sk-bad-input-7c3a"
JSON = {"Content-Type": "application/json; charset=utf-8"}

# --- what a wrong shape says ------------------------------------------------------

# (body, the first field that did not fit, as msgspec words it)
TASK_SHAPES = [
    (b"{}", "Object missing required field `code`"),
    (b"[]", "Expected `object`, got `array`"),
    (b'"x"', "Expected `object`, got `str`"),
    (b"123", "Expected `object`, got `int`"),
    (b"null", "Expected `object`, got `null`"),
    (b'{"code":"success"}', "Object missing required field `data`"),
    (b'{"code":"success","data":null}', "Expected `object`, got `null` - at `$.data`"),
    (b'{"code":"success","data":{}}', "Object missing required field `task_id` - at `$.data`"),
    (b'{"code":"success","data":[]}', "got `array` - at `$.data`"),
    (b'{"code":"success","data":{"task_id":"t","status":5}}', "got `int` - at `$.data.status`"),
    (b'{"code":null,"data":{"task_id":"t"}}', 'Expected `"success"`, got `null` - at `$.code`'),
    (b'{"code":"","data":{"task_id":"t"}}', "Expected `\"success\"`, got `''` - at `$.code`"),
]
CREATE_SHAPES = [
    (b"{}", "no task id"),
    (b"[]", "Expected `object`, got `array`"),
    (b'"x"', "Expected `object`, got `str`"),
    (b"123", "Expected `object`, got `int`"),
    (b"null", "Expected `object`, got `null`"),
    (b'{"code":"success"}', "no task id"),
    (b'{"code":"success","data":null}', "no task id"),
    (b'{"code":"success","data":{}}', "no task id"),
    (b'{"code":"success","data":[]}', "got `array` - at `$.data`"),
    (b'{"code":"success","data":7}', "got `int` - at `$.data`"),
    (b'{"code":"success","id":7}', "got `int` - at `$.id`"),
]
NOT_JSON = [b"<html>busy</html>", b'{"code": "success", "data": {', b"\xff\xfe\x00", b"[1, 2", b""]


@pytest.mark.parametrize(("body", "detail"), TASK_SHAPES)
def test_task_answer_of_wrong_shape_says_what_came(body: bytes, detail: str) -> None:
    """A 200 task answer that is JSON of another shape names the content type, size and first misfit."""
    with pytest.raises(ResponseDecodeError) as caught:
        parse_task_response(200, JSON, body)
    message = str(caught.value)
    assert detail in message
    assert f"(application/json; charset=utf-8, {len(body)} bytes)" in message
    assert '"code": "success"' in message  # what was expected
    assert "not JSON" not in message


@pytest.mark.parametrize(("body", "detail"), CREATE_SHAPES)
def test_create_answer_of_wrong_shape_says_what_came(body: bytes, detail: str) -> None:
    """A 200 create answer that is JSON of another shape names the content type, size and first misfit."""
    with pytest.raises(ResponseDecodeError) as caught:
        parse_create_response(200, JSON, body)
    message = str(caught.value)
    assert detail in message
    assert f"(application/json; charset=utf-8, {len(body)} bytes)" in message
    assert '"task_id"' in message  # what was expected
    assert "not JSON" not in message


@pytest.mark.parametrize("parse", [parse_task_response, parse_create_response])
@pytest.mark.parametrize("body", NOT_JSON)
def test_answer_that_is_not_json_says_so(parse: Any, body: bytes) -> None:
    """A 200 answer that is not JSON says "not JSON", with its content type and size."""
    with pytest.raises(ResponseDecodeError) as caught:
        parse(200, {"Content-Type": "text/html"}, body)
    message = str(caught.value)
    assert "not JSON" in message
    assert f"(text/html, {len(body)} bytes)" in message


def test_answer_without_content_type_says_so() -> None:
    """An answer with no Content-Type header says so instead of naming one."""
    with pytest.raises(ResponseDecodeError, match=r"\(no content type, 2 bytes\)"):
        parse_task_response(200, {}, b"[]")


@pytest.mark.parametrize("parse", [parse_task_response, parse_create_response])
def test_deeply_nested_answer_is_a_decode_error(parse: Any) -> None:
    """JSON nested deeper than msgspec reads is a ResponseDecodeError, not a RecursionError."""
    body = b'{"code":"success","data":{"task_id":"t","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(ResponseDecodeError, match="nested too deeply"):
        parse(200, JSON, body)
    assert type(error_from_response(502, JSON, body)) is ServerError


@pytest.mark.parametrize(
    ("status", "body", "cls", "says"),
    [
        (400, b"{}", BadRequestError, "HTTP 400 with a JSON body with no error message"),
        (502, b"[]", ServerError, "HTTP 502 with a JSON body with no error message"),
        (404, b"<html>no</html>", BadRequestError, "HTTP 404 with a non-JSON body"),
        (503, b"", ServerError, "HTTP 503 with an empty body"),
        (400, b'{"code":"task_not_exist","message":null,"data":null}', TaskNotFoundError, "HTTP 400"),
        (200, b'{"code":"task_not_exist","message":"gone"}', TaskNotFoundError, "gone"),
        (200, b'{"code":"fail_to_fetch_task","message":"later","data":{}}', ServerError, "later"),
        (200, b'{"code":"other_error","data":null}', APIError, "HTTP 200 with a JSON body"),
        (200, b'{"error":{"message":"odd"},"data":null}', APIError, "odd"),
    ],
)
def test_error_bodies_keep_their_classification(
    status: int, body: bytes, cls: type[APIError], says: str
) -> None:
    """Error answers stay APIErrors of their class, whatever the shape of the rest of the body."""
    for parse in (parse_task_response, parse_create_response):
        with pytest.raises(APIError) as caught:
            parse(status, JSON, body)
        assert type(caught.value) is cls
        assert says in caught.value.message


# --- end to end: a wait meets nulls and malformed answers ----------------------------------

FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
QUICK = RetryPolicy(initial_delay=0.01, max_delay=0.05)


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeSoraServer) -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url=server.url, retry=QUICK, poll=FAST_POLL, timeout=2.0) as c:
        yield c


def answer(task_id: str, **fields: Any) -> Fault:
    """A 200 task answer whose task object is `fields` (nulls included) around `task_id`."""
    return Fault(200, {"code": "success", "message": None, "data": {"task_id": task_id, **fields}})


NULLS = dict.fromkeys(
    ["progress", "submit_time", "start_time", "finish_time", "action", "notify_hook", "data"]
)


async def test_failure_with_null_reason_ends_the_wait_as_task_failed(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """A FAILURE with "fail_reason": null (and nulls all around) raises TaskFailedError from the wait."""
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("IN_PROGRESS", "30%")])
    server.inject(answer(task_id, status=None, fail_reason=None, **NULLS), task_id=task_id)
    server.inject(answer(task_id, status="FAILURE", fail_reason=None, **NULLS), task_id=task_id)
    with pytest.raises(TaskFailedError) as caught:
        await client.wait_until_done(task_id, timeout=5)
    assert caught.value.task.status is TaskStatus.FAILURE
    assert caught.value.fail_reason == ""
    assert "no reason given" in str(caught.value)
    assert server.polls(task_id) == 2


async def test_success_with_null_generations_has_no_url(server: FakeSoraServer, client: SoraClient) -> None:
    """A SUCCESS whose data.generations is null ends the wait; video_url is None and generations []."""
    task_id = server.add_task()
    server.inject(
        answer(task_id, status="SUCCESS", progress="100%", data={"status": "succeeded", "generations": None}),
        task_id=task_id,
    )
    task = await client.wait_until_done(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCESS
    assert task.video_url is None
    assert task.video is not None
    assert task.video.generations == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(200, {}),
        Fault(200, {"code": "success", "data": {"task_id": None}}),
        Fault.malformed(),
        Fault(200, "<html>maintenance</html>", content_type="text/html"),
    ],
    ids=["empty-object", "null-task-id", "truncated-json", "html"],
)
async def test_wait_retries_through_malformed_answers(
    server: FakeSoraServer, client: SoraClient, fault: Fault
) -> None:
    """Three malformed 200 answers during a wait are retried with backoff; the wait then succeeds."""
    task_id = server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")])
    server.inject(fault, task_id=task_id, times=3)
    task = await client.wait_until_done(task_id, timeout=5)
    assert task.status is TaskStatus.SUCCESS
    assert server.polls(task_id) == 5
    server.inject(fault, task_id=task_id)
    with pytest.raises(ResponseDecodeError):  # a single get_task still raises at once
        await client.get_task(task_id)


async def test_wait_on_malformed_answers_times_out_with_the_decode_error(
    server: FakeSoraServer, client: SoraClient
) -> None:
    """A wait that only gets malformed answers ends at its deadline, caused by the last decode error."""
    task_id = server.add_task()
    server.inject(Fault(200, {"code": "success", "data": None}), task_id=task_id, times=10_000)
    with pytest.raises(WaitTimeoutError) as caught:
        await client.wait_until_done(task_id, timeout=0.5)
    assert isinstance(caught.value.__cause__, ResponseDecodeError)
    assert "$.data" in str(caught.value.__cause__)
    assert server.polls(task_id) > 1


def test_recorded_answer_with_null_task_fields_decodes(success_body: bytes) -> None:
    """The recorded answer with its task fields nulled still decodes, keeping the nested payload."""
    document = json.loads(success_body)
    for name in ("fail_reason", "notify_hook", "progress", "start_time"):
        document["data"][name] = None
    task = parse_task_response(200, JSON, json.dumps(document).encode())
    assert task.status is TaskStatus.SUCCESS
    assert (task.fail_reason, task.notify_hook, task.progress, task.start_time) == ("", "", "", 0)
    assert task.video_url is not None
