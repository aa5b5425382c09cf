"""Fetching a finished video from its host: one reader of the body, three ways to keep it.

`open_video` sends the one request to the video host and yields a
`VideoStream`, the only loop over the body: it counts bytes, enforces the
size the task announced and an optional byte limit, and maps network errors
to `DownloadError`. Its consumers are `save_video` (a file, replaced
atomically or, with `overwrite=False`, never replaced; or a device written
into), `read_video` (bytes in memory) and `SoraClient.stream_video` (the
caller's own loop). The session given must carry no credentials: the video
host is not the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import inspect
import os
import pathlib
import secrets
import stat
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO

import aiohttp
import anyio

from ._download_plan import IMAGE_VARIANTS, Destination, DownloadPlan, check_destination, url_expiry
from ._errors import (
    ClientClosedError,
    DestinationExistsError,
    DownloadError,
    DownloadTimeoutError,
    SoraError,
    URLExpiredError,
)
from ._protocol import auth_headers, error_from_response

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DownloadProgress",
    "VideoStream",
    "open_video",
    "read_video",
    "save_video",
]

DownloadProgress = Callable[[int, "int | None"], "Awaitable[object] | object"]
"""Called with (bytes written so far, total bytes or None); may be async."""

DEFAULT_MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
"""The most bytes `download_bytes` holds in memory by default (256 MiB).

