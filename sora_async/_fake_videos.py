"""The fake server's second surface: the OpenAI-format video API under `/v1/videos`.

`sora_async.testing.FakeSoraServer` keeps one store of tasks and serves it in
two formats. This module owns the second one (PROTOCOL.md, Part 2): reading
and checking a create body, building the video object from a task's
timeline state, this surface's error bodies, the gateway quirks that a test
switches on (`VideoQuirks`), and the handlers the server mounts
(`VideoRoutes`). Counting, the rate limit, injected faults, chaos and the
key check stay in the server's `_gate`, so that both surfaces share them.

The functions above `VideoRoutes` take plain values and touch no socket; two
protocols, `ServerView` and `TaskView`, name all that the handlers use of the
server, so this module never imports `sora_async.testing`.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from aiohttp import web

SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
"""The sizes the create accepts; the first is the default."""
PRO_ONLY_SIZES = frozenset({"1024x1792", "1792x1024"})
"""Sizes the gateway's code refuses for `sora-2` (PROTOCOL.md, Part 2, Endpoints)."""
DEFAULT_SECONDS = "4"
MAX_SECONDS = 3600
VARIANTS = ("video", "thumbnail", "spritesheet")
FAILURE_CODE = "video_generation_failed"
"""The `error.code` of a failed task's video object."""
EXPIRES_AFTER = 3600
"""Seconds from `completed_at` to `expires_at`."""
SATURATED_MESSAGE = "当前分组上游负载已饱和，请稍后再试"  # noqa: RUF001 (the gateway's own full-width comma)
"""The gateway's rewrite of every 429 message: "the group's upstream is saturated, retry later"."""
CREATED_STATE = ("QUEUED", "0%")
"""What a create (or remix) answers, whatever the task's timeline says."""

_STATUS = {
    "NOT_START": "unknown",  # the gateway's own mapping (PROTOCOL.md, Part 2, quirks)
    "SUBMITTED": "queued",
    "QUEUED": "queued",
    "IN_PROGRESS": "in_progress",
    "SUCCESS": "completed",
    "FAILURE": "failed",
}


@dataclass(frozen=True, kw_only=True)
class VideoQuirks:
    """Gateway habits the `/v1/videos` surface can show; each one is off by default.

    With every field at its default the surface behaves like a clean OpenAI
    video API. Each field switches on one behaviour that PROTOCOL.md, Part 2
    ("Gateway quirks to tolerate" and "Errors on this surface") says a client
    must survive. A task stuck `in_progress` for ever (the gateway's own 24 h
    time-out keeps saying `in_progress`) needs no quirk: give it a timeline of
    `[("IN_PROGRESS", "50%")]`.

    Attributes:
        leak_not_start: A task in the NOT_START state shows status
            "NOT_START" (another deployment's leak) instead of "unknown".
        failure_without_status: A failed task's body is the stored upstream
            error, `{"id": ..., "error": {"code": ..., "message": ...}}`, with
            no `status` field at all.
        content_cut_after: None, or a byte count: a content answer announces
            the full Content-Length, sends this many bytes and closes the
            connection (the gateway's 60 s cut of a slow download).
        content_cuts: How many content answers are cut, the first ones; later
            ones are whole, so a client's bounded retry can be tested.
        ignore_variant: Content answers the MP4 (video/mp4) whatever
            `variant` asks for, as the gateway does.
        unavailable_models: Models with no channel behind them: a create (or
            a remix of such a task) answers HTTP 503 with new-api's
            `model_not_found` error.
        chinese_429: Every 429 of this surface (from `rate_limit`, an
            injected fault or chaos) carries the gateway's rewritten message,
            type "upstream_error" and code "429"; a `Retry-After` is kept.
        video_url: Completed video objects carry `video_url`, a link to the
            fake video host under the server's other host name (`localhost`
            for 127.0.0.1, `127.0.0.1` otherwise), so that it is another
            origin for the client.
        content_redirect: Content answers 302 to that other-origin link
            instead of sending the bytes.
    """

    leak_not_start: bool = False
    failure_without_status: bool = False
    content_cut_after: int | None = None
    content_cuts: int = 1
    ignore_variant: bool = False
    unavailable_models: frozenset[str] = frozenset()
    chinese_429: bool = False
    video_url: bool = False
    content_redirect: bool = False

    def __post_init__(self) -> None:
        if self.content_cut_after is not None and self.content_cut_after < 0:
            raise ValueError("content_cut_after must be None or >= 0")
        if self.content_cuts < 0:
            raise ValueError("content_cuts must be >= 0")
        object.__setattr__(self, "unavailable_models", frozenset(self.unavailable_models))


