"""`SoraClient.videos`: the OpenAI-format video API (`/v1/videos`) on the client's one engine.

The surface CometAPI serves for sora-2, sora-2-pro and its other video
models (PROTOCOL.md, Part 2). It shares everything with the reverse format
but the wire: the client's key, request budget, retries and poll policy
(what the `CadencePolicy` learns of the gateway's sweep serves both), and
the waits of `TaskWaits`, so a video is waited for, batched and downloaded
exactly as a task is.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import pathlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import IO, Any, TypeVar, Union

import aiohttp
import msgspec

from ._budget import check_count
from ._cadence_memory import CadenceMemory
from ._download import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    APIAccess,
    DownloadProgress,
    VideoStream,
    open_video,
    read_video,
    save_video,
)
from ._download_plan import DownloadPlan
from ._errors import APIConnectionError, DownloadError, SoraError
from ._gate import Gate
from ._journal import BeforeSend, Journal, journaled_create
from ._models import Task, TaskStatus
from ._policy import PollPolicy
from ._protocol import normalize_task_id
from ._transport import Response, Transport, retry_idempotent
from ._videos_protocol import (
    CONTENT_VARIANTS,
    VIDEOS_PATH,
    ContentVariant,
    build_video_create,
    content_path,
    form_value,
    parse_video_response,
    remix_path,
    video_path,
)
from ._waits import (
    DEFAULT_WAIT_TIMEOUT,
    ProgressCallback,
    TaskWaits,
    check_timeout,
    time_left,
)

__all__ = ["DOWNLOAD_ATTEMPTS", "MAX_INPUT_REFERENCE_BYTES", "InputReference", "Videos"]

_T = TypeVar("_T")

InputReference = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""An image to start from: a path, the bytes, or a binary file object (read from where it stands
to its end)."""

MAX_INPUT_REFERENCE_BYTES = 50 * 1024 * 1024
"""The largest `input_reference` sent (50 MiB): an image to start a video from is far smaller."""

DOWNLOAD_ATTEMPTS = 3
"""Tries of a file transfer that failed for a passing reason: the gateway's cut of a long body
after 60 s with a 200 already sent (PROTOCOL.md, Part 2), a reset, a 5xx or a 429 from `/content`.
Each starts from the first byte, as the gateway has no `Range` support, after the client's retry
backoff, within the call's deadline."""

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"ftyp", 4, "video/mp4"),
)


