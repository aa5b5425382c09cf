"""Typed records for tasks and the videos they produce.

`Task` holds only what a poll needs. The upstream generation object nested
in every answer (most of an 18 KB body is moderation detail) stays as
undecoded JSON bytes until someone reads `Task.video`.
"""

from __future__ import annotations

import enum
import functools
import math
from typing import Any, Literal

import msgspec

from ._errors import ResponseDecodeError

__all__ = [
    "Encoding",
    "Encodings",
    "Generation",
    "Task",
    "TaskStatus",
    "Video",
]

VIDEO_VARIANTS = ("source", "md", "ld", "thumbnail", "spritesheet")
_PLAYABLE_VARIANTS = ("source", "md", "ld")


class TaskStatus(str, enum.Enum):
    """A task's status as the gateway reports it.

    Only SUCCESS and FAILURE are final. A status string the SDK has never
    seen is reported as UNKNOWN (the raw string stays on `Task.raw_status`).
    """

    NOT_START = "NOT_START"
    SUBMITTED = "SUBMITTED"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """Whether a task in this status will never change again."""
        return self is TaskStatus.SUCCESS or self is TaskStatus.FAILURE

    @classmethod
    def parse(cls, value: str) -> TaskStatus:
        """Map a raw status string to a member, UNKNOWN for anything new."""
        return _STATUS_BY_VALUE.get(value, cls.UNKNOWN)

    def __str__(self) -> str:
        return self.value


_STATUS_BY_VALUE = {member.value: member for member in TaskStatus}


class Encoding(msgspec.Struct, frozen=True, kw_only=True):
    """One rendition of a generation: a file on the CDN and its metadata."""

    path: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    duration_secs: float | None = None
    ssim: float | None = None


class Encodings(msgspec.Struct, frozen=True, kw_only=True):
    """The renditions of one generation, by quality."""

    source: Encoding | None = None
    md: Encoding | None = None
    ld: Encoding | None = None
    thumbnail: Encoding | None = None
    spritesheet: Encoding | None = None

    def get(self, variant: str) -> Encoding | None:
        """The encoding named `variant` (`source`, `md`, ...), or None."""
        if variant not in VIDEO_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VIDEO_VARIANTS}")
        encoding: Encoding | None = getattr(self, variant)
        return encoding


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """One generated video (a task makes `n_variants` of them)."""

    id: str | None = None
    url: str | None = None
    prompt: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    n_frames: int | None = None
    encodings: Encodings | None = None

    @property
    def video_url(self) -> str | None:
        """The best playable URL: source, then md, then ld, then `url`."""
        if self.encodings is not None:
            for variant in _PLAYABLE_VARIANTS:
                encoding = self.encodings.get(variant)
                if encoding is not None and encoding.path:
                    return encoding.path
        return self.url or None


class Video(msgspec.Struct, frozen=True, kw_only=True):
    """The upstream generation object nested in a task answer."""

    id: str | None = None
    status: str | None = None
    prompt: str | None = None
    width: int | None = None
    height: int | None = None
    n_frames: int | None = None
    n_variants: int | None = None
    progress_pct: float | None = None
    progress_pos_in_queue: int | None = None
    estimated_queue_wait_time: float | None = None
    failure_reason: str | None = None
    generations: list[Generation] = msgspec.field(default_factory=list)


class _VideoWire(Video, frozen=True, kw_only=True):
    """`Video` as sent: `generations` may be null or hold nulls (read as empty)."""

    generations: list[Generation | None] | None = None  # type: ignore[assignment]


# strict=False lets "854" decode as 854: upstream is not careful with types.
_video_decoder: msgspec.json.Decoder[_VideoWire | None] = msgspec.json.Decoder(
    _VideoWire | None, strict=False
)
_VIDEO_FIELDS = Video.__struct_fields__


def _video_from_wire(wire: _VideoWire) -> Video:
    fields = {name: getattr(wire, name) for name in _VIDEO_FIELDS}
    fields["generations"] = [g for g in wire.generations or () if g is not None]
    return Video(**fields)


NULL_PAYLOAD = msgspec.Raw(b"null")
"""The `data` of a Task without a nested payload."""


