"""The aiohttp client: connects the pure protocol and policy to the network."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import pathlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import msgspec

from ._batch import DEFAULT_BATCH_CONCURRENCY, Batch, Outcome, wait_turn
from ._cadence import CadencePolicy
from ._download import DownloadProgress, stream_to_file
from ._download_plan import plan_download, target_path
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    RateLimitError,
    ResponseDecodeError,
    SoraError,
    TaskFailedError,
    WaitTimeoutError,
)
from ._models import NULL_PAYLOAD, Task, TaskStatus
from ._policy import PollPolicy, RetryPolicy, WaitState
from ._protocol import (
    DEFAULT_BASE_URL,
    TASKS_PATH,
    CreateOptions,
    auth_headers,
    build_create_body,
    clip,
    create_rejected_unprocessed,
    normalize_base_url,
    parse_create_response,
    parse_retry_after,
    parse_task_response,
    task_path,
)
from ._ratelimit import RateController

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_WAIT_TIMEOUT", "SoraClient"]

logger = logging.getLogger("sora_async")

DEFAULT_WAIT_TIMEOUT = 1800.0
"""Seconds `wait_until_done`, `watch` and `generate` wait by default (30 min)."""

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 100

ProgressCallback = Callable[[Task], "Awaitable[object] | object"]
"""Called with each new snapshot; may be a plain function or a coroutine function."""

_T = TypeVar("_T")


class _Response(msgspec.Struct, gc=False):
    """One HTTP answer; untracked by the garbage collector, like the wire Structs."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _OutOfTime(Exception):
    """The wait's deadline leaves no room for another attempt."""


