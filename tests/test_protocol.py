"""Tier 1: request building, error mapping and Retry-After, without an event loop."""

from __future__ import annotations

import ast
import json
import pathlib

import pytest

from sora_async import (
    Action,
    APIError,
    AuthenticationError,
    BadRequestError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    TaskNotFoundError,
)
from sora_async._protocol import (
    build_create_body,
    create_rejected_unprocessed,
    error_from_response,
    normalize_base_url,
    parse_create_response,
    parse_retry_after,
    parse_task_response,
    task_path,
)

PURE_MODULES = ["_protocol.py", "_policy.py", "_models.py", "_errors.py"]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_do_no_io(module: str) -> None:
    """The pure core imports neither aiohttp nor asyncio, so it runs without a loop or network."""
    source = (pathlib.Path(__file__).parent.parent / "sora_async" / module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"aiohttp", "asyncio", "anyio", "socket"}


# --- task ids and URLs -------------------------------------------------------


def test_task_path_quotes_the_id() -> None:
    """Ids are percent-quoted so they cannot add path segments or a query."""
    assert task_path("task_01jhjnz502ejqsm6r37km2q637") == "/sora/v1/videos/task_01jhjnz502ejqsm6r37km2q637"
    assert task_path("a/../b?x=1#f") == "/sora/v1/videos/a%2F..%2Fb%3Fx%3D1%23f"


@pytest.mark.parametrize("bad", ["", " ", "a b", "x" * 257, "..", ".", "tab\tid", "nl\n", "\x00"])
def test_task_path_rejects_absurd_ids(bad: str) -> None:
    """Empty, over-long, dot-segment and white-space ids are a ValueError."""
    with pytest.raises(ValueError, match="task_id"):
        task_path(bad)


def test_task_path_rejects_non_strings() -> None:
    """A non-string id is a TypeError, not a request for 'None'."""
    with pytest.raises(TypeError):
        task_path(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.cometapi.com", "https://api.cometapi.com"),
        ("https://api.cometapi.com/", "https://api.cometapi.com"),
        ("https://proxy.example/comet/", "https://proxy.example/comet"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_base_url_normalized(given: str, expected: str) -> None:
    """A trailing slash does not matter, and loopback may use plain http."""
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    "bad",
    ["http://api.cometapi.com", "ftp://x", "api.cometapi.com", "https://", "https://h/?q=1", "https://u:p@h"],
)
def test_base_url_refused(bad: str) -> None:
    """Clear-text http to a remote host, other schemes, queries and credentials are refused."""
    with pytest.raises(ValueError, match=r"base_url|clear text"):
        normalize_base_url(bad)


def test_insecure_http_needs_opt_in() -> None:
    """Plain http to a remote host works only with allow_insecure_http."""
    assert normalize_base_url("http://gw.internal/", allow_insecure_http=True) == "http://gw.internal"


# --- create bodies -------------------------------------------------------------


def test_create_body_has_defaults_and_drops_none() -> None:
    """The body carries the documented defaults; None leaves a field out."""
    body = json.loads(build_create_body("fly man", {"style": None}))
    assert body == {
        "prompt": "fly man",
        "model": "turbo",
        "type": "video_gen",
        "operation": "simple_compose",
        "width": 854,
        "height": 480,
        "n_frames": 150,
        "n_variants": 1,
    }


def test_create_body_typed_fields_and_extra_body() -> None:
    """Actions accept Structs or dicts, and extra_body passes unknown fields through."""
    body = json.loads(
        build_create_body(
            "p",
            {
                "width": 1280,
                "height": 720,
                "n_frames": 300,
                "actions": [Action(time=0, description="a"), {"time": 75, "description": "b"}],
                "inpaint_items": [{"type": "image", "url": "https://x/i.png", "frame_index": 0}],
                "notify_hook": "https://me.example/hook",
                "extra_body": {"seed": 7},
            },
        )
    )
    assert body["actions"] == [{"time": 0, "description": "a"}, {"time": 75, "description": "b"}]
    assert body["inpaint_items"][0]["frame_index"] == 0
    assert body["seed"] == 7
    assert (body["width"], body["height"], body["n_frames"]) == (1280, 720, 300)


@pytest.mark.parametrize(
    ("prompt", "options", "error"),
    [
        ("", {}, ValueError),
        ("   ", {}, ValueError),
        ("p", {"width": 0}, ValueError),
        ("p", {"n_frames": "150"}, ValueError),
        ("p", {"n_variants": True}, ValueError),
        ("p", {"width": 1280, "height": None}, ValueError),
        ("p", {"actions": [{"time": "soon"}]}, ValueError),
        ("p", {"actions": "not a list"}, ValueError),
        ("p", {"extra_body": {"prompt": "sneaky"}}, ValueError),
        ("p", {"colour": "red"}, TypeError),
    ],
)
def test_create_body_rejects_bad_input(
    prompt: str, options: dict[str, object], error: type[Exception]
) -> None:
    """Bad create input is a clear error before anything is sent."""
    with pytest.raises(error):
        build_create_body(prompt, options)


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":"success","message":"","data":"task_1"}',
        b'{"id":"task_1","task_id":"task_1","status":"queued"}',
        b'{"task_id":"task_1"}',
        b'{"id":"task_1"}',
        b'{"code":"success","data":{"task_id":"task_1"}}',
    ],
)
def test_create_response_shapes(body: bytes) -> None:
    """All documented create answers give the task id."""
    assert parse_create_response(200, {}, body) == "task_1"


@pytest.mark.parametrize("body", [b'{"code":"success","data":""}', b"{}", b"[1]", b"<html>", b""])
def test_create_response_without_id_is_decode_error(body: bytes) -> None:
    """A success answer that names no task is a ResponseDecodeError."""
    with pytest.raises(ResponseDecodeError):
        parse_create_response(200, {}, body)


