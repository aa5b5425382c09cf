"""Secret hygiene: the whole fault matrix with a distinctive key, and the key never leaks."""

from __future__ import annotations

import json
import logging
import pathlib

import pytest

from sora_async import (
    APIError,
    PollPolicy,
    ResponseDecodeError,
    RetryPolicy,
    SoraClient,
    SoraError,
    TaskNotFoundError,
)
from sora_async._protocol import KNOWN_ERROR_CODES, MIN_SECRET_LENGTH, error_from_response
from sora_async.testing import FakeSoraServer, Fault

KEY = "sk-DISTINCTIVE-9f8e7d6c5b4a"

FAULTS = [
    Fault.rate_limited(retry_after="0"),
    Fault.rate_limited(retry_after=None),
    Fault(500, {"error": {"message": f"echo {KEY}", "type": "x", "code": "invalid_request"}}),
    Fault.server_error(502),
    Fault(503, None),
    Fault(524, "<html>timeout</html>", content_type="text/html"),
    Fault(401, {"error": {"message": f"Invalid token {KEY} (request id: r1)", "type": "t", "code": KEY}}),
    Fault(403, {"code": "quota_not_enough", "message": f"no quota for {KEY}", "data": None}),
    Fault(400, {"code": "task_not_exist", "message": "task_not_exist", "data": None}),
    Fault.redirect("/_fake/moved.html"),
    Fault.reset(),
    Fault.reset_mid_body(),
    Fault.truncated(),
    Fault.stalled(),
    Fault(200, b'{"code": "success", "data": {'),
    Fault(200, [1, 2]),
    Fault(200, {"code": "fail_to_fetch_task", "message": KEY, "data": None}),
    Fault.oversized(3_000_000),
]


def exception_texts(error: BaseException) -> list[str]:
    texts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        current = current.__cause__ or current.__context__
    return texts


async def test_key_never_leaks_through_the_fault_matrix(
    caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    """No log record, exception (with its causes), repr, or request to another host carries the key."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with FakeSoraServer(api_key=KEY) as server:
        async with SoraClient(
            KEY,
            base_url=server.url,
            timeout=0.3,
            max_retries=1,
            max_response_bytes=1_000_000,
            retry=RetryPolicy(0.001, 0.01),
            poll=PollPolicy(0.01, 0.02),
        ) as client:
            texts.append(repr(client))
            for fault in FAULTS:
                task_id = server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")])
                server.inject(fault, task_id=task_id, times=2)
                server.inject(fault, route="create")
                for call in (client.get_task(task_id), client.wait_until_done(task_id, timeout=2)):
                    try:
                        await call
                    except SoraError as exc:
                        texts += exception_texts(exc)
                try:
                    await client.create_video("x", extra_body={"seed": 1})
                except SoraError as exc:
                    texts += exception_texts(exc)
            done = server.add_task(timeline=[("SUCCESS", "100%")])
            await client.download(done, tmp_path)
            texts.append(repr(client))
        foreign = [r for r in server.recorded if not r.path.startswith("/sora/")]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    assert len(texts) > 60
    assert len([text for text in texts if KEY in text]) == 0
    assert foreign  # the video host was really asked
    assert sum(KEY in value for r in foreign for value in r.headers.values()) == 0


# --- short keys: classification does not depend on the key -----------------------------------

# Statuses and body shapes an error arrives in; every code the parser knows is tried in each.
ERROR_STATUSES = [200, 400, 401, 403, 404, 429, 500, 502]
CONTENT_TYPES = ["text/plain", "application/json"]


def error_bodies(code: str) -> list[bytes]:
    """The gateway's envelope and the OpenAI-style document, both carrying `code`."""
    return [
        json.dumps({"code": code, "message": code, "data": None}).encode(),
        json.dumps(
            {"error": {"message": f"{code} (request id: req-{code})", "type": "t", "code": code}}
        ).encode(),
    ]


def keys_of_length(length: int, code: str) -> set[str]:
    """Keys most likely to collide with what is classified: slices of the code and the content types."""
    sources = [code, *CONTENT_TYPES, "request id", "success", "0123456789"]
    return {
        source[start : start + length]
        for source in sources
        for start in (0, 1)
        if len(source) >= start + length
    }


def classification(error: APIError) -> tuple[object, ...]:
    return (type(error), error.retryable, error.status_code)


@pytest.mark.parametrize("length", range(1, 13))
@pytest.mark.parametrize("code", sorted(KNOWN_ERROR_CODES))
def test_classification_is_the_same_with_any_key(code: str, length: int) -> None:
    """For keys of 1 to 12 characters, every known code is classified as with no key; codes stay intact."""
    for status in ERROR_STATUSES:
        for content_type in CONTENT_TYPES:
            headers = {"Content-Type": content_type}
            for body in error_bodies(code):
                plain = error_from_response(status, headers, body)
                assert plain.code == code
                for key in keys_of_length(length, code):
                    error = error_from_response(status, headers, body, secret=key)
                    assert classification(error) == classification(plain), (status, body, key)
                    if length < MIN_SECRET_LENGTH:
                        assert (error.code, error.message, error.request_id) == (
                            plain.code,
                            plain.message,
                            plain.request_id,
                        ), key
                    else:  # (the SDK's own words around it, as in str(), may contain a key this short)
                        assert key not in error.message


@pytest.mark.parametrize("key", ["t", "te", "tas", "e", "task_no"])
async def test_short_key_end_to_end_keeps_task_not_found(key: str) -> None:
    """Through the client and the fake server, a short key leaves task_not_exist a TaskNotFoundError."""
    async with FakeSoraServer(api_key=key) as server, SoraClient(key, base_url=server.url) as client:
        server.inject(Fault(400, {"code": "task_not_exist", "message": "task_not_exist", "data": None}))
        with pytest.raises(TaskNotFoundError) as caught:
            await client.get_task("task_missing")
        assert caught.value.code == "task_not_exist"
        assert caught.value.message == "task_not_exist"
        server.inject(Fault(200, b"<html>", content_type="text/plain"))
        with pytest.raises(ResponseDecodeError, match="text/plain"):
            await client.get_task("task_missing")