class SoraClient:
    """An asyncio client for CometAPI's Sora video task API.

    Use it as an async context manager, or call `aclose()` when done::

        async with SoraClient() as client:
            task = await client.generate("a paper boat on a pond")
            print(task.video_url)

    Args:
        api_key: The CometAPI key. Defaults to the `COMETAPI_KEY` variable.
        base_url: The API's root URL. Defaults to `COMETAPI_BASE_URL`, else
            https://api.cometapi.com. A trailing slash does not matter.
        timeout: Seconds one HTTP request may take, all retries aside.
        max_retries: How often a failed idempotent request is resent.
        poll: The default `PollPolicy` for waits; by default a `CadencePolicy`
            that learns the gateway's refresh cadence from all of this client's
            waits, and backs off like `PollPolicy` until it has.
        session: An `aiohttp.ClientSession` to use. The client never closes a
            session it did not create.
        allow_insecure_http: Allow a plain-http base URL to a host that is not
            loopback. Off by default, since the key would travel in clear.
        max_response_bytes: The largest response body that will be read.
        retry: The backoff for resending failed requests.
        rate_limit: Requests per second for everything this client sends, or
            None for no set limit. Either way a 429 pauses all of the client's
            requests together and slows them down until the server is happy.
        max_concurrency: The most requests this client has in flight at once;
            100 by default, aiohttp's pool size. Requests beyond it wait in a
            cheap queue (bounded by any deadline) rather than inside aiohttp,
            which keeps thousands of concurrent waits small. None: no limit.

    Raises:
        ValueError: No key was given or found in `COMETAPI_KEY`, or the base
            URL is unusable.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        poll: PollPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = None,
        max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("COMETAPI_KEY", "")
        key = key.strip()
        if not key:
            raise ValueError("no API key: pass api_key=... or set the COMETAPI_KEY environment variable")
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise ValueError("the API key contains white space or control characters")
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be >= 1")
        root = base_url if base_url is not None else os.environ.get("COMETAPI_BASE_URL") or DEFAULT_BASE_URL
        self._base_url = normalize_base_url(root, allow_insecure_http=allow_insecure_http)
        self._api_key = key
        self._headers = auth_headers(key)
        self._timeout = float(timeout)
        self._client_timeout = aiohttp.ClientTimeout(total=self._timeout)
        self._max_retries = max_retries
        self._max_response_bytes = max_response_bytes
        # One CadencePolicy per client: all its waits share what it learns of
        # the gateway's refresh cadence.
        self._poll = poll if poll is not None else CadencePolicy()
        self._retry = retry if retry is not None else RetryPolicy()
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1, or None")
        self._pacer = RateController(rate_limit)
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency is not None else None
        self._session = session
        self._downloads: aiohttp.ClientSession | None = None
        self._owns_session = session is None
        # Never follow a redirect with the key; and a borrowed session may
        # have been made with raise_for_status=True, which we must override.
        self._request_options: dict[str, bool] = {"allow_redirects": False}
        if session is not None:
            self._request_options["raise_for_status"] = False
        self._closed = False

    # --- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root every request path is appended to."""
        return self._base_url

    def __repr__(self) -> str:
        return f"SoraClient(base_url={self._base_url!r}, api_key='***')"

    async def __aenter__(self) -> SoraClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP sessions this client created. Safe to repeat."""
        self._closed = True
        if self._downloads is not None:
            downloads, self._downloads = self._downloads, None
            await downloads.close()
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this SoraClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # --- tasks -------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        """Fetch one snapshot of a task.

        Args:
            task_id: The id `create_video` returned.

        Raises:
            ValueError: The id is empty, too long, or contains white space.
            TaskNotFoundError: The gateway knows no such task.
            SoraError: Another API, connection or decode error.
        """
        return await self._call(
            "GET", task_path(task_id), None, self._parse_snapshot, _retry_idempotent, None
        )

    async def create_video(self, prompt: str, **options: Unpack[CreateOptions]) -> str:
        """Create a video task and return its id.

        The options and their defaults are those of `CreateOptions`; pass
        None for one to leave it out of the request.

        A create is resent only when the request provably did not reach the
        server (the connection was refused) or was turned away with a 429
        error document. After a timeout or a 5xx the task may exist, so the
        error is raised rather than risk paying twice.

        Args:
            prompt: What to generate.
            **options: Keys of `CreateOptions`.

        Raises:
            TypeError, ValueError: An option is unknown or invalid; nothing was sent.
            SoraError: The API refused, or the outcome is unknown.
        """
        return await self._create(build_create_body(prompt, options), deadline=None)

    def watch(
        self,
        task_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
    ) -> AsyncGenerator[Task, None]:
        """Yield the first snapshot of a task, then each one that changed.

        A snapshot counts as changed when its status or progress string
        differs from the last one yielded. The iterator ends after the
        snapshot with a final status (SUCCESS or FAILURE); it does not raise
        on FAILURE. Polling happens only while the consumer asks for more.

        Args:
            task_id: The task to follow.
            timeout: Seconds before `WaitTimeoutError`; None waits for ever.
            poll: A `PollPolicy` for this call; defaults to the client's.

        Raises:
            ValueError: The id is invalid (raised at once, not on iteration).
            WaitTimeoutError: No final status before the deadline.
        """
        path = task_path(task_id)
        _check_timeout(timeout)
        return self._snapshots(path, self._wait_state(task_id, poll, timeout, None))

    async def wait_until_done(
        self,
        task_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Task:
        """Poll a task until it ends and return the SUCCESS snapshot.

        The deadline is checked before each sleep: when the next poll could
        not happen before it, the wait ends at once instead of overshooting.

        Args:
            task_id: The task to wait for.
            timeout: Seconds before `WaitTimeoutError`; None waits for ever.
            poll: A `PollPolicy` for this call; defaults to the client's.
            on_progress: Called with the first snapshot and then once per
                change of status or progress; may be async.

        Raises:
            TaskFailedError: The task ended in FAILURE.
            WaitTimeoutError: The deadline passed first.
            SoraError: A request failed for good (after retries).
        """
        task_path(task_id)  # validate now; the path is rebuilt per poll rather than kept
        _check_timeout(timeout)
        state = self._wait_state(task_id, poll, timeout, None)
        # The loop lives here, not in a helper: a waiter between polls is then
        # one coroutine frame, a WaitState and a sleep.
        loop = asyncio.get_running_loop()
        while True:
            sent = loop.time()
            path = task_path(task_id)
            try:
                task, retry_after = await self._call(
                    "GET", path, None, self._parse_task, _retry_idempotent, state.deadline
                )
            except (_OutOfTime, SoraError) as exc:
                task, retry_after = await self._poll_through_errors(exc, path, state, loop)
            del path
            if state.observe(task, sent, loop.time()) and on_progress is not None:
                result = on_progress(task)
                if inspect.isawaitable(result):
                    await result
            if task.status is TaskStatus.SUCCESS:
                return task
            if task.status is TaskStatus.FAILURE:
                raise TaskFailedError(task)
            del task  # between polls only the stripped snapshot in `state` stays alive
            await asyncio.sleep(state.next_delay(loop.time(), retry_after))

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
        **options: Unpack[CreateOptions],
    ) -> Task:
        """Create a video task and wait for it, under one deadline for both.

        Args:
            prompt: What to generate.
            timeout: Seconds for the create and the whole wait together.
            poll: A `PollPolicy` for the wait.
            on_progress: As for `wait_until_done`.
            **options: Any keyword argument of `create_video`.

        Raises:
            TaskFailedError: The task ended in FAILURE.
            WaitTimeoutError: The deadline passed before the task ended.
            SoraError: The create or a poll failed for good.
        """
        _check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        body = build_create_body(prompt, options)
        task_id = await self._create(body, deadline=deadline)
        logger.debug("created task %s", task_id)
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(task_id, None, timeout)
        return await self.wait_until_done(task_id, timeout=remaining, poll=poll, on_progress=on_progress)

    # --- files -------------------------------------------------------------

    async def download(
        self,
        task_or_id: Task | str,
        dest: str | os.PathLike[str],
        *,
        variant: str = "source",
        on_progress: DownloadProgress | None = None,
        timeout: float | None = None,
    ) -> pathlib.Path:
        """Save a finished task's video (or image) to disk, streaming it in chunks.

        The file is written to a temporary name in the same folder and renamed
        when complete and of the size the task announced, so an interrupted
        download never leaves a partial file under the final name. The request
        to the video host carries no API key, whatever session the client uses.

        Args:
            task_or_id: A SUCCESS `Task`, or a task id to fetch first.
            dest: A file path, or a folder (existing, or written with a trailing
                slash); in a folder the file is named from the task id and
                variant, never from the URL.
            variant: source, md, ld, thumbnail or spritesheet. A missing video
                rendition falls back to the nearest one that exists.
            on_progress: Called with (bytes so far, total or None); may be async.
            timeout: Seconds for the whole download; None for no limit (a
                stalled transfer still fails after 60 s without data).

        Returns:
            The path written.

        Raises:
            ValueError: `variant` is not known.
            URLExpiredError: The video host refused the URL (HTTP 403).
            DownloadError: The task has no such file, or the transfer failed.
        """
        task = task_or_id if isinstance(task_or_id, Task) else await self.get_task(task_or_id)
        if task.status is TaskStatus.SUCCESS and task.data == NULL_PAYLOAD:
            task = await self.get_task(task.task_id)  # a stripped snapshot: fetch the payload
        plan = plan_download(task, variant)
        path = target_path(dest, plan)
        return await stream_to_file(
            self._cdn_session(), plan, path, on_progress=on_progress, total_seconds=timeout
        )

    def _cdn_session(self) -> aiohttp.ClientSession:
        """A session of our own, with no default headers, for video hosts."""
        if self._closed:
            raise RuntimeError("this SoraClient is closed")
        if self._downloads is None:
            self._downloads = aiohttp.ClientSession()
        return self._downloads

    # --- many tasks --------------------------------------------------------

    def as_completed(
        self,
        task_ids: Iterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        rate_limit: float | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
    ) -> AsyncGenerator[tuple[str, Outcome], None]:
        """Wait for many tasks and yield each (task id, outcome) as soon as it is known.

        The outcome is what `wait_until_done` would have returned or raised:
        the SUCCESS `Task`, or a `TaskFailedError`, `WaitTimeoutError`,
        `TaskNotFoundError` or other `SoraError` instance. One bad task never
        stops the others. A repeated id is polled once and yielded once per
        occurrence.

        All polls share one budget: at most `concurrency` in flight and
        `rate_limit` per second. A 429 pauses the whole batch (for
        `Retry-After` when given) and resumes it at a lower rate that recovers
        gradually. The client's own budget applies on top. Between polls each
        task costs a few hundred bytes; no coroutine sleeps per task.

        Closing the iterator early (`break`, cancellation) stops all polling.

        Args:
            task_ids: Any iterable of ids, a generator included; read at once.
            concurrency: The most polls of this batch in flight.
            rate_limit: Polls per second for this batch, or None.
            timeout: Seconds for the whole batch; unfinished tasks then get
                a `WaitTimeoutError`. None waits for ever.
            poll: The `PollPolicy` for each task; defaults to the client's.

        Raises:
            TypeError, ValueError: An id is not a valid task id (nothing is sent).
        """
        batch = Batch(
            self,
            task_ids,
            concurrency=concurrency,
            rate_limit=rate_limit,
            timeout=timeout,
            poll=poll if poll is not None else self._poll,
        )
        return batch.outcomes()

    async def wait_many(
        self,
        task_ids: Iterable[str],
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        rate_limit: float | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
    ) -> dict[str, Outcome]:
        """Wait for many tasks and return {task id: outcome}; see `as_completed`."""
        results: dict[str, Outcome] = {}
        outcomes = self.as_completed(
            task_ids, concurrency=concurrency, rate_limit=rate_limit, timeout=timeout, poll=poll
        )
        async with contextlib.aclosing(outcomes):
            async for task_id, outcome in outcomes:
                results[task_id] = outcome
        return results

    # --- internals ---------------------------------------------------------

    def _wait_state(
        self, task_id: str, poll: PollPolicy | None, timeout: float | None, deadline: float | None
    ) -> WaitState:
        if deadline is None and timeout is not None:
            deadline = asyncio.get_running_loop().time() + timeout
        return WaitState(task_id, poll if poll is not None else self._poll, timeout, deadline)

    async def _snapshots(self, path: str, state: WaitState) -> AsyncGenerator[Task, None]:
        """The loop behind watch: the steps of wait_until_done, yielding changes."""
        loop = asyncio.get_running_loop()
        while True:
            sent = loop.time()
            try:
                task, retry_after = await self._call(
                    "GET", path, None, self._parse_task, _retry_idempotent, state.deadline
                )
            except (_OutOfTime, SoraError) as exc:
                task, retry_after = await self._poll_through_errors(exc, path, state, loop)
            if state.observe(task, sent, loop.time()):
                yield task
            if task.is_terminal:
                return
            del task
            await asyncio.sleep(state.next_delay(loop.time(), retry_after))

    async def _poll_through_errors(
        self, error: Exception, path: str, state: WaitState, loop: asyncio.AbstractEventLoop
    ) -> tuple[Task, float | None]:
        """Carry a wait's poll past `error`, the failure of its first try.

        Once a poll's own retries are spent on a transient failure, the wait
        goes on polling with backoff until its deadline: it exists to learn
        the outcome, and the deadline is what bounds it. (Kept out of the
        happy path, so a poll in flight is one coroutine frame shallower.)
        """
        while True:
            if isinstance(error, _OutOfTime):
                raise state.timed_out() from error.__cause__
            assert isinstance(error, SoraError)
            if not error.retryable:
                raise error
            delay = state.error_delay(loop.time(), self._retry)
            if delay is None:
                raise state.timed_out() from error
            logger.debug(
                "poll of %s still failing (%s); next try in %.2f s", path, type(error).__name__, delay
            )
            await asyncio.sleep(delay)
            try:
                return await self._call(
                    "GET", path, None, self._parse_task, _retry_idempotent, state.deadline
                )
            except (_OutOfTime, SoraError) as exc:
                error = exc

    async def _poll_once(self, path: str, deadline: float | None) -> tuple[Task, float | None]:
        """One query with no retries, for callers that schedule their own."""
        loop = asyncio.get_running_loop()
        return self._parse_task(await self._send("GET", path, None, deadline, loop))

    def _parse_snapshot(self, response: _Response) -> Task:
        return parse_task_response(response.status, response.headers, response.body, secret=self._api_key)

    def _parse_task(self, response: _Response) -> tuple[Task, float | None]:
        """The Task, and the server's Retry-After hint for the next poll if it sent one."""
        task = parse_task_response(response.status, response.headers, response.body, secret=self._api_key)
        hint = response.headers.get("Retry-After")  # aiohttp's headers ignore case
        return task, (parse_retry_after(hint) if hint is not None else None)

    async def _create(self, body: bytes, *, deadline: float | None) -> str:
        def parse(response: _Response) -> str:
            return parse_create_response(
                response.status, response.headers, response.body, secret=self._api_key
            )

        try:
            return await self._call("POST", TASKS_PATH, body, parse, _retry_create, deadline)
        except _OutOfTime as exc:
            cause = exc.__cause__
            assert isinstance(cause, SoraError)
            raise cause from cause.__cause__

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        parse: Callable[[_Response], _T],
        may_retry: Callable[[SoraError, _Response | None], bool],
        deadline: float | None,
    ) -> _T:
        """Send a request, parse the answer, and resend while policy allows."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            response: _Response | None = None
            try:
                response = await self._send(method, path, body, deadline, loop)
                return parse(response)
            except SoraError as exc:
                if attempt >= self._max_retries or not may_retry(exc, response):
                    if isinstance(exc, APITimeoutError) and deadline is not None and loop.time() >= deadline:
                        raise _OutOfTime() from exc
                    raise
                if isinstance(exc, RateLimitError):
                    # _send has paused every request of this client; wait that out.
                    delay = max(0.0, self._pacer.pause_until - loop.time())
                else:
                    delay = self._retry.delay(attempt)
                if deadline is not None and loop.time() + delay >= deadline:
                    raise _OutOfTime() from exc
                attempt += 1
                logger.debug(
                    "%s %s failed (%s); retry %d/%d in %.2f s",
                    method,
                    path,
                    type(exc).__name__,
                    attempt,
                    self._max_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> _Response:
        """One HTTP exchange under the client's budget; aiohttp failures become `APIConnectionError`s.

        This is the polling hot path: it is one coroutine, on purpose.
        """
        pacer = self._pacer
        if not pacer.is_free(loop.time()):
            await wait_turn(pacer, loop)
        slots = self._slots
        if slots is not None:
            if slots.locked():
                await self._queue_for_slot(slots, method, path, deadline, loop)
            else:
                await slots.acquire()  # free: returns at once
        try:
            return await self._exchange(method, path, body, deadline, loop)
        finally:
            if slots is not None:
                slots.release()

    async def _queue_for_slot(
        self,
        slots: asyncio.Semaphore,
        method: str,
        path: str,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Wait for a free slot, but not past the deadline."""
        if deadline is None:
            await slots.acquire()
            return
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            await asyncio.wait_for(slots.acquire(), remaining)
        except asyncio.TimeoutError:
            raise APITimeoutError(f"{method} {path}: no free connection before the deadline") from None

    async def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> _Response:
        pacer = self._pacer
        started = loop.time()
        timeout = self._client_timeout
        seconds = self._timeout
        if deadline is not None:
            remaining = deadline - started
            if remaining <= 0:
                raise APITimeoutError(f"{method} {path}: no time left before the deadline")
            if remaining < seconds:
                seconds = remaining
                timeout = aiohttp.ClientTimeout(total=remaining)
        headers = self._headers if body is None else {**self._headers, "Content-Type": "application/json"}
        session = self._get_session()
        try:
            async with session.request(
                method,
                self._base_url + path,
                data=body,
                headers=headers,
                timeout=timeout,
                **self._request_options,
            ) as resp:
                length = resp.content_length
                if length is not None and length <= self._max_response_bytes:
                    payload = await resp.read()
                else:
                    payload = await self._read_limited(resp, length)
                response = _Response(resp.status, resp.headers, payload)
        except asyncio.TimeoutError as exc:
            raise APITimeoutError(f"{method} {path} timed out after {seconds:.3g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            # Raised before any byte of the request was written.
            raise APIConnectionError(
                f"{method} {path}: cannot connect: {clip(str(exc), self._api_key)}", request_sent=False
            ) from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError(
                f"{method} {path}: {type(exc).__name__}: {clip(str(exc), self._api_key)}"
            ) from exc
        finished = loop.time()
        if response.status == 429:
            hint = response.headers.get("Retry-After")
            pacer.on_throttle(finished, parse_retry_after(hint) if hint is not None else None)
        else:
            pacer.on_success(finished)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d (%d bytes, %.1f ms)",
                method,
                path,
                response.status,
                len(payload),
                (finished - started) * 1000,
            )
        return response

    async def _read_limited(self, resp: aiohttp.ClientResponse, length: int | None) -> bytes:
        """Read a body of unknown or excessive length, refusing more than the limit."""
        limit = self._max_response_bytes
        if length is not None:
            raise ResponseDecodeError(f"the response is {length} bytes; the limit is {limit}")
        chunks = bytearray()
        async for chunk in resp.content.iter_any():
            chunks += chunk
            if len(chunks) > limit:
                raise ResponseDecodeError(f"the response is over the limit of {limit} bytes")
        return bytes(chunks)


def _retry_idempotent(exc: SoraError, response: _Response | None) -> bool:
    return exc.retryable


def _retry_create(exc: SoraError, response: _Response | None) -> bool:
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    return response is not None and create_rejected_unprocessed(response.status, response.body)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be > 0, or None to wait for ever")