@dataclass(frozen=True)
class UploadedReference:
    """The file a create sent as `input_reference` (multipart bodies only).

    Attributes:
        filename: The part's filename, as sent.
        content_type: The part's Content-Type, or None when it had none.
        size: The file's length in bytes.
    """

    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True)
class Refusal:
    """An error answer: its HTTP status and JSON body."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def openai_error(message: str, code: str | None, error_type: str = "invalid_request_error") -> dict[str, Any]:
    """This surface's error body; `code` is left out when None, as the gateway's content route does."""
    error: dict[str, Any] = {"message": message, "type": error_type}
    if code is not None:
        error["code"] = code
    return {"error": error}


def _invalid(message: str, code: str = "invalid_request") -> Refusal:
    return Refusal(400, openai_error(message, code))


TASK_NOT_EXIST = Refusal(400, {"code": "task_not_exist", "message": "task_not_exist", "data": None})
"""An unknown id on retrieve: the reverse format's envelope, HTTP 400."""
ORIGIN_NOT_EXIST = Refusal(400, {"code": "task_not_exist", "message": "task_origin_not_exist", "data": None})
"""An unknown source id on remix (the gateway's `ResolveOriginTask`)."""
TASK_NOT_FOUND = Refusal(404, openai_error("Task not found", None))
"""An unknown id on content (the gateway's `VideoProxy`)."""


def not_completed(status: str, code: str | None = None) -> Refusal:
    """Content (or a remix) of a task that is not done; `status` is the reverse format's name."""
    return Refusal(400, openai_error(f"Task is not completed yet, current status: {status}", code))


def no_channel(model: str) -> Refusal:
    """new-api's answer for a model that no channel serves."""
    message = f"No available channel for model {model} under group default"
    return Refusal(503, openai_error(message, "model_not_found", "new_api_error"))


def saturated(retry_after: str | None) -> Refusal:
    """The gateway's rewritten 429."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Refusal(429, openai_error(SATURATED_MESSAGE, "429", "upstream_error"), headers)


class TaskView(Protocol):
    """What this surface reads and writes of the server's `FakeTask`."""

    task_id: str
    prompt: str
    timeline: tuple[tuple[str, str], ...]
    fail_reason: str
    submit_time: int
    request: dict[str, Any]
    served: int
    input_reference: UploadedReference | None
    remixed_from: str | None


TaskT = TypeVar("TaskT", bound=TaskView)


class ServerView(Protocol[TaskT]):
    """What this surface uses of `FakeSoraServer`: its tasks, its clock and its gate."""

    @property
    def tasks(self) -> Mapping[str, TaskT]: ...

    @property
    def video_quirks(self) -> VideoQuirks: ...

    @property
    def url(self) -> str: ...

    async def _gate(
        self,
        request: web.Request,
        body: bytes,
        route: Literal["create", "query", "content"],
        task_id: str | None,
        *,
        count_as: str | None = None,
    ) -> web.StreamResponse | None: ...

    def _state(self, task: TaskT) -> tuple[str, str]: ...

    def _create_task(self, prompt: str, request: dict[str, Any]) -> TaskT: ...


# --- reading a create ----------------------------------------------------------------


