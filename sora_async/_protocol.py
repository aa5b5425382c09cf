"""The wire protocol of the CometAPI Sora task API, without any I/O.

This module owns every decision that needs no network: validating and
quoting task ids, building request bodies and headers, turning a status
code, headers and body into a `Task`, a task id or the right `SoraError`,
and reading `Retry-After`. The aiohttp client only moves bytes.
"""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
import math
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, TypeVar

import msgspec

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InvalidTaskIdError,
    ModelNotAvailableError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    SoraError,
    TaskNotFoundError,
    VideoNotReadyError,
)
from ._models import Task, TaskStatus

DEFAULT_BASE_URL = "https://api.cometapi.com"
TASKS_PATH = "/sora/v1/videos"
MAX_TASK_ID_LENGTH = 256
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})
# Envelope codes that mean the gateway could not reach upstream this time.
_RETRYABLE_CODES = frozenset({"get_task_failed", "fail_to_fetch_task"})
_MESSAGE_LIMIT = 300
MIN_SECRET_LENGTH = 8
"""Secrets shorter than this many characters are not scrubbed from messages.

They cannot be keys worth hiding, and replacing every "t" or "e" would garble
every message (`task_not_exist` read as `tas***_not_exist`).
"""
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_TASKS_PREFIX = TASKS_PATH + "/"
_REQUEST_ID = re.compile(r"\(request id: ([^)\s]+)\)")
_REQUEST_ID_HEADERS = ("x-request-id", "x-oneapi-request-id")

_D = TypeVar("_D")

Operation = Literal["simple_compose", "storyboard", "remix", "blend"]


# --- requests --------------------------------------------------------------


