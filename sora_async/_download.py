"""Streaming a finished video to disk: chunked, atomic, size-checked, without the API key."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pathlib
import secrets
from collections.abc import Awaitable, Callable

import aiohttp
import anyio

from ._download_plan import DownloadPlan, url_expiry
from ._errors import DownloadError, URLExpiredError

__all__ = ["DownloadProgress", "stream_to_file"]

DownloadProgress = Callable[[int, "int | None"], "Awaitable[object] | object"]
"""Called with (bytes written so far, total bytes or None); may be async."""

CHUNK_SIZE = 64 * 1024


async def stream_to_file(
    session: aiohttp.ClientSession,
    plan: DownloadPlan,
    path: pathlib.Path,
    *,
    on_progress: DownloadProgress | None = None,
    total_seconds: float | None = None,
) -> pathlib.Path:
    """Download `plan.url` into `path` through a temporary file in the same folder.

    The session must carry no credentials: the CDN is not the API.

    Raises:
        URLExpiredError: The CDN answered 403.
        DownloadError: Any other failure; no file is left under `path`.
    """
    await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    # A hidden name beside the target, so the final rename stays on one file
    # system; created exclusively, with the permissions the umask allows.
    temporary = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.part")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        written = await _fetch(session, plan, temporary, on_progress, total_seconds)
        if plan.expected_size is not None and written != plan.expected_size:
            raise DownloadError(
                f"the {plan.variant} file of task {plan.task_id} is {written} bytes; "
                f"the task says {plan.expected_size}"
            )
        await anyio.Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(temporary).unlink()
        raise
    return path


async def _fetch(
    session: aiohttp.ClientSession,
    plan: DownloadPlan,
    temporary: str,
    on_progress: DownloadProgress | None,
    total_seconds: float | None,
) -> int:
    # No total limit by default (videos are large), but a stalled CDN is an error.
    limits = aiohttp.ClientTimeout(total=total_seconds, sock_connect=30, sock_read=60)
    written = 0
    try:
        async with session.get(plan.url, timeout=limits) as response:
            if response.status == 403:
                raise URLExpiredError(_expired_message(plan))
            if response.status != 200:
                raise DownloadError(f"the video host answered HTTP {response.status} for task {plan.task_id}")
            total = plan.expected_size if plan.expected_size is not None else response.content_length
            async with await anyio.open_file(temporary, "wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    written += len(chunk)
                    if plan.expected_size is not None and written > plan.expected_size:
                        raise DownloadError(
                            f"the {plan.variant} file of task {plan.task_id} is longer than the "
                            f"{plan.expected_size} bytes the task says"
                        )
                    await out.write(chunk)
                    if on_progress is not None:
                        result = on_progress(written, total)
                        if inspect.isawaitable(result):
                            await result
    except asyncio.TimeoutError as exc:
        raise DownloadError(f"downloading task {plan.task_id} timed out after {written} bytes") from exc
    except aiohttp.ClientError as exc:
        error = DownloadError(
            f"downloading task {plan.task_id} failed after {written} bytes: {type(exc).__name__}"
        )
        error.retryable = True
        raise error from exc
    return written


def _expired_message(plan: DownloadPlan) -> str:
    expiry = url_expiry(plan.url)
    when = f" (it expired at {expiry:%Y-%m-%d %H:%M} UTC)" if expiry is not None else ""
    return (
        f"the video URL of task {plan.task_id} was refused (HTTP 403){when}; signed URLs expire, "
        "so fetch the task again with get_task for fresh URLs"
    )