def parse_create_body(
    content_type: str, body: bytes
) -> tuple[dict[str, Any], UploadedReference | None] | Refusal:
    """Read a create body sent as JSON, multipart/form-data or url-encoded.

    Args:
        content_type: The request's whole Content-Type header (a multipart
            boundary included).
        body: The raw body.

    Returns:
        The fields (JSON values, or strings from a form) and the uploaded
        `input_reference`, if any; or the 400 to answer.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        return _parse_multipart(content_type, body)
    if media_type == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return _invalid("the form is not UTF-8")
        fields: dict[str, Any] = {}
        for name, value in pairs:
            fields.setdefault(name, value)
        return fields, None
    if media_type not in ("", "application/json"):
        return _invalid(f"unsupported Content-Type: {media_type}")
    try:
        payload = json.loads(body)
    except ValueError:
        return _invalid("the body is not valid JSON")
    if not isinstance(payload, dict):
        return _invalid("the body must be a JSON object")
    return payload, None


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, Any], UploadedReference | None] | Refusal:
    # The stdlib's MIME parser reads form-data exactly (binary parts included) and
    # needs no event loop, so the raw body can also be kept for `recorded`.
    head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "surrogateescape")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return _invalid("the multipart body could not be read")
    fields: dict[str, Any] = {}
    reference = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            if name == "input_reference" and reference is None:
                sent_type = part.get_content_type() if part.get("Content-Type") is not None else None
                reference = UploadedReference(_readable(filename), sent_type, len(data))
            continue
        fields.setdefault(name, data.decode("utf-8", "replace"))
    return fields, reference


def _readable(text: str) -> str:
    """Undo the parser's surrogate escapes of raw UTF-8 header bytes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_create(fields: Mapping[str, Any], quirks: VideoQuirks) -> Refusal | None:
    """The gateway's checks of a create, in its order; None when the create is accepted.

    A missing model is refused before a channel is chosen for it, and a
    model without a channel before the body's other fields are read.
    """
    model = fields.get("model")
    if model is None or model == "":
        return _invalid("model is required", "missing_model")
    if not isinstance(model, str):
        return _invalid("model must be a string")
    if model in quirks.unavailable_models:
        return no_channel(model)
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _invalid("prompt is required")
    seconds = fields.get("seconds")
    if seconds not in (None, "") and not _is_seconds(seconds):
        return _invalid(
            f"seconds must be a string of a whole number from 0 to {MAX_SECONDS}", "invalid_seconds"
        )
    size = fields.get("size")
    if size not in (None, ""):
        if size not in SIZES:
            return _invalid(f"size must be one of {', '.join(SIZES)}", "invalid_size")
        if size in PRO_ONLY_SIZES and model == "sora-2":
            return _invalid(f"size {size} is only available for sora-2-pro", "invalid_size")
    return None