A 20 s 1080p Sora source video is a few tens of MB; stream or save anything
larger.
"""

CHUNK_SIZE = 64 * 1024
# What link() fails with where the file system has no hard links (FAT, exFAT,
# some FUSE and network mounts): EPERM on Linux, ENOTSUP/EOPNOTSUPP or ENOSYS
# elsewhere. EXDEV and EMLINK cannot come from a temporary file beside its
# target, but would mean the same: this link cannot be made.
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}
)
# How often to look again for a reader of a FIFO that has none yet (seconds).
_FIFO_READER_CHECK = 0.05


def _never() -> bool:
    return False


class VideoStream:
    """A video arriving from its host, as an async iterator of byte chunks (64 KiB at most each).

    Get one from `SoraClient.stream_video`, and read it inside that `async
    with` block: the connection is closed when the block ends, whether the
    body was read to its end or not. Sizes are checked as the body arrives:
    a body longer than the task announced (or than a byte limit) raises as
    soon as it is, a shorter one raises at its end instead of ending the
    iteration.

    Attributes:
        task_id: The task whose file this is.
        variant: The variant really fetched, after any fallback (see `Variant`).
        generation: The index of the generation fetched.
        size: The total in bytes: as the task announced it, else the
            host's Content-Length, else None.
        received: The bytes received so far.

    Iteration raises:
        DownloadError: The body is longer or shorter than announced, over
            the byte limit, or cut off (`retryable`).
        DownloadTimeoutError: The transfer timed out (a `DownloadError`).
        ClientClosedError: The client was closed during the transfer.
        RuntimeError: The stream is read after its block ended.
    """

    __slots__ = (
        "_closed",
        "_eof",
        "_max_bytes",
        "_plan",
        "_response",
        "generation",
        "received",
        "size",
        "task_id",
        "variant",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        plan: DownloadPlan,
        *,
        max_bytes: int | None,
        closed: Callable[[], bool],
    ) -> None:
        self.task_id = plan.task_id
        self.variant = plan.variant
        self.generation = plan.generation
        self.size = plan.expected_size if plan.expected_size is not None else response.content_length
        self.received = 0
        self._response: aiohttp.ClientResponse | None = response
        self._plan = plan
        self._max_bytes = max_bytes
        self._closed = closed
        self._eof = False

    def __repr__(self) -> str:
        return (
            f"<VideoStream task {self.task_id} generation {self.generation} {self.variant}: "
            f"{self.received} of {self.size if self.size is not None else '?'} bytes>"
        )

    def __aiter__(self) -> VideoStream:
        return self

    async def __anext__(self) -> bytes:
        response = self._response
        if response is None:
            raise RuntimeError("this VideoStream is closed: read it inside its 'async with' block")
        if self._eof:
            raise StopAsyncIteration
        plan = self._plan
        try:
            if self._closed():  # even with bytes still buffered: a closed client reads no more
                raise _closed_error(plan)
            try:
                chunk = await response.content.read(CHUNK_SIZE)
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                raise _transfer_error(plan, self.received, exc, self._closed) from exc
            except RuntimeError:  # aiohttp's "Connection closed." once the session is closed
                if self._closed():
                    raise _closed_error(plan) from None
                raise
            if not chunk:
                expected = plan.expected_size
                if expected is not None and self.received != expected:
                    raise DownloadError(
                        f"the {plan.variant} file of task {plan.task_id} is {self.received} bytes; "
                        f"the task says {expected}"
                    )
                self._eof = True
                raise StopAsyncIteration
            self.received += len(chunk)
            self._check_length(self.received)
        except SoraError:
            self.close()  # no use for the rest of the body
            raise
        return chunk

    def _check_length(self, length: int) -> None:
        plan = self._plan
        if plan.expected_size is not None and length > plan.expected_size:
            raise DownloadError(
                f"the {plan.variant} file of task {plan.task_id} is longer than the "
                f"{plan.expected_size} bytes the task says"
            )
        if self._max_bytes is not None and length > self._max_bytes:
            raise DownloadError(
                f"the {plan.variant} file of task {plan.task_id} is over max_bytes={self._max_bytes}"
            )

    def close(self) -> None:
        """Let the connection go: back to the pool after a complete body, else closed. Idempotent."""
        response, self._response = self._response, None
        if response is None:
            return
        if self._eof:
            response.release()
        else:
            response.close()


@dataclasses.dataclass(frozen=True)
class APIAccess:
    """How to fetch a file the API itself serves (the OpenAI format's `/content`).

    Attributes:
        api_key: Sent to `plan.url`'s origin only (its `headers`), and
            scrubbed from the API's error messages.
        other_origin: The session for a redirect to another origin (a CDN),
            which gets none of `headers`.
    """

    api_key: str = dataclasses.field(repr=False)
    other_origin: aiohttp.ClientSession

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.api_key)


@contextlib.asynccontextmanager
async def open_video(
    session: aiohttp.ClientSession,
    plan: DownloadPlan,
    *,
    total_seconds: float | None = None,
    max_bytes: int | None = None,
    closed: Callable[[], bool] = _never,
    api: APIAccess | None = None,
) -> AsyncIterator[VideoStream]:
    """Send the request for `plan.url`; yield its body as a `VideoStream`; close the connection on exit.

    Args:
        session: A session with no credentials of the API (with `api`, the
            API's session).
        plan: What to fetch.
        api: For a file the API serves: redirects are followed by hand, at
            most `MAX_REDIRECTS`, and `api.headers` go only to the API's
            origin; an error answer from the API is read as the API error
            it is (`TaskNotFoundError`, `VideoNotReadyError`, ...).
        total_seconds: Seconds for the request and the whole body; None for
            no limit (a host that sends nothing for 60 s still fails).
        max_bytes: The most bytes accepted, or None.
        closed: Tells whether the client was closed, to raise
            `ClientClosedError` instead of a network error it caused.

    Raises:
        URLExpiredError: The host answered 403 (signed URLs expire).
        DownloadError: Another status, a network error (`retryable`), or a
            size over `max_bytes` or unlike the task's.
        DownloadTimeoutError: The request timed out (a `DownloadError`).
        ClientClosedError: The client was closed.
    """
    limits = aiohttp.ClientTimeout(total=total_seconds, sock_connect=30, sock_read=60)
    try:
        if api is None:
            response = await session.get(plan.url, timeout=limits)
        else:
            response = await _follow_by_hand(session, plan, api, limits)
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        raise _transfer_error(plan, 0, exc, closed) from exc
    except RuntimeError:  # aiohttp's "Session is closed"
        if closed():
            raise _closed_error(plan) from None
        raise
    stream = VideoStream(response, plan, max_bytes=max_bytes, closed=closed)
    try:
        if api is not None and response.status != 200 and _same_origin(str(response.url), plan.url):
            body = await response.content.read(64 * 1024)
            raise error_from_response(response.status, response.headers, body, secret=api.api_key)
        _check_answer(response, stream, plan)
        yield stream
    finally:
        stream.close()


MAX_REDIRECTS = 5


async def _follow_by_hand(
    session: aiohttp.ClientSession, plan: DownloadPlan, api: APIAccess, limits: aiohttp.ClientTimeout
) -> aiohttp.ClientResponse:
    """GET `plan.url` with the API's headers, following redirects; the headers never leave its origin."""
    url = plan.url
    for _ in range(MAX_REDIRECTS + 1):
        if _same_origin(url, plan.url):
            response = await session.get(url, headers=api.headers, allow_redirects=False, timeout=limits)
        else:
            response = await api.other_origin.get(url, allow_redirects=False, timeout=limits)
        location = response.headers.get("Location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        response.release()
        url = urllib.parse.urljoin(url, location)
    raise DownloadError(f"the file of task {plan.task_id} redirects more than {MAX_REDIRECTS} times")


def _same_origin(url: str, other: str) -> bool:
    first, second = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    return (first.scheme, first.hostname, first.port) == (second.scheme, second.hostname, second.port)


def _check_answer(response: aiohttp.ClientResponse, stream: VideoStream, plan: DownloadPlan) -> None:
    if response.status == 403:
        raise URLExpiredError(_expired_message(plan))
    if response.status != 200:
        error = DownloadError(f"the video host answered HTTP {response.status} for task {plan.task_id}")
        error.retryable = response.status == 429 or response.status >= 500
        raise error
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith(("text/", "application/json")):  # an error page served with a 200
        raise DownloadError(
            f"the {plan.variant} file of task {plan.task_id} came as {content_type}, not as a video or image"
        )
    if plan.variant in IMAGE_VARIANTS and content_type.startswith("video/"):
        raise DownloadError(
            f"asked for the {plan.variant} of task {plan.task_id}, the server sent a video "
            f"({content_type}): the gateway ignored the variant (PROTOCOL.md, Part 2)"
        )
    length = response.content_length
    if length is not None and "Content-Encoding" not in response.headers:
        if plan.expected_size is not None and length != plan.expected_size:
            raise DownloadError(
                f"the video host announces {length} bytes for the {plan.variant} file of task "
                f"{plan.task_id}; the task says {plan.expected_size}"
            )
        stream._check_length(length)
    elif plan.expected_size is not None:
        stream._check_length(plan.expected_size)


def _closed_error(plan: DownloadPlan) -> ClientClosedError:
    return ClientClosedError(f"the client was closed during the download of task {plan.task_id}")


def _transfer_error(
    plan: DownloadPlan, received: int, exc: BaseException, closed: Callable[[], bool]
) -> SoraError:
    if closed():  # aclose() closed the session under the transfer
        return _closed_error(plan)
    if isinstance(exc, asyncio.TimeoutError):
        return DownloadTimeoutError(f"downloading task {plan.task_id} timed out after {received} bytes")
    error = DownloadError(
        f"downloading task {plan.task_id} failed after {received} bytes: {type(exc).__name__}"
    )
    error.retryable = True
    return error


def _expired_message(plan: DownloadPlan) -> str:
    expiry = url_expiry(plan.url)
    when = f" (it expired at {expiry:%Y-%m-%d %H:%M} UTC)" if expiry is not None else ""
    return (
        f"the video URL of task {plan.task_id} was refused (HTTP 403){when}; signed URLs expire, "
        "so fetch the task again with get_task for fresh URLs"
    )


async def read_video(
    session: aiohttp.ClientSession,
    plan: DownloadPlan,
    *,
    max_bytes: int,
    total_seconds: float | None = None,
    closed: Callable[[], bool] = _never,
    api: APIAccess | None = None,
) -> bytes:
    """The whole file as bytes, refused (DownloadError) as soon as it is known to pass `max_bytes`."""
    body = bytearray()
    async with open_video(
        session, plan, total_seconds=total_seconds, max_bytes=max_bytes, closed=closed, api=api
    ) as video:
        async for chunk in video:
            body += chunk
    return bytes(body)


async def save_video(
    session: aiohttp.ClientSession,
    plan: DownloadPlan,
    dest: str | os.PathLike[str],
    *,
    on_progress: DownloadProgress | None = None,
    total_seconds: float | None = None,
    closed: Callable[[], bool] = _never,
    overwrite: bool = True,
    api: APIAccess | None = None,
) -> pathlib.Path:
    """Download `plan.url` to `dest`, as `check_destination` describes; return the path as named.

    The destination is checked first, then opened, and only then is the
    request sent: a destination that cannot be written costs no request to
    the video host. A "file" is written to a temporary file beside its target, which is
    renamed over the target once complete and of the announced size: after a
    failure or a cancellation nothing is left under the name. A "device" (a
    character device or FIFO) is written into directly, so what arrived
    before a failure stays written; a FIFO is opened once a reader has it
    open (checked every 50 ms, within `total_seconds`).

    With `overwrite` False, a "file" that exists is refused before the
    request, and the complete temporary file is committed with a hard link
    that fails if anything appeared under the target meanwhile (a check then
    a rename where the file system has no hard links). Devices are not
    concerned. The temporary file is removed whatever happens.

    Raises:
        DestinationExistsError: `overwrite` is False and the file exists, or
            appeared during the transfer (then it is kept as it is).
        URLExpiredError: The host answered 403.
        DownloadError: The destination cannot be written (an `OSError` is
            the cause), or the transfer failed (see `open_video`).
        ClientClosedError: The client was closed during the transfer.
    """
    loop = asyncio.get_running_loop()
    deadline = None if total_seconds is None else loop.time() + total_seconds
    destination = await anyio.to_thread.run_sync(
        functools.partial(check_destination, dest, plan.file_name, overwrite=overwrite)
    )
    sink = await _Sink.open(destination, deadline, overwrite=overwrite)
    try:
        remaining = None if deadline is None else max(0.001, deadline - loop.time())
        async with open_video(session, plan, total_seconds=remaining, closed=closed, api=api) as video:
            async for chunk in video:
                await sink.write(chunk)
                if on_progress is not None:
                    result = on_progress(video.received, video.size)
                    if inspect.isawaitable(result):
                        await result
        await sink.commit()
    except BaseException:
        sink.discard()
        raise
    return destination.path


class _Sink:
    """An open destination: a temporary file to rename over the target, or a device."""

    __slots__ = ("_deadline", "_destination", "_file", "_overwrite", "_temporary")

    def __init__(
        self,
        file: BinaryIO,
        destination: Destination,
        temporary: str | None,
        deadline: float | None = None,
        *,
        overwrite: bool = True,
    ) -> None:
        self._file = file
        self._destination = destination
        self._temporary = temporary
        self._deadline = deadline
        self._overwrite = overwrite

    @classmethod
    async def open(cls, destination: Destination, deadline: float | None, *, overwrite: bool = True) -> _Sink:
        if destination.kind == "device":
            return cls(await _open_device(destination.path, deadline), destination, None, deadline)
        if destination.kind != "file":
            raise ValueError(f"a download needs a file or a device, not a {destination.kind}")
        return await anyio.to_thread.run_sync(
            functools.partial(cls._open_temporary, destination, overwrite=overwrite)
        )

    @classmethod
    def _open_temporary(cls, destination: Destination, *, overwrite: bool) -> _Sink:
        target = destination.target
        # A hidden name beside the target, so the rename stays on one file
        # system; cut so that it fits in NAME_MAX (255 bytes) whatever the name.
        prefix = os.fsdecode(os.fsencode(target.name)[:200])
        temporary = str(target.parent / f".{prefix}.{secrets.token_hex(6)}.part")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _write_error(destination, exc) from exc
        return cls(os.fdopen(fd, "wb"), destination, temporary, overwrite=overwrite)

    async def write(self, chunk: bytes) -> None:
        try:
            if self._temporary is None:  # a device or FIFO: never a thread that cannot be cancelled
                await _write_nonblocking(self._file.fileno(), chunk, self._deadline, self._destination)
            else:
                await anyio.to_thread.run_sync(self._file.write, chunk)
        except OSError as exc:
            raise _write_error(self._destination, exc) from exc

    async def commit(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._finish)
        except DestinationExistsError:  # a FileExistsError, but no write error
            raise
        except OSError as exc:
            raise _write_error(self._destination, exc) from exc

    def _finish(self) -> None:
        self._file.close()  # flushes: a full disk may only show here
        if self._temporary is None:
            return
        target = self._destination.target
        if not self._overwrite:
            self._link_into_place(self._temporary, target)
            self._temporary = None
            return
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(target).st_mode
            if not stat.S_ISREG(mode):  # it changed since check_destination
                raise DownloadError(f"{target} is no longer a regular file; it was not replaced")
        os.replace(self._temporary, target)
        self._temporary = None

    def _link_into_place(self, temporary: str, target: pathlib.Path) -> None:
        """Give `temporary` the name `target` unless something already has it, then drop `temporary`."""
        try:
            # link() fails with EEXIST if anything has the name, in one step:
            # no file created since check_destination can be lost.
            os.link(temporary, target)
        except FileExistsError as exc:
            raise self._appeared() from exc
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # No hard links on this file system: check, then rename. A file
            # created between the two is replaced; nothing better is portable
            # (renameat2's RENAME_NOREPLACE is Linux-only and not in os).
            if os.path.lexists(target):
                raise self._appeared() from None
            os.replace(temporary, target)
            return
        # The video is in place under its name; a temporary name left behind
        # (it cannot be removed) must not turn that into a failure.
        with contextlib.suppress(OSError):
            os.unlink(temporary)

    def _appeared(self) -> DestinationExistsError:
        path = self._destination.path
        message = f"{path} appeared during the download and was kept; pass overwrite=True to replace it"
        return DestinationExistsError(path, message=message)

    def discard(self) -> None:
        # Synchronous on purpose: a cancelled task must clean up without awaiting.
        with contextlib.suppress(OSError):
            self._file.close()
        if self._temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temporary)


async def _open_device(path: pathlib.Path, deadline: float | None) -> BinaryIO:
    """Open a character device or FIFO for writing, waiting for a FIFO's reader until `deadline`."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            # O_NONBLOCK: opening a FIFO without a reader fails (ENXIO) instead
            # of blocking a thread that cancellation could not stop.
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO and _is_fifo(path):
                if deadline is not None and loop.time() >= deadline:
                    raise DownloadError(f"no reader opened the FIFO {path} in time") from exc
                await asyncio.sleep(_FIFO_READER_CHECK)
                continue
            raise DownloadError(f"cannot write to {path}: {exc.strerror or type(exc).__name__}") from exc
        try:
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):  # it changed since check_destination
                raise DownloadError(f"{path} is no longer a device or FIFO")
        except BaseException:
            os.close(fd)
            raise
        # Left non-blocking: a reader that stops reading makes writes wait in
        # the event loop (see `_write_nonblocking`), where a cancellation or
        # the download's timeout ends them, never in a thread.
        return os.fdopen(fd, "wb", buffering=0)


async def _write_nonblocking(fd: int, chunk: bytes, deadline: float | None, destination: Destination) -> None:
    """Write all of `chunk` to a non-blocking `fd`, waiting in the event loop while it is full.

    Raises:
        DownloadError: `deadline` (loop time) passed while the reader took nothing.
    """
    view = memoryview(chunk)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            if not await _writable(fd, deadline):
                raise DownloadError(
                    f"{destination.path} took no more bytes before the download's timeout "
                    "(its reader stopped reading)"
                ) from None


async def _writable(fd: int, deadline: float | None) -> bool:
    """Wait until `fd` may take more bytes; False if `deadline` (loop time) passed first.

    Polls every 10 ms where the loop cannot watch `fd` (a device without
    readiness events, a loop without `add_writer`).
    """
    loop = asyncio.get_running_loop()
    if deadline is not None and loop.time() >= deadline:
        return False
    ready: asyncio.Future[bool] = loop.create_future()

    def settle(writable: bool) -> None:
        if not ready.done():
            ready.set_result(writable)

    try:
        loop.add_writer(fd, settle, True)
    except (NotImplementedError, PermissionError, ValueError):
        await asyncio.sleep(0.01)
        return True
    timer = None if deadline is None else loop.call_at(deadline, settle, False)
    try:
        return await ready
    finally:
        loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()


def _is_fifo(path: pathlib.Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _write_error(destination: Destination, exc: OSError) -> DownloadError:
    return DownloadError(f"cannot write to {destination.path}: {exc.strerror or type(exc).__name__}")
