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
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    TaskNotFoundError,
)
from ._models import Task, TaskStatus

DEFAULT_BASE_URL = "https://api.cometapi.com"
TASKS_PATH = "/sora/v1/videos"
MAX_TASK_ID_LENGTH = 256
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})
# Envelope codes that mean the gateway could not reach upstream this time.
_RETRYABLE_CODES = frozenset({"get_task_failed", "fail_to_fetch_task"})
_MESSAGE_LIMIT = 300
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
        ValueError: The URL is not http(s), has no host, carries a query or
            fragment, or is plain http to a host that is not loopback while
            `allow_insecure_http` is False (the key would travel in clear).
    """
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query string or fragment")
    if parts.username or parts.password:
        raise ValueError("base_url must not carry credentials; pass api_key instead")
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


def task_path(task_id: str) -> str:
    """The quoted path of one task, after checking the id.

    Raises:
        ValueError: The id is not a non-empty string of printable characters
            without white space, or is longer than 256 characters.
    """
    if _PLAIN_ID.fullmatch(task_id) if isinstance(task_id, str) else False:
        return _TASKS_PREFIX + task_id  # the common case: nothing to check or quote
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, got {type(task_id).__name__}")
    if not task_id:
        raise ValueError("task_id must not be empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise ValueError(f"task_id is {len(task_id)} characters long; the limit is 256")
    if task_id in (".", "..") or not task_id.isprintable() or any(c.isspace() for c in task_id):
        raise ValueError(f"task_id {task_id!r} is not a valid task id")
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
    return _has_error_code(body)


# --- responses -------------------------------------------------------------


# The response Structs below are short-lived and never in a cycle, so they
# opt out of the garbage collector: polling then allocates fewer tracked
# objects, and triggers fewer collections (measured in benchmarks/poll_cpu.py).


class _TaskWire(msgspec.Struct, kw_only=True, gc=False):
    """The task object as sent; the nested upstream object stays raw."""

    task_id: str
    status: str = ""
    progress: str = ""
    fail_reason: str = ""
    submit_time: int = 0
    start_time: int = 0
    finish_time: int = 0
    action: str = ""
    notify_hook: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


class _TaskEnvelope(msgspec.Struct, gc=False):
    code: str | None = None
    message: str = ""
    data: _TaskWire | None = None


class _CreateBody(msgspec.Struct):
    """Any of the create answers: an envelope, or an object with an id."""

    code: str | None = None
    message: str = ""
    data: str | dict[str, Any] | None = None
    id: str | None = None
    task_id: str | None = None


class _GatewayError(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    """Both error shapes: the envelope's code/message, or OpenAI's `error`."""

    code: str | int | None = None
    message: str | None = None
    error: _GatewayError | str | None = None


_task_decoder = msgspec.json.Decoder(_TaskEnvelope, strict=False)
_create_decoder = msgspec.json.Decoder(_CreateBody, strict=False)
_error_decoder = msgspec.json.Decoder(_ErrorBody, strict=False)


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
        ResponseDecodeError: A 200 whose body is not a task envelope.
    """
    envelope = _decode_answer(_task_decoder, "task", status_code, headers, body, secret)
    if envelope.code != "success":
        raise error_from_response(status_code, headers, body, secret=secret)
    wire = envelope.data
    if wire is None:
        raise ResponseDecodeError("the task answer has no task object (data is null)")
    return Task(
        task_id=wire.task_id,
        status=TaskStatus.parse(wire.status),
        raw_status=wire.status,
        progress=wire.progress,
        fail_reason=wire.fail_reason,
        submit_time=wire.submit_time,
        start_time=wire.start_time,
        finish_time=wire.finish_time,
        action=wire.action,
        notify_hook=wire.notify_hook,
        # copy() detaches the slice, so the Task does not pin the whole body.
        data=wire.data.copy(),
    )