def normalize_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """Check a base URL and return it without a trailing slash.

    Raises:
        ValueError: The URL is not http(s), has no host, has a port that is
            not 1 to 65535, carries credentials, a query or a fragment, or
            is plain http to a host that is not loopback while
            `allow_insecure_http` is False (the key would travel in clear).
    """
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query string or fragment")
    if parts.username or parts.password:
        raise ValueError("base_url must not carry credentials; pass api_key instead")
    port_text = parts.netloc.rpartition("]")[2].rpartition(":")[2] if ":" in parts.netloc else ""
    try:
        port = parts.port  # raises for a port that is not a number or not below 65536
    except ValueError:
        port = 0
    if port == 0 or not (port_text.isascii() and (port_text.isdigit() or not port_text)):
        raise ValueError(f"base_url has no usable port (1 to 65535), got {base_url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise ValueError(
            f"refusing to send the API key in clear text to {parts.hostname}: use https, "
            "or pass allow_insecure_http=True"
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (localhost or a loopback address)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_task_id(task_id: str) -> str:
    """Strip surrounding white space from a task id and check it.

    Returns:
        The id to send and to report, without surrounding white space.

    Raises:
        TypeError: `task_id` is not a str.
        InvalidTaskIdError: (a ValueError) The id is empty, longer than 256
            characters, "." or "..", or holds white space or characters
            that are not printable.
    """
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, got {type(task_id).__name__}")
    stripped = task_id.strip()
    task_path(stripped)
    return stripped


def task_path(task_id: str) -> str:
    """The quoted path of one task, after checking the id (see `normalize_task_id`).

    Raises:
        TypeError: `task_id` is not a str.
        InvalidTaskIdError: The id cannot be sent as it is.
    """
    if _PLAIN_ID.fullmatch(task_id) if isinstance(task_id, str) else False:
        return _TASKS_PREFIX + task_id  # the common case: nothing to check or quote
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, got {type(task_id).__name__}")
    if not task_id:
        raise InvalidTaskIdError("task_id must not be empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidTaskIdError(f"task_id is {len(task_id)} characters long; the limit is 256")
    if task_id in (".", "..") or not task_id.isprintable() or any(c.isspace() for c in task_id):
        raise InvalidTaskIdError(f"task_id {clip(repr(task_id))} is not a valid task id")
    return f"{TASKS_PATH}/{urllib.parse.quote(task_id, safe='')}"


def auth_headers(api_key: str) -> dict[str, str]:
    """The headers every API request carries."""
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """A storyboard beat: what happens from `time` (seconds or frame) on."""

    time: float
    description: str


class CreateOptions(TypedDict, total=False):
    """Keyword options of `SoraClient.create_video` and `SoraClient.generate`.

    Every option has a default (shown in brackets); pass None to leave a
    field out of the request. Known sizes are 480x480, 720x720, 480x854,
    720x1280, 854x480 and 1280x720; `n_frames` is 150 (5 s) or 300 (10 s).

    Keys:
        model: The model name ["turbo"].
        type: The task type ["video_gen"].
        style: The visual style ["natural"].
        operation: simple_compose, storyboard, remix or blend ["simple_compose"].
        width, height: The frame size in pixels [854, 480].
        n_frames: The length in frames [150].
        n_variants: How many videos to make [1].
        actions: Storyboard beats, as `Action` or `{"time", "description"}`.
        inpaint_items: Reference images, `{"type": "image", "url", "frame_index", ...}`.
        sdedit: Passed through as given.
        notify_hook: A URL the gateway calls when the task changes; a hint only.
        extra_body: Fields the SDK does not know yet, sent as given.
    """

    model: str | None
    type: str | None
    style: str | None
    operation: Operation | None
    width: int | None
    height: int | None
    n_frames: int | None
    n_variants: int | None
    actions: Sequence[Action | Mapping[str, Any]] | None
    inpaint_items: Sequence[Mapping[str, Any]] | None
    sdedit: Any
    notify_hook: str | None
    extra_body: Mapping[str, Any] | None


CREATE_DEFAULTS: Mapping[str, object] = {
    "model": "turbo",
    "type": "video_gen",
    "style": "natural",
    "operation": "simple_compose",
    "width": 854,
    "height": 480,
    "n_frames": 150,
    "n_variants": 1,
}


class _CreateVideoRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The JSON body of `POST /sora/v1/videos`; None fields are left out."""

    prompt: str
    model: str | None = None
    type: str | None = None
    style: str | None = None
    operation: str | None = None
    width: int | None = None
    height: int | None = None
    n_frames: int | None = None
    n_variants: int | None = None
    actions: list[Action] | None = None
    inpaint_items: list[dict[str, Any]] | None = None
    sdedit: Any = None
    notify_hook: str | None = None


_TYPED_FIELDS = frozenset(_CreateVideoRequest.__struct_fields__)


def build_create_body(prompt: str, options: Mapping[str, Any]) -> bytes:
    """Validate create options, apply defaults, and encode the request body.

    Args:
        prompt: What to generate; must not be blank.
        options: Keys of `CreateOptions`.

    Raises:
        TypeError: An option name is unknown (use `extra_body` for new fields).
        ValueError: An option has the wrong type or an impossible value.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    unknown = sorted(set(options) - _TYPED_FIELDS - {"extra_body"})
    if unknown:
        raise TypeError(f"unknown create option(s) {unknown}; pass new API fields in extra_body")
    merged = {**CREATE_DEFAULTS, **options}
    extra_body = merged.pop("extra_body", None)
    fields = {name: value for name, value in merged.items() if value is not None}
    for name in ("width", "height", "n_frames", "n_variants"):
        value = fields.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if ("width" in fields) != ("height" in fields):
        raise ValueError("width and height must be given together")
    for name in ("actions", "inpaint_items"):
        if name in fields:
            if isinstance(fields[name], (str, bytes, Mapping)):
                raise ValueError(f"{name} must be a list")
            fields[name] = [msgspec.to_builtins(item) for item in fields[name]]
    try:
        request = msgspec.convert({"prompt": prompt, **fields}, _CreateVideoRequest)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid create option: {exc}") from None
    body: dict[str, Any] = msgspec.to_builtins(request)
    if extra_body:
        clash = sorted(set(extra_body) & _TYPED_FIELDS)
        if clash:
            raise ValueError(f"extra_body may not set typed fields {clash}; pass them as arguments")
        body.update(extra_body)
    return msgspec.json.encode(body)


def create_rejected_unprocessed(status_code: int, body: bytes) -> bool:
    """Whether a failed create provably created nothing, so resending is safe.

    Only a 429 whose body is an error document qualifies: the gateway's rate
    limiter turns the request away before it reaches the task logic.
    """
    if status_code != 429:
        return False
    return _is_error_document(body)


# --- responses -------------------------------------------------------------


# The response Structs below are short-lived and never in a cycle, so they
# opt out of the garbage collector: polling then allocates fewer tracked
# objects, and triggers fewer collections (measured in benchmarks/poll_cpu.py).


# Every optional field accepts null, read as its empty value ("" or 0): a
# null `fail_reason` must not hide a FAILURE. Fields nobody reads (the
# envelope's `message`) are not declared, so msgspec skips them unchecked.


class _TaskWire(msgspec.Struct, kw_only=True, gc=False):
    """The task object as sent; the nested upstream object stays raw."""

    task_id: str
    status: str | None = ""
    progress: str | float | None = ""  # a bare number (50) means percent, as in "50%"
    fail_reason: str | None = ""
    submit_time: int | None = 0
    start_time: int | None = 0
    finish_time: int | None = 0
    action: str | None = ""
    notify_hook: str | None = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


class _TaskEnvelope(msgspec.Struct, kw_only=True, gc=False):
    """The query answer. Both fields are required, so `{}` is reported as what it lacks."""

    code: str | None
    data: _TaskWire | None


class _CreateBody(msgspec.Struct, kw_only=True):
    """Any of the create answers: an envelope, or an object with an id."""

    code: str | None = None
    data: str | dict[str, Any] | None = None
    id: str | None = None
    task_id: str | None = None


class _ErrorBody(msgspec.Struct):
    """Both error shapes, read leniently: the envelope's code/message, or OpenAI's `error`.

    Any JSON value is accepted in each field, and what is not a string (or
    an integer code) is ignored, so that an odd field cannot hide the code.
    """

    code: Any = None
    message: Any = None
    error: Any = None


_task_decoder = msgspec.json.Decoder(_TaskEnvelope, strict=False)
_create_decoder = msgspec.json.Decoder(_CreateBody, strict=False)
_error_decoder = msgspec.json.Decoder(_ErrorBody, strict=False)
_json_checker = msgspec.json.Decoder(msgspec.Raw)  # checks the syntax, builds nothing

_EXPECTED_SHAPES = {
    "task": '{"code": "success", "data": {"task_id": "...", "status": "...", ...}}',
    "create": '{"code": "success", "data": "<task id>"}, or an object with "id" or "task_id"',
    "video": 'a video object: {"id": "...", "object": "video", "status": "...", "progress": 0, ...}',
}
_CLASS_BY_CODE: Mapping[str, type[APIError]] = {
    "quota_not_enough": PermissionDeniedError,
    "task_not_exist": TaskNotFoundError,
    "invalid_request": BadRequestError,
}
KNOWN_ERROR_CODES = frozenset(_CLASS_BY_CODE) | _RETRYABLE_CODES
"""The error codes that choose an error class (see `error_from_response`)."""


def parse_task_response(
    status_code: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> Task:
    """Turn the answer to a task query into a `Task`, or raise its error.

    Args:
        status_code: The HTTP status.
        headers: The response headers (any case-insensitive mapping).
        body: The raw body.
        secret: A string to scrub from any message (the API key).

    Raises:
        APIError: A subclass chosen from the status and the body's code.
        ResponseDecodeError: A 2xx whose body is not a task envelope: not
            JSON, or JSON of another shape (no `code`, a `task_id` that is
            missing or null, `data` null...). The message gives the content
            type, the size and the first field that did not fit.
    """
    envelope = decode_answer(_task_decoder, "task", status_code, headers, body, secret)
    if envelope.code != "success":
        raise _not_success(envelope.code, "task", status_code, headers, body, secret)
    wire = envelope.data
    if wire is None:
        raise decode_failure("task", headers, body, "Expected `object`, got `null` - at `$.data`", secret)
    status = wire.status or ""
    return Task(
        task_id=wire.task_id,
        status=TaskStatus.parse(status),
        raw_status=status,
        progress=progress_text(wire.progress),
        fail_reason=wire.fail_reason or "",
        submit_time=wire.submit_time or 0,
        start_time=wire.start_time or 0,
        finish_time=wire.finish_time or 0,
        action=wire.action or "",
        notify_hook=wire.notify_hook or "",
        # copy() detaches the slice, so the Task does not pin the whole body.
        data=wire.data.copy(),
    )


def progress_text(progress: str | float | None) -> str:
    """The progress string: as sent, "" for null, and "50%" for a bare number 50."""
    if isinstance(progress, str):
        return progress
    if progress is None or not math.isfinite(progress):
        return ""
    return f"{progress:g}%"


def parse_create_response(
    status_code: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> str:
    """Return the new task's id from any of the three known answer shapes.

    The shapes are `{"code": "success", "data": "task_..."}`,
    `{"code": "success", "data": {"task_id" or "id": ...}}`, and a bare
    object with `id` and/or `task_id`. A null field counts as absent.

    Raises:
        APIError: The answer is an error.
        ResponseDecodeError: A 2xx answer that is not JSON, is JSON of
            another shape, or names no task id; the message gives the
            content type, the size and what did not fit.
    """
    answer = decode_answer(_create_decoder, "create", status_code, headers, body, secret)
    if answer.code is not None and answer.code != "success":
        raise _not_success(answer.code, "create", status_code, headers, body, secret)
    candidates: list[object] = [answer.task_id, answer.id]
    if isinstance(answer.data, str):
        candidates.insert(0, answer.data)
    elif isinstance(answer.data, dict):
        candidates[:0] = [answer.data.get("task_id"), answer.data.get("id")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    if _is_error_document(body):  # {"error": {...}} with a 2xx status
        raise error_from_response(status_code, headers, body, secret=secret)
    raise decode_failure(
        "create",
        headers,
        body,
        "no task id at `$.data`, `$.data.task_id`, `$.data.id`, `$.task_id` or `$.id`",
        secret,
    )


def error_from_response(
    status_code: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> APIError:
    """Build the most specific `APIError` for an error answer.

    Works for the gateway envelope (`code`/`message`), the OpenAI-style
    `{"error": {...}}` body, and bodies that are not JSON at all (an HTML
    error page, an empty 502).

    The class is chosen from the status and the code exactly as the server
    sent them; only then is `secret` scrubbed from the message and the
    request id. The `code` attribute is the server's code as sent, except
    that a code carrying `secret` (the key echoed back) has it replaced by
    "***", and one over 300 characters (no real code) is clipped.
    """
    code, message = _error_fields(body)
    if not message:
        message = _describe_body(headers, body, status_code)
    request_id = _request_id(headers, message)
    cls, retryable = _error_class(status_code, code, message)
    if cls is APIError and 300 <= status_code < 400:
        location = header(headers, "Location")
        message = f"unexpected redirect{f' to {location}' if location else ''}; check base_url"
    message = clip(message, secret)
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "code": _scrub_code(code, secret),
        "request_id": None if request_id is None else clip(request_id, secret),
    }
    if cls is RateLimitError:
        return RateLimitError(
            message, retry_after=parse_retry_after(header(headers, "Retry-After")), **kwargs
        )
    if retryable is not None:
        kwargs["retryable"] = retryable
    return cls(message, **kwargs)


def _error_class(status_code: int, code: str | None, message: str = "") -> tuple[type[APIError], bool | None]:
    """The class for an error answer, and its retryability where it differs from the class's.

    Besides the status and the code, three messages of the OpenAI format
    choose a class (PROTOCOL.md, Part 2): a model no channel serves (even
    with a 5xx), the 404 "Task not found", and "Task is not completed yet".
    """
    lowered = message.lower()
    if (
        code == "model_not_found"
        or "no available channel" in lowered
        or (status_code == 404 and "model" in lowered)
    ):
        return ModelNotAvailableError, None
    if status_code == 404 and lowered.startswith("task not found"):
        return TaskNotFoundError, None
    if status_code == 400 and lowered.startswith("task is not completed yet"):
        return VideoNotReadyError, None
    if status_code == 429:
        return RateLimitError, None
    if status_code == 401:
        return AuthenticationError, None
    if status_code == 403:
        return PermissionDeniedError, None
    by_code = None if code is None else _CLASS_BY_CODE.get(code)
    if by_code is not None:
        return by_code, None
    if status_code >= 500:
        return ServerError, status_code in RETRYABLE_STATUSES
    if code in _RETRYABLE_CODES:
        return ServerError, True
    if 400 <= status_code < 500:
        return BadRequestError, None
    return APIError, None


def _scrub_code(code: str | None, secret: str | None) -> str | None:
    """The server's code as sent, unless it echoes `secret` or is too long to be a code."""
    if code is None:
        return None
    if secret is not None and len(secret) >= MIN_SECRET_LENGTH:
        code = code.replace(secret, "***")
    return code if len(code) <= _MESSAGE_LIMIT else code[: _MESSAGE_LIMIT - 3] + "..."


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a `Retry-After` header as seconds from now, or None for "no hint".

    Accepts delta-seconds ("3", "1.5") and an HTTP date in each of the three
    forms RFC 9110 (section 5.6.7) obliges a recipient to read: IMF-fixdate
    (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37
    GMT`) and asctime (`Sun Nov  6 08:49:37 1994`, which carries no zone and
    is GMT by definition). Zero, a negative number, NaN, infinity, a date
    that has passed and anything unreadable give None: the caller then uses
    its own backoff, never a tight loop.

    Args:
        value: The header value, or None when absent.
        now: The current Unix time in seconds, for HTTP dates; defaults to the clock.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds > 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime: no zone, GMT by definition
        when = when.replace(tzinfo=datetime.timezone.utc)
    if now is None:
        now = time.time()
    try:
        seconds = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def clip(text: str, secret: str | None = None) -> str:
    """Shorten a server-supplied string for a message, scrubbing `secret`.

    White space runs become one space, and text over 300 characters is cut.
    `secret` is replaced by "***" when it has at least `MIN_SECRET_LENGTH`
    characters; a shorter one is left alone (see there).
    """
    if secret is not None and len(secret) >= MIN_SECRET_LENGTH:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 3] + "..."
    return text


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    """The (code, message) an error body carries, each None when absent or unreadable."""
    try:
        parsed = _error_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None, None
    code: str | None = None
    message: str | None = None
    error = parsed.error
    if isinstance(error, dict):
        message = _text(error.get("message"))
        code = _code_text(error.get("code")) or _code_text(error.get("type"))  # code is often ""
    elif isinstance(error, str):
        message = error
    if code is None:
        code = _code_text(parsed.code)
    if message is None:
        message = _text(parsed.message)
    return code, message


def _is_error_document(body: bytes) -> bool:
    """Whether a body is an error document: an `error` member, or a `code` other than "success"."""
    try:
        parsed = _error_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return False
    if isinstance(parsed.error, dict) or (isinstance(parsed.error, str) and parsed.error):
        return True
    code = _code_text(parsed.code)
    return bool(code) and code != "success"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _code_text(value: object) -> str | None:
    """A code as text: a string as is, an integer (not a bool) in decimal, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # msgspec refuses integers too long to print
    return None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up by name in any case, in any mapping."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _request_id(headers: Mapping[str, str], message: str) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        value = header(headers, name)
        if value:
            return clip(value)
    match = _REQUEST_ID.search(message)
    return match.group(1) if match else None


def _describe_body(headers: Mapping[str, str], body: bytes, status_code: int) -> str:
    """What an error answer without a message was: empty, not JSON, or JSON without one."""
    if not body:
        return f"HTTP {status_code} with an empty body"
    kind = "a non-JSON body" if _json_problem(body) else "a JSON body with no error message"
    return f"HTTP {status_code} with {kind} ({_describe_content(headers, body)})"


def _json_problem(body: bytes) -> str | None:
    """Why `body` cannot be read as JSON at all, or None when it can."""
    try:
        _json_checker.decode(body)
    except msgspec.DecodeError as exc:
        return f"not JSON ({exc})"
    except RecursionError:  # msgspec's own depth limit, not a deep Python stack
        return "JSON nested too deeply"
    return None


def _describe_content(headers: Mapping[str, str], body: bytes) -> str:
    content_type = header(headers, "Content-Type") or "no content type"
    return f"{clip(content_type)[:100]}, {len(body)} bytes"


def decode_failure(
    what: str, headers: Mapping[str, str], body: bytes, problem: str, secret: str | None
) -> ResponseDecodeError:
    """The error for a 2xx `what` answer that cannot be read: what came, and what was expected."""
    return ResponseDecodeError(
        clip(
            f"the {what} answer is not the expected JSON ({_describe_content(headers, body)}): "
            f"{problem}; expected {_EXPECTED_SHAPES[what]}",
            secret,
        )
    )


def _not_success(
    code: str | None, what: str, status_code: int, headers: Mapping[str, str], body: bytes, secret: str | None
) -> SoraError:
    """The error for a 2xx answer whose `code` is not "success": the error it carries, or a decode error."""
    if _is_error_document(body):
        return error_from_response(status_code, headers, body, secret=secret)
    got = "null" if code is None else repr(code)
    return decode_failure(what, headers, body, f'Expected `"success"`, got `{got}` - at `$.code`', secret)


def decode_answer(
    decoder: msgspec.json.Decoder[_D],
    what: str,
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
    secret: str | None,
) -> _D:
    """Decode a 2xx answer, or raise the error it stands for."""
    if not 200 <= status_code < 300:
        raise error_from_response(status_code, headers, body, secret=secret)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:  # found before the end of the body, which may be broken
        if _is_error_document(body):
            raise error_from_response(status_code, headers, body, secret=secret) from None
        problem = _json_problem(body)
        raise decode_failure(what, headers, body, problem or str(exc), secret) from None
    except msgspec.DecodeError as exc:
        raise decode_failure(what, headers, body, f"not JSON ({exc})", secret) from None
    except RecursionError:  # msgspec's own depth limit, not a deep Python stack
        raise decode_failure(what, headers, body, "JSON nested too deeply", secret) from None