def test_create_rejected_unprocessed_only_for_429_error_documents() -> None:
    """Only a 429 carrying an error document proves nothing was created."""
    assert create_rejected_unprocessed(429, b'{"error":{"message":"slow down","type":"x"}}')
    assert create_rejected_unprocessed(429, b'{"code":"rate_limit","message":"x","data":null}')
    assert not create_rejected_unprocessed(429, b"<html>busy</html>")
    assert not create_rejected_unprocessed(429, b'{"code":"success","data":"task_1"}')
    assert not create_rejected_unprocessed(500, b'{"error":{"message":"x"}}')


# --- error mapping -----------------------------------------------------------

OPENAI_401 = (
    b'{"error":{"message":"Invalid token (request id: 20250114abc)","type":"comet_api_error","code":""}}'
)


@pytest.mark.parametrize(
    ("status", "body", "cls", "retryable", "code"),
    [
        (
            400,
            b'{"code":"task_not_exist","message":"task_not_exist","data":null}',
            TaskNotFoundError,
            False,
            "task_not_exist",
        ),
        (
            400,
            b'{"code":"invalid_request","message":"bad","data":null}',
            BadRequestError,
            False,
            "invalid_request",
        ),
        (401, OPENAI_401, AuthenticationError, False, "comet_api_error"),
        (
            403,
            b'{"code":"quota_not_enough","message":"no quota","data":null}',
            PermissionDeniedError,
            False,
            "quota_not_enough",
        ),
        (404, b"<html>not found</html>", BadRequestError, False, None),
        (429, "\u8bf7\u6c42\u8fc7\u591a".encode(), RateLimitError, True, None),
        (
            500,
            b'{"code":"get_task_failed","message":"upstream","data":null}',
            ServerError,
            True,
            "get_task_failed",
        ),
        (
            500,
            b'{"error":{"message":"bad params","type":"x","code":"invalid_request"}}',
            BadRequestError,
            False,
            "invalid_request",
        ),
        (502, b"<html>Bad Gateway</html>", ServerError, True, None),
        (503, b"", ServerError, True, None),
        (504, b"", ServerError, True, None),
        (524, b"", ServerError, True, None),
        (501, b"", ServerError, False, None),
        (301, b"<html>moved</html>", APIError, False, None),
        (
            200,
            b'{"code":"fail_to_fetch_task","message":"try later","data":null}',
            ServerError,
            True,
            "fail_to_fetch_task",
        ),
    ],
)
def test_error_mapping(
    status: int, body: bytes, cls: type[APIError], retryable: bool, code: str | None
) -> None:
    """Each status and code maps to its error class, with the right retryability."""
    with pytest.raises(cls) as caught:
        parse_task_response(status, {"Content-Type": "text/html"}, body)
    error = caught.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.retryable is retryable
    assert error.code == code


def test_openai_error_carries_request_id() -> None:
    """The request id inside an OpenAI-style message is extracted."""
    error = error_from_response(401, {}, OPENAI_401)
    assert error.request_id == "20250114abc"
    assert "Invalid token" in error.message


def test_request_id_header_wins() -> None:
    """A request id header is used when present, in any case."""
    error = error_from_response(500, {"x-request-id": "hdr-1"}, b"")
    assert error.request_id == "hdr-1"


def test_rate_limit_reads_retry_after() -> None:
    """A 429 carries the Retry-After seconds."""
    error = error_from_response(429, {"retry-after": "7"}, b"{}")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7.0


def test_error_message_scrubs_secret_and_is_clipped() -> None:
    """A server that echoes the key does not get it into the message; long bodies are clipped."""
    body = json.dumps({"error": {"message": "bad key sk-SECRET " + "x" * 5000}}).encode()
    error = error_from_response(401, {}, body, secret="sk-SECRET")
    assert "sk-SECRET" not in str(error)
    assert "sk-SECRET" not in repr(error)
    assert len(error.message) <= 300


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"null",
        b'{"code":"success","data":null}',
        b'{"code":"success","data":{"status":1}}',
    ],
)
def test_bad_task_bodies_are_decode_errors(body: bytes) -> None:
    """A 200 whose body is not a task envelope raises ResponseDecodeError."""
    with pytest.raises(ResponseDecodeError):
        parse_task_response(200, {}, body)


def test_200_with_error_code_and_odd_data_is_api_error() -> None:
    """An error envelope with HTTP 200 is an APIError even when data has an odd type."""
    with pytest.raises(TaskNotFoundError):
        parse_task_response(200, {}, b'{"code":"task_not_exist","message":"gone","data":"x"}')


# --- Retry-After --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("1.5", 1.5),
        (" 10 ", 10.0),
        ("0", None),
        ("0.0", None),
        ("-1", None),
        ("-0", None),
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("1e400", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("soon", None),
        # The three date forms of RFC 9110, section 5.6.7.
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 30.0),
        ("Wed Oct 21 07:28:00 2015", 30.0),
        ("Wed Oct  7 07:28:00 2015", None),  # asctime's space-padded day, in the past
        ("Wed, 21 Oct 2015 07:28:00", 30.0),  # no zone: read as GMT, like asctime
        ("Wed, 21 Oct 2015 07:27:00 GMT", None),  # passed: no hint
        ("Thu, 01 Jan 1970 00:00:00 GMT", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799.0 - 1445412450.0),  # capped by the budget, not here
        ("Wed, 32 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After reads delta-seconds and all three HTTP-date forms; zero, past and garbage give None."""
    now = 1445412450.0  # 2015-10-21 07:27:30 GMT
    assert parse_retry_after(value, now=now) == expected