class Task(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """A snapshot of one video task.

    Attributes:
        task_id: The gateway's task id.
        status: The status as a `TaskStatus` (UNKNOWN for strings never seen).
        raw_status: The status string exactly as the server sent it.
        progress: The raw progress string, such as "30%" (see `percent`).
        fail_reason: Why the task failed; empty unless status is FAILURE.
        submit_time, start_time, finish_time: Unix seconds; 0 means not set.
        action: The gateway's action name, "sora-video".
        notify_hook: The callback URL given at creation, if any.
        data: The nested upstream object as undecoded JSON (see `video`);
            for the OpenAI format, the video object as sent.
        format: Which API the snapshot came from: "reverse" (`/sora/v1/videos`,
            `SoraClient`'s own methods) or "openai" (`/v1/videos`,
            `SoraClient.videos`).
        model, seconds, size: The OpenAI format's model, duration ("8") and
            size ("1280x720"); "" for the reverse format.
        expires_at: OpenAI format: Unix seconds after which the file is
            gone, 0 when not given.
        remixed_from_video_id: OpenAI format: the source of a remix, or "".

    A null in any of these fields of the answer reads as "" (strings) or 0
    (times), so a FAILURE with `"fail_reason": null` is still a FAILURE.
    """

    task_id: str
    status: TaskStatus
    raw_status: str = ""
    progress: str = ""
    fail_reason: str = ""
    submit_time: int = 0
    start_time: int = 0
    finish_time: int = 0
    action: str = ""
    notify_hook: str = ""
    data: msgspec.Raw = NULL_PAYLOAD
    format: Literal["reverse", "openai"] = "reverse"
    model: str = ""
    seconds: str = ""
    size: str = ""
    expires_at: int = 0
    remixed_from_video_id: str = ""

    @property
    def is_terminal(self) -> bool:
        """Whether the task has ended (SUCCESS or FAILURE)."""
        return self.status.is_terminal

    @property
    def percent(self) -> float | None:
        """Progress as a number from 0 to 100, or None if it cannot be read.

        "45%" gives 45.0 and "45.5%" gives 45.5. Values outside 0..100 are
        clamped; an empty or garbled string gives None.
        """
        return parse_percent(self.progress)

    @functools.cached_property
    def video(self) -> Video | None:
        """The nested generation object, decoded on first access and cached.

        None when the task has no nested object (`data` is null), and for
        the OpenAI format, which has none (see `video_url`). A null in
        any of its fields reads as that field's default: None, or `[]` for
        `generations` (whose null entries are dropped).

        Raises:
            ResponseDecodeError: The nested object has the wrong shape; the
                message names the first field that did not fit.
        """
        if self.format == "openai":
            return None
        try:
            wire = _video_decoder.decode(self.data)
        except msgspec.DecodeError as exc:
            raise ResponseDecodeError(
                f"task {self.task_id}: the video object has an unexpected shape: {exc}"
            ) from None
        except RecursionError:  # msgspec's own depth limit, not a deep Python stack
            raise ResponseDecodeError(f"task {self.task_id}: the video object is nested too deeply") from None
        return None if wire is None else _video_from_wire(wire)

    @property
    def video_url(self) -> str | None:
        """The best playable URL of the first generation, or None. Never raises.

        A convenience over `video`: when the nested object cannot be decoded,
        this is None too; read `video` to get the `ResponseDecodeError`.
        For the OpenAI format it is the answer's `video_url`, which the
        gateway does not always send: `SoraClient.videos.download` fetches
        the file from `/content` either way.
        """
        if self.format == "openai":
            return _openai_video_url(self.data)
        try:
            video = self.video
        except ResponseDecodeError:
            return None
        if video is None:
            return None
        for generation in video.generations:
            url = generation.video_url
            if url:
                return url
        return None


class _OpenAIURL(msgspec.Struct):
    video_url: Any = None


_openai_url_decoder = msgspec.json.Decoder(_OpenAIURL)


def _openai_video_url(data: msgspec.Raw) -> str | None:
    try:
        url = _openai_url_decoder.decode(data).video_url
    except (msgspec.DecodeError, RecursionError):
        return None
    return url if isinstance(url, str) and url else None


def parse_percent(progress: str) -> float | None:
    """Read a progress string such as "45%" as a float in 0..100, else None."""
    text = progress.strip().removesuffix("%").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value):
        return None
    return min(100.0, max(0.0, value))


class _QueueFields(msgspec.Struct):
    estimated_queue_wait_time: float | None = None


_queue_decoder: msgspec.json.Decoder[_QueueFields | None] = msgspec.json.Decoder(
    _QueueFields | None, strict=False
)
_WAITING = frozenset({TaskStatus.NOT_START, TaskStatus.SUBMITTED, TaskStatus.QUEUED})


def queue_wait_hint(task: Task) -> float | None:
    """Seconds the upstream expects the task to stay queued, if it says, else None.

    Reads one field of the nested payload, and only for tasks still waiting
    to start; bad or missing values give None, never an error.
    """
    if task.status not in _WAITING or task.data == NULL_PAYLOAD:
        return None
    try:
        fields = _queue_decoder.decode(task.data)
    except (msgspec.DecodeError, RecursionError):
        return None
    wait = fields.estimated_queue_wait_time if fields is not None else None
    return wait if wait is not None and math.isfinite(wait) and wait > 0 else None
