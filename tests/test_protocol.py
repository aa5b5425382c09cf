"""Tier 1: request building, error mapping and Retry-After, without an event loop."""

from __future__ import annotations

import ast
import json
import pathlib

import msgspec
import pytest

from sora_async import (
    Action,
    APIError,
    AuthenticationError,
    BadRequestError,
    ModelNotAvailableError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    Task,
    TaskNotFoundError,
    TaskStatus,
    VideoNotReadyError,
)
from sora_async._protocol import (
    MIN_SECRET_LENGTH,
    _TaskWire,
    build_create_body,
    clip,
    create_rejected_unprocessed,
    error_from_response,
    normalize_base_url,
    parse_create_response,
    parse_retry_after,
    parse_task_response,
    task_path,
)

from .conftest import envelope

PURE_MODULES = ["_protocol.py", "_videos_protocol.py", "_policy.py", "_models.py", "_errors.py"]


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


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"code":"task_not_exist","message":"task_not_exist","data":null}', "task_not_exist (HTTP 400)"),
        (
            b'{"code":"task_not_exist","message":"no such task","data":null}',
            "no such task (HTTP 400, code=task_not_exist)",
        ),
    ],
)
def test_an_error_says_its_code_once(body: bytes, expected: str) -> None:
    """The gateway's 400 may give the code as the message too: it is printed once."""
    assert str(error_from_response(400, {}, body)) == expected


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


# --- null in the task object ------------------------------------------------------

FULL_TASK: dict[str, object] = {
    "task_id": "task_01abc",
    "status": "FAILURE",
    "progress": "100%",
    "fail_reason": "moderation",
    "submit_time": 1736867805,
    "start_time": 1736867806,
    "finish_time": 1736867860,
    "action": "sora-video",
    "notify_hook": "https://me.example/hook",
    "data": {"id": "v"},
}
OPTIONAL_TASK_FIELDS = [name for name in _TaskWire.__struct_fields__ if name != "task_id"]


def test_full_task_sets_every_wire_field() -> None:
    """The base object of the null tests gives every wire field a value other than its default."""
    assert set(FULL_TASK) == set(_TaskWire.__struct_fields__)
    task = parse_task_response(200, {}, json.dumps({"code": "success", "data": FULL_TASK}).encode())
    empty = Task(task_id="", status=TaskStatus.UNKNOWN)
    for name in OPTIONAL_TASK_FIELDS:
        field = "raw_status" if name == "status" else name
        assert getattr(task, field) != getattr(empty, field), name


@pytest.mark.parametrize("name", OPTIONAL_TASK_FIELDS)
def test_null_in_any_task_field_reads_as_empty(name: str) -> None:
    """null in any optional field of the task object reads as "" or 0 (data: no nested object)."""
    task_object = {**FULL_TASK, name: None}
    task = parse_task_response(200, {}, json.dumps({"code": "success", "data": task_object}).encode())
    field = "raw_status" if name == "status" else name
    default = next(f.default for f in msgspec.structs.fields(Task) if f.name == field)
    assert getattr(task, field) == default
    assert type(getattr(task, field)) is type(default)
    for other in OPTIONAL_TASK_FIELDS:  # the other fields are untouched
        if other not in (name, "status", "data"):
            assert getattr(task, other) == FULL_TASK[other]
    if name == "status":
        assert task.status is TaskStatus.UNKNOWN
        assert not task.is_terminal


def test_null_everywhere_still_gives_a_task() -> None:
    """A task object whose optional fields are all null decodes, with every field empty."""
    task_object = dict.fromkeys(OPTIONAL_TASK_FIELDS) | {"task_id": "t1"}
    body = json.dumps({"code": "success", "message": None, "data": task_object}).encode()
    assert parse_task_response(200, {}, body) == Task(task_id="t1", status=TaskStatus.UNKNOWN)


def test_failure_with_null_reason_is_a_failure() -> None:
    """A FAILURE with "fail_reason": null decodes as a final FAILURE with an empty reason."""
    task = parse_task_response(200, {}, envelope(status="FAILURE", fail_reason=None, progress=None))
    assert task.status is TaskStatus.FAILURE
    assert task.is_terminal
    assert task.fail_reason == ""
    assert task.percent is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"code":"success","data":{"task_id":null,"status":"SUCCESS"}}', "$.data.task_id"),
        (b'{"code":"success","data":{"status":"SUCCESS"}}', "missing required field `task_id`"),
        (b'{"code":"success","data":{"task_id":7}}', "$.data.task_id"),
    ],
)
def test_task_id_null_or_missing_is_a_decode_error(body: bytes, where: str) -> None:
    """A success answer whose task_id is null, missing or not a string is a ResponseDecodeError."""
    with pytest.raises(ResponseDecodeError) as caught:
        parse_task_response(200, {}, body)
    assert where in str(caught.value)


CREATE_NULLS = [
    (b'{"code":"success","message":null,"data":"task_1"}', "task_1"),
    (b'{"code":null,"data":"task_1"}', "task_1"),
    (b'{"code":"success","data":{"task_id":null,"id":"task_1"}}', "task_1"),
    (b'{"id":null,"task_id":"task_1","data":null}', "task_1"),
    (b'{"id":"task_1","task_id":null,"message":null}', "task_1"),
]


@pytest.mark.parametrize(("body", "task_id"), CREATE_NULLS)
def test_create_answer_nulls_count_as_absent(body: bytes, task_id: str) -> None:
    """null in any field of a create answer counts as absent; the id is found where it is given."""
    assert parse_create_response(200, {}, body) == task_id


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":"success","data":null}',
        b'{"code":"success","data":{"task_id":null,"id":null}}',
        b'{"id":null,"task_id":null}',
    ],
)
def test_create_answer_with_only_null_ids_is_a_decode_error(body: bytes) -> None:
    """A success create answer whose every id is null names no task: ResponseDecodeError."""
    with pytest.raises(ResponseDecodeError, match="no task id"):
        parse_create_response(200, {}, body)


