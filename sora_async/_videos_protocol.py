"""The OpenAI-format video API on the gateway (`/v1/videos`, PROTOCOL.md Part 2): pure, no I/O.

Paths, create bodies, and reading its answers into the same `Task` the
reverse format gives, so that one engine waits for both:

- status: `queued` → QUEUED, `in_progress` → IN_PROGRESS, `completed` →
  SUCCESS, `failed` → FAILURE; anything else (`unknown`, a leaked
  `NOT_START`) → UNKNOWN, which is pending, never final;
- an answer with no `status` but an `error` object is the error body the
  gateway stored for a failed upstream call: a FAILURE with that message;
- `progress` (an integer) reads as "NN%", `error.message` as `fail_reason`,
  `created_at` and `completed_at` as `submit_time` and `finish_time`; the
  format's own fields (`model`, `seconds`, `size`, `expires_at`,
  `remixed_from_video_id`) are kept, and the object as sent is `data`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ._models import Task, TaskStatus
from ._protocol import TASKS_PATH, decode_answer, decode_failure, progress_text, task_path

__all__ = [
    "CONTENT_VARIANTS",
    "VIDEOS_PATH",
    "VIDEO_SIZES",
    "ContentVariant",
    "build_video_create",
    "content_path",
    "form_value",
    "parse_video_response",
    "remix_path",
    "video_path",
]

VIDEOS_PATH = "/v1/videos"
VIDEO_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
"""The sizes CometAPI documents for sora-2 and sora-2-pro; other models may take others."""

ContentVariant = Literal["video", "thumbnail", "spritesheet"]
"""What `/content` serves: the MP4, or one of two images (the gateway may ignore it: PROTOCOL.md)."""
CONTENT_VARIANTS: tuple[ContentVariant, ...] = ("video", "thumbnail", "spritesheet")

_STATUS = {
    "queued": TaskStatus.QUEUED,
    "in_progress": TaskStatus.IN_PROGRESS,
    "completed": TaskStatus.SUCCESS,
    "failed": TaskStatus.FAILURE,
}


def video_path(video_id: str) -> str:
    """The quoted path of one video, after checking the id as task ids are checked.

    Raises:
        TypeError: `video_id` is not a str.
        InvalidTaskIdError: The id cannot be sent as it is.
    """
    return VIDEOS_PATH + task_path(video_id)[len(TASKS_PATH) :]


def content_path(video_id: str, variant: ContentVariant = "video") -> str:
    """The path of a video's file: the MP4, or the thumbnail or spritesheet image."""
    if variant not in CONTENT_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(CONTENT_VARIANTS)}; got {variant!r}")
    return f"{video_path(video_id)}/content?variant={variant}"


def remix_path(video_id: str) -> str:
    return f"{video_path(video_id)}/remix"


def build_video_create(
    prompt: str,
    *,
    model: str,
    seconds: int | str | None = None,
    size: str | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of a create, checked before anything is sent.

    `seconds` is sent as a string, as the API documents ("4", "8", "12");
    an int is accepted. `extra_body` adds fields the SDK does not know, as
    JSON values (as strings in a multipart body), and may not set a field
    that has its own argument.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: `prompt` or `model` is empty, `seconds` is not a whole
            number from 1 to 3600 (the gateway refuses others), `size` is
            not WIDTHxHEIGHT, or `extra_body` sets a field of its own.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt must not be empty")
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, got {type(model).__name__}")
    if not model.strip():
        raise ValueError('model must name a video model, such as "sora-2"')
    fields: dict[str, Any] = {"prompt": prompt, "model": model.strip()}
    if seconds is not None:
        fields["seconds"] = _seconds_text(seconds)
    if size is not None:
        if not isinstance(size, str):
            raise TypeError(f"size must be a str such as '1280x720', got {type(size).__name__}")
        width, _, height = size.strip().partition("x")
        if not (_whole(width) and _whole(height) and int(width) > 0 and int(height) > 0):
            raise ValueError(f"size must be WIDTHxHEIGHT, such as {', '.join(VIDEO_SIZES)}; got {size!r}")
        fields["size"] = size.strip()
    for name, value in (extra_body or {}).items():
        if name in ("prompt", "model", "seconds", "size", "input_reference"):
            raise ValueError(f"extra_body may not set {name!r}; pass it as its own argument")
        fields[str(name)] = value
    return fields


def form_value(value: Any) -> str:
    """A field's value in a multipart body: a string as is, anything else as its JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _whole(text: str) -> bool:
    """Whether `text` is a whole number in ASCII digits ("²" and "٨" are digits to Python, not to the API)."""
    return text.isascii() and text.isdigit()


def _seconds_text(seconds: int | str) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, str)):
        raise TypeError(f"seconds must be an int or a str such as '8', got {type(seconds).__name__}")
    text = str(seconds).strip()
    if not _whole(text) or not 1 <= int(text) <= 3600:
        raise ValueError(f"seconds must be a whole number of seconds from 1 to 3600, got {seconds!r}")
    return str(int(text))


class _ErrorObject(msgspec.Struct, kw_only=True, gc=False):
    code: str | int | None = None
    message: str | None = None


class _VideoWire(msgspec.Struct, kw_only=True, gc=False):
    """The video object, read leniently: a null or odd-typed optional field reads as absent."""

    id: str
    status: str | None = None
    progress: str | float | None = None
    created_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    model: str | None = None
    seconds: str | float | None = None
    size: str | None = None
    error: _ErrorObject | None = None
    remixed_from_video_id: str | None = None


_video_decoder = msgspec.json.Decoder(_VideoWire, strict=False)


def parse_video_response(
    status_code: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> Task:
    """Turn the answer to a retrieve, a create or a remix into a `Task`, or raise its error.

    Raises:
        APIError: A subclass chosen from the status and the body (see
            `error_from_response`): `TaskNotFoundError` for an unknown id,
            `ModelNotAvailableError` for a model no channel serves.
        ResponseDecodeError: A 2xx whose body is not a video object (not
            JSON, no `id`...); the message says what came.
    """
    wire = decode_answer(_video_decoder, "video", status_code, headers, body, secret)
    if not wire.id.strip():
        raise decode_failure("video", headers, body, "an empty `$.id`", secret)
    if wire.status is None and wire.error is not None:
        status = TaskStatus.FAILURE  # the stored upstream error body: the task failed
    else:
        status = _STATUS.get(wire.status or "", TaskStatus.UNKNOWN)
    reason = wire.error.message if wire.error is not None and wire.error.message else ""
    if status is TaskStatus.FAILURE and not reason and wire.error is not None and wire.error.code:
        reason = str(wire.error.code)
    return Task(
        task_id=wire.id,
        status=status,
        raw_status=wire.status or "",
        progress=progress_text(wire.progress),
        fail_reason=reason if status is TaskStatus.FAILURE else "",
        submit_time=_time(wire.created_at),
        finish_time=_time(wire.completed_at),
        data=msgspec.Raw(bytes(body)),
        format="openai",
        model=wire.model or "",
        seconds=_seconds_field(wire.seconds),
        size=wire.size or "",
        expires_at=_time(wire.expires_at),
        remixed_from_video_id=wire.remixed_from_video_id or "",
    )


def _seconds_field(seconds: str | float | None) -> str:
    """`seconds` as the string the API uses ("8"), whatever JSON type came."""
    if isinstance(seconds, str):
        return seconds
    if seconds is None or not math.isfinite(seconds):
        return ""
    return f"{seconds:g}"


def _time(value: float | None) -> int:
    return int(value) if value is not None and math.isfinite(value) and 0 < value < 2**53 else 0