def parse_create_response(
    status_code: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> str:
    """Return the new task's id from any of the three known answer shapes.

    The shapes are `{"code": "success", "data": "task_..."}`,
    `{"code": "success", "data": {"task_id" or "id": ...}}`, and a bare
    object with `id` and/or `task_id`.

    Raises:
        APIError: The answer is an error.
        ResponseDecodeError: A success answer that names no task id.
    """
    answer = _decode_answer(_create_decoder, "create", status_code, headers, body, secret)
    if answer.code is not None and answer.code != "success":
        raise error_from_response(status_code, headers, body, secret=secret)
    candidates: list[object] = [answer.task_id, answer.id]
    if isinstance(answer.data, str):
        candidates.insert(0, answer.data)
    elif isinstance(answer.data, dict):
        candidates[:0] = [answer.data.get("task_id"), answer.data.get("id")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    raise ResponseDecodeError("the create answer names no task id")


def error_from_response(
    status_code: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> APIError:
    """Build the most specific `APIError` for an error answer.

    Works for the gateway envelope (`code`/`message`), the OpenAI-style
    `{"error": {...}}` body, and bodies that are not JSON at all (an HTML
    error page, an empty 502).
    """
    code: str | None = None
    message: str | None = None
    try:
        parsed = _error_decoder.decode(body)
    except msgspec.DecodeError:
        parsed = None
    if parsed is not None:
        if isinstance(parsed.error, _GatewayError):
            message = parsed.error.message
            raw_code = parsed.error.code or parsed.error.type  # code is often ""
            code = None if raw_code is None else str(raw_code)
        elif isinstance(parsed.error, str):
            message = parsed.error
        if code is None and parsed.code is not None:
            code = str(parsed.code)
        if message is None:
            message = parsed.message
    if not message:
        message = _describe_body(headers, body, status_code)
    request_id = _request_id(headers, message)
    message = clip(message, secret)
    if code is not None:
        code = clip(code, secret)
    kwargs: dict[str, Any] = {"status_code": status_code, "code": code, "request_id": request_id}

    if status_code == 429:
        return RateLimitError(
            message, retry_after=parse_retry_after(header(headers, "Retry-After")), **kwargs
        )
    if status_code == 401:
        return AuthenticationError(message, **kwargs)
    if status_code == 403 or code == "quota_not_enough":
        return PermissionDeniedError(message, **kwargs)
    if code == "task_not_exist":
        return TaskNotFoundError(message, **kwargs)
    if code == "invalid_request":
        return BadRequestError(message, **kwargs)
    if status_code >= 500:
        return ServerError(message, retryable=status_code in RETRYABLE_STATUSES, **kwargs)
    if code in _RETRYABLE_CODES:
        return ServerError(message, retryable=True, **kwargs)
    if 400 <= status_code < 500:
        return BadRequestError(message, **kwargs)
    if 300 <= status_code < 400:
        location = header(headers, "Location") or ""
        where = f" to {clip(location, secret)}" if location else ""
        return APIError(f"unexpected redirect{where}; check base_url", **kwargs)
    return APIError(message, **kwargs)


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
    """Shorten a server-supplied string for a message, scrubbing `secret`."""
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 3] + "..."
    return text


def _has_error_code(body: bytes) -> bool:
    """Whether a body that failed to decode still carries an error code."""
    try:
        parsed = _error_decoder.decode(body)
    except msgspec.DecodeError:
        return False
    return parsed.error is not None or (parsed.code is not None and parsed.code != "success")


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
    content_type = header(headers, "Content-Type") or "no content type"
    if not body:
        return f"HTTP {status_code} with an empty body"
    return f"HTTP {status_code} with a non-JSON body ({clip(content_type)}, {len(body)} bytes)"


def _decode_answer(
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
    except msgspec.DecodeError as exc:
        if _has_error_code(body):
            raise error_from_response(status_code, headers, body, secret=secret) from None
        raise ResponseDecodeError(
            f"the {what} answer is not the expected JSON ({len(body)} bytes): {clip(str(exc), secret)}"
        ) from None