# --- scrubbing the key after classification ---------------------------------------------


def test_short_secrets_are_not_scrubbed() -> None:
    """A secret shorter than MIN_SECRET_LENGTH leaves text alone; one of that length is replaced."""
    assert MIN_SECRET_LENGTH == 8
    assert clip("text/plain task_not_exist", "t") == "text/plain task_not_exist"
    assert clip("text/plain task_not_exist", "t" * 7) == "text/plain task_not_exist"
    assert clip("the key sk-abcde is bad", "sk-abcde") == "the key *** is bad"


def test_code_is_kept_and_classified_with_a_one_character_key() -> None:
    """With the key "t", task_not_exist stays TaskNotFoundError, code and message intact."""
    body = b'{"code":"task_not_exist","message":"task_not_exist","data":null}'
    error = error_from_response(400, {"Content-Type": "text/plain"}, body, secret="t")
    assert type(error) is TaskNotFoundError
    assert error.code == "task_not_exist"
    assert error.message == "task_not_exist"


def test_code_is_classified_before_a_long_key_is_scrubbed() -> None:
    """A key inside a known code does not change the class; the message loses the key."""
    body = b'{"code":"fail_to_fetch_task","message":"fail_to_fetch_task","data":null}'
    error = error_from_response(200, {}, body, secret="fail_to_fetch")
    assert type(error) is ServerError
    assert error.retryable
    assert "fail_to_fetch" not in error.message


def test_code_echoing_the_key_is_scrubbed_from_code_only_there() -> None:
    """A code that echoes the key (8+ characters) is kept but for the key; no text shows it."""
    key = "sk-0123456789"
    body = json.dumps({"error": {"message": f"bad {key}", "type": "t", "code": f"key_{key}"}}).encode()
    error = error_from_response(401, {"x-request-id": key}, body, secret=key)
    assert type(error) is AuthenticationError
    assert error.code == "key_***"
    assert key not in str(error)
    assert key not in repr(error)


def test_long_code_is_kept_exactly_up_to_the_limit() -> None:
    """The code attribute is the server's code as sent, spaces included, until it is too long to be one."""
    body = json.dumps({"code": "odd  code\tx", "message": "m", "data": None}).encode()
    assert error_from_response(400, {}, body).code == "odd  code\tx"
    long_body = json.dumps({"code": "c" * 1000, "message": "m", "data": None}).encode()
    code = error_from_response(400, {}, long_body).code
    assert code is not None
    assert len(code) == 300


@pytest.mark.parametrize(
    ("body", "cls", "code"),
    [
        (b'{"code":"task_not_exist","message":5,"data":null}', TaskNotFoundError, "task_not_exist"),
        (b'{"code":"task_not_exist","message":{"x":1}}', TaskNotFoundError, "task_not_exist"),
        (
            b'{"error":{"message":["x"],"type":"t","code":"invalid_request"}}',
            BadRequestError,
            "invalid_request",
        ),
        (b'{"error":{"message":"m","code":1234}}', BadRequestError, "1234"),
        (b'{"error":{"message":"m","code":true,"type":"x"}}', BadRequestError, "x"),
        (b'{"code":1e400}', BadRequestError, None),
    ],
)
def test_odd_fields_do_not_hide_the_code(body: bytes, cls: type[APIError], code: str | None) -> None:
    """A message or code of an odd type does not hide the code that chooses the class."""
    error = error_from_response(400, {}, body)
    assert type(error) is cls
    assert error.code == code


@pytest.mark.parametrize(
    ("sent", "progress", "percent"), [(b"50", "50%", 50.0), (b"12.5", "12.5%", 12.5), (b"0", "0%", 0.0)]
)
def test_a_bare_number_as_progress_means_percent(sent: bytes, progress: str, percent: float) -> None:
    """Some deployments send progress as a number (50); its meaning is clear, so it reads as "50%"."""
    body = b'{"code":"success","data":{"task_id":"task_1","status":"IN_PROGRESS","progress":%s}}' % sent
    task = parse_task_response(200, {}, body)
    assert task.progress == progress
    assert task.percent == percent


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, b'{"error": {"message": "No available channel for model sora-2", "code": "model_not_found"}}'),
        (503, b'{"error": {"message": "no available channel for model sora-2 under group default"}}'),
        (
            404,
            b'{"error": {"message": "The model `sora-2` does not exist", "type": "invalid_request_error"}}',
        ),
        (400, b'{"code": "model_not_found", "message": "sora-2", "data": null}'),
    ],
    ids=["code with a 503", "message without the code", "a 404 naming the model", "the envelope's code"],
)
def test_a_model_no_channel_serves_is_final_in_every_spelling(status: int, body: bytes) -> None:
    error = error_from_response(status, {}, body)
    assert type(error) is ModelNotAvailableError
    assert error.retryable is False


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            404,
            b'{"error": {"message": "Task not found", "type": "invalid_request_error"}}',
            TaskNotFoundError,
        ),
        (
            400,
            b'{"error": {"message": "Task is not completed yet, current status: QUEUED"}}',
            VideoNotReadyError,
        ),
        (404, b"<html>404 page not found</html>", BadRequestError),  # a 4xx the SDK has no class for
    ],
)
def test_the_openai_formats_messages_choose_their_class(
    status: int, body: bytes, cls: type[APIError]
) -> None:
    assert type(error_from_response(status, {}, body)) is cls