def _is_seconds(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit() and 0 <= int(value) <= MAX_SECONDS


def created_request(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What the task keeps of an accepted create: the fields, defaults filled in."""
    request = dict(fields)
    if request.get("seconds") in (None, ""):
        request["seconds"] = DEFAULT_SECONDS
    if request.get("size") in (None, ""):
        request["size"] = SIZES[0]
    return request


# --- the video object ----------------------------------------------------------------


def task_dimensions(request: Mapping[str, Any]) -> tuple[int, int, int]:
    """(width, height, n_frames) of a task, from either format's create fields.

    A `size` of "WxH" and `seconds` (this surface) win; otherwise the reverse
    format's `width`, `height` and `n_frames`, with its defaults of 854x480
    and 150 frames (5 s at 30 fps). Both surfaces show a task through this.
    """
    width = int(request.get("width") or 854)
    height = int(request.get("height") or 480)
    n_frames = int(request.get("n_frames") or 150)
    size = request.get("size")
    if isinstance(size, str) and size.count("x") == 1:
        w, h = size.split("x")
        if w.isdigit() and h.isdigit():
            width, height = int(w), int(h)
    if _is_seconds(request.get("seconds")):
        n_frames = int(request["seconds"]) * 30
    return width, height, n_frames


def video_model(request: Mapping[str, Any]) -> str:
    return str(request.get("model") or "sora-2")


def video_status(status: str, quirks: VideoQuirks) -> str:
    """The video object's `status` for a timeline status (unknown names: lower-cased)."""
    if status == "NOT_START" and quirks.leak_not_start:
        return "NOT_START"
    return _STATUS.get(status, status.lower())


def progress_percent(progress: str) -> int:
    """The integer in a "NN%" progress string, 0 to 100; 0 for garbage."""
    digits = ""
    for char in progress.strip():
        if char not in "0123456789":
            break
        digits += char
    return min(100, int(digits)) if digits else 0


def video_object(
    task: TaskView, state: tuple[str, str], quirks: VideoQuirks, *, video_url: str | None = None
) -> dict[str, Any]:
    """The body of `GET /v1/videos/{id}` for `task` in `state`.

    Args:
        task: The task.
        state: Its (status, progress) on the timeline now.
        quirks: The surface's quirks.
        video_url: The link a completed object carries, if any.
    """
    status, progress = state
    if status == "FAILURE" and quirks.failure_without_status:
        return {"id": task.task_id, "error": {"code": FAILURE_CODE, "message": task.fail_reason}}
    width, height, n_frames = task_dimensions(task.request)
    seconds = task.request.get("seconds")
    done = status in ("SUCCESS", "FAILURE")
    completed_at = task.submit_time + len(task.timeline) if done else None
    body: dict[str, Any] = {
        "id": task.task_id,
        "object": "video",
        "model": video_model(task.request),
        "status": video_status(status, quirks),
        "progress": progress_percent(progress),
        "created_at": task.submit_time,
        "completed_at": completed_at,
        "expires_at": completed_at + EXPIRES_AFTER
        if completed_at is not None and status == "SUCCESS"
        else None,
        "seconds": seconds if isinstance(seconds, str) and seconds else str(n_frames // 30),
        "size": f"{width}x{height}",
        "prompt": task.prompt,
        "error": {"code": FAILURE_CODE, "message": task.fail_reason} if status == "FAILURE" else None,
        "remixed_from_video_id": task.remixed_from,
    }
    if status == "SUCCESS" and video_url is not None:
        body["video_url"] = video_url
    return body


def other_origin(url: str) -> str:
    """`url`'s scheme and port under the server's other loopback name.

    127.0.0.1 becomes localhost; localhost and [::1] become 127.0.0.1.
    """
    parts = urllib.parse.urlsplit(url)
    host = "localhost" if parts.hostname not in ("localhost", "::1") else "127.0.0.1"
    return f"{parts.scheme}://{host}:{parts.port}"


# --- the handlers --------------------------------------------------------------------


def _respond(refusal: Refusal) -> web.Response:
    return web.json_response(refusal.body, status=refusal.status, headers=dict(refusal.headers))


class VideoRoutes(Generic[TaskT]):
    """The `/v1/videos` handlers over a `FakeSoraServer`'s tasks, mounted on its app.

    Args:
        server: The server whose tasks, clock, counters and gate are shared.
        sample_file: Loads the sample MP4 ("mp4") or JPEG ("jpg").
    """

    def __init__(
        self, server: ServerView[TaskT], sample_file: Callable[[Literal["mp4", "jpg"]], bytes]
    ) -> None:
        self._server = server
        self._sample_file = sample_file
        self.cuts_sent = 0
        """How many content answers `content_cut_after` has cut so far (under the current quirks)."""
        self._cutting: VideoQuirks | None = None

    def mount(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/videos", self.create)
        router.add_get("/v1/videos/{video_id}", self.retrieve)
        router.add_get("/v1/videos/{video_id}/content", self.content)
        router.add_post("/v1/videos/{video_id}/remix", self.remix)

    @property
    def _quirks(self) -> VideoQuirks:
        return self._server.video_quirks  # read per request: a test may swap it mid-run

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refused = await self._server._gate(request, body, "create", None)
        if refused is not None:
            return self._on_this_surface(refused)
        parsed = parse_create_body(request.headers.get("Content-Type", ""), body)
        if isinstance(parsed, Refusal):
            return _respond(parsed)
        fields, reference = parsed
        refusal = check_create(fields, self._quirks)
        if refusal is not None:
            return _respond(refusal)
        task = self._server._create_task(fields["prompt"], created_request(fields))
        task.input_reference = reference
        return web.json_response(video_object(task, CREATED_STATE, self._quirks))

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        video_id = request.match_info["video_id"]
        refused = await self._server._gate(request, b"", "query", video_id)
        if refused is not None:
            return self._on_this_surface(refused)
        task = self._server.tasks.get(video_id)
        if task is None:
            return _respond(TASK_NOT_EXIST)
        state = self._server._state(task)
        task.served += 1  # a poll, as on the reverse format: "poll" mode moves on
        link = self._file_url(task, "video") if self._quirks.video_url else None
        return web.json_response(video_object(task, state, self._quirks, video_url=link))

    async def content(self, request: web.Request) -> web.StreamResponse:
        video_id = request.match_info["video_id"]
        refused = await self._server._gate(request, b"", "content", video_id, count_as="content")
        if refused is not None:
            return self._on_this_surface(refused)
        quirks = self._quirks
        variant = request.query.get("variant", "video")
        if quirks.ignore_variant:
            variant = "video"
        elif variant not in VARIANTS:
            return _respond(_invalid(f"variant must be one of {', '.join(VARIANTS)}"))
        task = self._server.tasks.get(video_id)
        if task is None:
            return _respond(TASK_NOT_FOUND)
        status, _ = self._server._state(task)
        if status != "SUCCESS":
            return _respond(not_completed(status))
        if quirks.content_redirect:
            return web.Response(status=302, headers={"Location": self._file_url(task, variant)})
        kind: Literal["mp4", "jpg"] = "mp4" if variant == "video" else "jpg"
        data = self._sample_file(kind)
        media_type = "video/mp4" if kind == "mp4" else "image/jpeg"
        if quirks is not self._cutting:  # new quirks: their content_cuts count from zero
            self._cutting, self.cuts_sent = quirks, 0
        if quirks.content_cut_after is not None and self.cuts_sent < quirks.content_cuts:
            self.cuts_sent += 1
            return await _cut_short(request, data, media_type, quirks.content_cut_after)
        return web.Response(body=data, content_type=media_type)

    async def remix(self, request: web.Request) -> web.StreamResponse:
        source_id = request.match_info["video_id"]
        body = await request.read()
        refused = await self._server._gate(request, body, "create", None)
        if refused is not None:
            return self._on_this_surface(refused)
        source = self._server.tasks.get(source_id)
        if source is None:
            return _respond(ORIGIN_NOT_EXIST)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        prompt = payload.get("prompt") if isinstance(payload, dict) else None
        if not isinstance(prompt, str) or not prompt:
            return _respond(_invalid("prompt is required"))
        model = video_model(source.request)
        if model in self._quirks.unavailable_models:
            return _respond(no_channel(model))
        status, _ = self._server._state(source)
        if status != "SUCCESS":
            return _respond(not_completed(status, "invalid_request"))
        width, height, n_frames = task_dimensions(source.request)
        seconds = source.request.get("seconds")
        inherited = {
            "model": model,
            "seconds": seconds if isinstance(seconds, str) and seconds else str(n_frames // 30),
            "size": f"{width}x{height}",
        }
        task = self._server._create_task(prompt, {**inherited, **payload})
        task.remixed_from = source_id
        return web.json_response(video_object(task, CREATED_STATE, self._quirks))

    def _on_this_surface(self, refused: web.StreamResponse) -> web.StreamResponse:
        """The gate's answer as this surface sends it: 429s rewritten under `chinese_429`."""
        if self._quirks.chinese_429 and refused.status == 429 and not refused.prepared:
            return _respond(saturated(refused.headers.get("Retry-After")))
        return refused

    def _file_url(self, task: TaskT, variant: str) -> str:
        """The task's file on the fake video host, under the other host name."""
        name = "source.mp4" if variant == "video" else f"{variant}.jpg"
        expires = time.strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ", time.gmtime(time.time() + 3600))
        return f"{other_origin(self._server.url)}/_fake/cdn/{task.task_id}/{name}?se={expires}&sig=fake"


async def _cut_short(request: web.Request, data: bytes, media_type: str, limit: int) -> web.StreamResponse:
    """Announce all of `data`, send `limit` bytes of it, then drop the connection."""
    response = web.StreamResponse(headers={"Content-Type": media_type})
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[:limit])
    transport = request.transport
    if transport is not None:
        transport.close()  # close, not abort: the bytes already written still go out
    raise asyncio.CancelledError  # aiohttp then drops the request without finishing it