class Videos(TaskWaits):
    """The OpenAI-format video API, as `client.videos`; see the module docstring.

    Ids are opaque strings (`task_...` or `video_...`), checked as task ids
    are. Every wait (`wait_until_done`, `watch`, `generate`, `as_completed`,
    `wait_many`) has the semantics of the client's own: one deadline, a
    final poll just before it, `TaskFailedError` on FAILURE, and an unknown
    status (`unknown`, a leaked `NOT_START`) is pending, never final.
    """

    def __init__(
        self,
        transport: Transport,
        poll: PollPolicy,
        api_key: str,
        journal: Journal | None = None,
        memory: CadenceMemory | None = None,
    ) -> None:
        self._transport = transport
        self._poll = poll
        self._api_key = api_key
        self._journal = journal
        self._memory = memory

    def __repr__(self) -> str:
        return f"<Videos of {self._transport.base_url}>"

    # --- one video ----------------------------------------------------------

    async def create(
        self,
        prompt: str,
        *,
        model: str,
        seconds: int | str | None = None,
        size: str | None = None,
        input_reference: InputReference | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Create a video and return its id.

        Sent as JSON, or as `multipart/form-data` with an `input_reference`
        (its content type sniffed from its first bytes, else guessed from
        its file name). A create is resent only when it provably did not
        arrive, as for `SoraClient.create_video`.

        Args:
            prompt: What to generate.
            model: The model, such as "sora-2" or "sora-2-pro" (required by
                the gateway: PROTOCOL.md, Part 2).
            seconds: The duration in seconds ("4", "8", "12" for sora-2), as
                an int or a string; None for the model's default.
            size: WIDTHxHEIGHT, such as "1280x720"; None for the default
                ("720x1280").
            input_reference: An image (path, bytes or binary file) to start
                from; it should match `size`.
            extra_body: More fields the SDK does not know, sent as strings.
            timeout: Seconds for the whole call, as for `get_task`.

        Raises:
            TypeError, ValueError: An argument is invalid; nothing was sent.
            ModelNotAvailableError: No channel serves `model` (final).
            BadRequestError: The gateway refused a field (`code` says which:
                `invalid_seconds`, `invalid_size`, ...).
            APITimeoutError: `timeout` passed first; if `request_sent`, the
                video may exist.
            SoraError: Another API error, or the outcome is unknown.
        """
        check_timeout(timeout)
        fields = build_video_create(prompt, model=model, seconds=seconds, size=size, extra_body=extra_body)
        return await self._create(fields, input_reference, deadline=self._deadline(timeout))

    async def retrieve(self, video_id: str, *, timeout: float | None = None) -> Task:
        """Fetch one snapshot of a video (a `Task` with `format` "openai").

        Raises:
            ValueError: The id or timeout is invalid.
            TaskNotFoundError: The gateway knows no such video.
            APITimeoutError: `timeout` passed first.
            SoraError: Another API, connection or decode error.
        """
        path = video_path(normalize_task_id(video_id))
        check_timeout(timeout)
        deadline = self._deadline(timeout)
        await self._remembered(deadline)
        return await self._transport.call("GET", path, None, self._parse, retry_idempotent, deadline)

    async def generate(
        self,
        prompt: str,
        *,
        model: str,
        seconds: int | str | None = None,
        size: str | None = None,
        input_reference: InputReference | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Task:
        """Create a video and wait for it, under one deadline for both.

        Once the video is created, whatever ends this call names it (`.task_id`
        on a `SoraError`, a note on anything else), as `SoraClient.generate` does.

        Raises:
            As `create`, then as `wait_until_done`.
        """
        check_timeout(timeout)
        fields = build_video_create(prompt, model=model, seconds=seconds, size=size, extra_body=extra_body)
        gate = self._transport.gate()
        started = gate.now()
        deadline = self._deadline(timeout)
        video_id = await self._create(fields, input_reference, deadline=deadline)
        return await self._wait_created(
            video_id,
            started=started,
            deadline=deadline,
            timeout=timeout,
            poll=poll,
            on_progress=on_progress,
            waiter="client.videos.wait_until_done",
        )

    async def remix(self, video_id: str, prompt: str, *, timeout: float | None = None) -> str:
        """Start a new video from a completed one and a new prompt; return the new id.

        Wait for it as for any video. The source must be completed
        (PROTOCOL.md, Part 2: whether the gateway forwards remixes on every
        deployment is unverified). Never resent once it may have arrived.

        Raises:
            TypeError, ValueError: An argument is invalid; nothing was sent.
            BadRequestError: The source is not completed, or the prompt is refused.
            SoraError: As for `create`.
        """
        source = normalize_task_id(video_id)
        path = remix_path(source)
        check_timeout(timeout)
        fields = build_video_create(prompt, model="remix")
        body = _json_body({"prompt": fields["prompt"]})
        deadline = self._deadline(timeout)

        def send(before_send: BeforeSend | None = None) -> Awaitable[str]:
            return self._transport.call(
                "POST", path, body, self._parse_id, _retry_video_create, deadline, before_send=before_send
            )

        if self._journal is None:
            return await send()
        return await journaled_create(
            self._journal,
            "openai",
            fields["prompt"],
            {"remix_of": source},
            send,
            base_url=self._transport.base_url,
        )

    # --- files --------------------------------------------------------------

    async def download(
        self,
        task_or_id: Task | str,
        dest: str | os.PathLike[str],
        *,
        variant: ContentVariant = "video",
        on_progress: DownloadProgress | None = None,
        timeout: float | None = None,
        overwrite: bool = True,
    ) -> pathlib.Path:
        """Save a completed video's file (`/content`) as `SoraClient.download` saves a task's.

        The file is served by the gateway, so the request carries the API
        key to the API's host and to nothing else: a redirect to another
        host is followed without it. A transfer cut short (the gateway cuts
        a long body after 60 s) is tried again, `DOWNLOAD_ATTEMPTS` times in
        all, from the first byte. In a folder the file is named
        `<id>_video.mp4` (`_thumbnail.webp`, `_spritesheet.jpg`).

        Args:
            task_or_id: A completed video's `Task`, or its id.
            dest, on_progress, timeout, overwrite: As for `SoraClient.download`.
            variant: "video", "thumbnail" or "spritesheet".

        Raises:
            ValueError: `variant` or `timeout` is invalid, or `task_or_id` is
                a `Task` of the reverse format; nothing is sent.
            VideoNotReadyError: Given an id, the gateway says the video has
                not completed. Given a `Task` that has not succeeded, a
                `DownloadError` is raised instead, before anything is sent.
            TaskNotFoundError: The gateway knows no such video.
            DownloadError: As for `SoraClient.download`; also when a
                thumbnail or spritesheet came as a video (the gateway ignored
                the variant).
        """
        plan, gate, deadline = await self._plan(task_or_id, variant, timeout)

        async def attempt() -> pathlib.Path:
            return await save_video(
                self._transport.api_session(),
                plan,
                dest,
                on_progress=on_progress,
                total_seconds=time_left(gate, deadline),
                closed=self._is_closed,
                overwrite=overwrite,
                api=self._access(),
            )

        path = await self._transfer(attempt, plan, deadline)
        await self._saved(plan.task_id, variant, path)
        return path

    async def download_bytes(
        self,
        task_or_id: Task | str,
        *,
        variant: ContentVariant = "video",
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        timeout: float | None = None,
    ) -> bytes:
        """A completed video's file as bytes; see `download` and `SoraClient.download_bytes`."""
        check_count("max_bytes", max_bytes, minimum=1)
        plan, gate, deadline = await self._plan(task_or_id, variant, timeout)

        async def attempt() -> bytes:
            return await read_video(
                self._transport.api_session(),
                plan,
                max_bytes=max_bytes,
                total_seconds=time_left(gate, deadline),
                closed=self._is_closed,
                api=self._access(),
            )

        return await self._transfer(attempt, plan, deadline)

    def stream_video(
        self, task_or_id: Task | str, *, variant: ContentVariant = "video", timeout: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[VideoStream]:
        """A completed video's file as an async stream of chunks; see `SoraClient.stream_video`.

        One try: a stream that was cut raises, since its chunks are already
        the caller's.
        """
        _check_variant(variant)
        check_timeout(timeout)
        return self._stream(task_or_id, variant, timeout)

    @contextlib.asynccontextmanager
    async def _stream(
        self, task_or_id: Task | str, variant: ContentVariant, timeout: float | None
    ) -> AsyncGenerator[VideoStream, None]:
        plan, gate, deadline = await self._plan(task_or_id, variant, timeout)
        async with open_video(
            self._transport.api_session(),
            plan,
            total_seconds=time_left(gate, deadline),
            closed=self._is_closed,
            api=self._access(),
        ) as video:
            yield video

    # --- internals ----------------------------------------------------------

    async def _poll_once(self, task_id: str, deadline: float | None) -> tuple[Task, float | None]:
        await self._remembered(deadline)
        response = await self._transport.send("GET", video_path(task_id), None, deadline)
        return self._parse(response), response.retry_after

    def _parse(self, response: Response) -> Task:
        return self._seen(
            parse_video_response(response.status, response.headers, response.body, secret=self._api_key)
        )

    def _parse_id(self, response: Response) -> str:
        return self._parse(response).task_id

    async def _create(
        self, fields: dict[str, str], reference: InputReference | None, *, deadline: float | None
    ) -> str:
        options: dict[str, Any] = {key: value for key, value in fields.items() if key != "prompt"}
        if reference is None:
            body, content_type = _json_body(fields), "application/json"
        else:
            body, content_type, options["input_reference"] = await _multipart(fields, reference)

        def send(before_send: BeforeSend | None = None) -> Awaitable[str]:
            return self._transport.call(
                "POST",
                VIDEOS_PATH,
                body,
                self._parse_id,
                _retry_video_create,
                deadline,
                content_type=content_type,
                before_send=before_send,
            )

        if self._journal is None:
            return await send()
        return await journaled_create(
            self._journal, "openai", fields["prompt"], options, send, base_url=self._transport.base_url
        )

    async def _plan(
        self, task_or_id: Task | str, variant: ContentVariant, timeout: float | None
    ) -> tuple[DownloadPlan, Gate, float | None]:
        _check_variant(variant)
        check_timeout(timeout)
        gate = self._transport.gate()
        deadline = self._deadline(timeout)
        if isinstance(task_or_id, Task):
            if task_or_id.format != "openai":
                raise ValueError(
                    f"task {task_or_id.task_id} is of the reverse format (/sora/v1/videos); "
                    "download it with client.download, not client.videos.download"
                )
            if task_or_id.status is not TaskStatus.SUCCESS:
                raise DownloadError(
                    f"video {task_or_id.task_id} has no file yet (status {task_or_id.raw_status or '?'})"
                )
            video_id = task_or_id.task_id
        else:
            video_id = normalize_task_id(task_or_id)
        url = self._transport.base_url + content_path(video_id, variant)
        return DownloadPlan(video_id, variant, url, None), gate, deadline

    async def _transfer(
        self, attempt: Callable[[], Awaitable[_T]], plan: DownloadPlan, deadline: float | None
    ) -> _T:
        """A file transfer, tried again while it fails for a passing reason (`retryable`), through
        the client's one resend loop: `DOWNLOAD_ATTEMPTS` tries in all, within the deadline."""
        path = plan.url.removeprefix(self._transport.base_url)
        return await self._transport.retrying(
            attempt, lambda exc: exc.retryable, deadline, f"GET {path}", DOWNLOAD_ATTEMPTS - 1
        )

    def _access(self) -> APIAccess:
        return APIAccess(api_key=self._api_key, other_origin=self._transport.cdn_session())


def _check_variant(variant: object) -> None:
    if variant not in CONTENT_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(CONTENT_VARIANTS)}; got {variant!r}")


def _retry_video_create(exc: SoraError, response: Response | None) -> bool:
    """Whether a create or remix of this surface may be resent: only when it provably never
    left. The gateway rewrites every 429 here (PROTOCOL.md, Part 2), so a 429 cannot show that
    the create was turned away before it was relayed, as it can on the reverse format."""
    return isinstance(exc, APIConnectionError) and not exc.request_sent


def _json_body(fields: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode(dict(fields))


async def _multipart(
    fields: Mapping[str, Any], reference: InputReference
) -> tuple[bytes, str, dict[str, Any]]:
    """The multipart body (aiohttp's writer), its content type, and the reference as the
    journal describes it (file name, size in bytes, content type)."""
    data, name = await _read_reference(reference)
    content_type = _sniff(data, name)
    if not content_type.startswith(("image/", "video/")):
        raise ValueError(
            f"input_reference {name!r} is not an image (PNG, JPEG, WEBP or GIF): its first bytes "
            "and its name say neither"
        )
    form = aiohttp.FormData()
    for key, value in fields.items():
        if value is not None:
            form.add_field(key, form_value(value))
    form.add_field("input_reference", data, filename=name, content_type=content_type)
    payload = form()
    sink = _Collect()
    await payload.write(sink)  # type: ignore[arg-type]
    described = {"name": name, "bytes": len(data), "content_type": content_type}
    return bytes(sink.data), payload.content_type, described


class _Collect:
    """A stream writer that keeps what aiohttp writes, to send the body as bytes (and resend it)."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


async def _read_reference(reference: InputReference) -> tuple[bytes, str]:
    """The reference's bytes and a safe file name for the form, checked: not empty, not too large."""
    limit = MAX_INPUT_REFERENCE_BYTES
    if isinstance(reference, (bytes, bytearray, memoryview)):
        data, name = bytes(reference), "input_reference"
    elif isinstance(reference, (str, os.PathLike)):
        path = pathlib.Path(reference)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size > limit:
                raise ValueError(f"input_reference {str(path)!r} is {size:,} bytes; the limit is {limit:,}")
            data, name = await asyncio.to_thread(path.read_bytes), path.name
        except OSError as exc:
            raise ValueError(f"cannot read input_reference {str(path)!r}: {exc.strerror or exc}") from exc
    else:
        read = getattr(reference, "read", None)
        if read is None:
            raise TypeError(
                f"input_reference must be a path, bytes or a binary file, not {type(reference).__name__}"
            )
        data = await asyncio.to_thread(read, limit + 1)
        if not isinstance(data, bytes):
            raise TypeError(
                f"input_reference.read() must return bytes (a file opened with 'rb'), "
                f"not {type(data).__name__}"
            )
        name = os.path.basename(str(getattr(reference, "name", "") or "")) or "input_reference"
    if not data:
        raise ValueError("input_reference is empty (a file at its end is read from where it stands)")
    if len(data) > limit:
        raise ValueError(f"input_reference is over {limit:,} bytes")
    return data, _SAFE_NAME.sub("_", name).strip("._") or "input_reference"


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _sniff(data: bytes, name: str) -> str:
    """An image's (or video's) content type from its first bytes, else from its name, else octet-stream."""
    for magic, offset, content_type in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return content_type
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"
