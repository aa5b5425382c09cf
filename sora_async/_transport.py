"""The network: one request under the client's budget, read within limits, errors mapped.

`Transport` owns the aiohttp sessions (the API's, and a credential-free one
for video hosts), binds the client to the running event loop, sends each
request through the client's `Budget` by way of its `Gate`, reads the body
within `max_response_bytes`, tells the budget what the server answered
(status and `Retry-After`), and maps every aiohttp failure to a `SoraError`.
`call` adds the resend loop for single requests. Nothing here parses a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp
import msgspec

from ._budget import Budget
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    DownloadError,
    EventLoopMismatchError,
    ResponseDecodeError,
    SoraError,
)
from ._gate import DeadlineReached, Gate
from ._policy import RetryPolicy
from ._protocol import auth_headers, clip, create_rejected_unprocessed, parse_retry_after

__all__ = ["Response", "Transport"]

logger = logging.getLogger("sora_async")

_T = TypeVar("_T")


class Response(msgspec.Struct, gc=False):
    """One HTTP answer; untracked by the garbage collector, like the wire Structs.

    Attributes:
        status: The HTTP status code.
        headers: The response headers (case-insensitive).
        body: The whole body, at most `max_response_bytes`.
        retry_after: The server's `Retry-After` in seconds, capped at the
            client's `max_retry_after`; None when absent or no usable hint.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    retry_after: float | None


def _closed_error() -> ClientClosedError:
    return ClientClosedError("this SoraClient is closed; create a new client to go on")


class Transport:
    """Sends requests for one client. Create it anywhere; it binds to a loop on first use.

    Args:
        base_url: The normalised API root.
        api_key: The key, sent only to `base_url`.
        timeout: Seconds one HTTP exchange may take.
        max_response_bytes: The largest body read, in bytes (decoded size).
        session: A borrowed `aiohttp.ClientSession`, or None to own one.
        budget: The client's budget, which every request passes through.
        retry: The backoff between resends of a single call.
        max_retries: How often `call` resends a failed request.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        max_response_bytes: int,
        session: aiohttp.ClientSession | None,
        budget: Budget,
        retry: RetryPolicy,
        max_retries: int,
    ) -> None:
        self.base_url = base_url
        self.budget = budget
        self.retry = retry
        self._api_key = api_key
        self._headers = auth_headers(api_key)
        self._timeout = timeout
        self._client_timeout = _client_timeout(timeout)
        self._max_response_bytes = max_response_bytes
        self._max_retries = max_retries
        self._borrowed = session
        self._session: aiohttp.ClientSession | None = session
        self._downloads: aiohttp.ClientSession | None = None
        self._stale: list[aiohttp.ClientSession] = []
        self._gate: Gate | None = None
        self._loop_end: AsyncGenerator[None, None] | None = None
        self._closed = False
        # Never follow a redirect with the key; and a borrowed session may
        # have been made with raise_for_status=True, which we must override.
        self._request_options: dict[str, bool] = {"allow_redirects": False}
        if session is not None:
            self._request_options["raise_for_status"] = False

    @property
    def closed(self) -> bool:
        """Whether `aclose` has been called."""
        return self._closed

    def gate(self) -> Gate:
        """The gate for the running event loop, binding the client to it on first use.

        Raises:
            ClientClosedError: The client is closed.
            EventLoopMismatchError: A borrowed session belongs to another
                loop, or the client's first loop is still open.
        """
        loop = asyncio.get_running_loop()
        if self._closed:
            raise _closed_error()
        gate = self._gate
        if gate is not None and gate.loop is loop:
            return gate
        if gate is not None and not gate.loop.is_closed():
            raise EventLoopMismatchError(
                "this SoraClient is in use on another event loop that is still open; "
                "create one client per event loop"
            )
        if self._borrowed is not None:
            # aiohttp records the loop a session was made on; a session cannot
            # serve any other.
            session_loop = getattr(self._borrowed, "_loop", None)
            if session_loop is not None and session_loop is not loop:
                raise EventLoopMismatchError(
                    "the aiohttp.ClientSession given to SoraClient belongs to another event loop; "
                    "create the session and the client inside the loop that uses them"
                )
        elif gate is not None:
            # Our first loop has ended (a second asyncio.run): its sessions
            # cannot be used again. Close them before the next request.
            self._stale.extend(s for s in (self._session, self._downloads) if s is not None)
            self._session = self._downloads = None
        self._gate = Gate(loop)
        self._close_sessions_at_loop_end(self._gate)
        return self._gate

    def _close_sessions_at_loop_end(self, gate: Gate) -> None:
        """Close the sessions made on `gate`'s loop when asyncio.run() ends that loop.

        asyncio.run() closes every async generator still suspended on its loop
        just before it closes the loop: the last moment the connections of a
        session made on it can be closed cleanly. A client used again in the
        next asyncio.run() then starts with new sessions, and no socket of the
        first loop is left unclosed (a ResourceWarning).
        """

        async def until_the_loop_ends() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                if self._gate is gate and not self._closed:
                    await self._close_owned_sessions()

        guard = until_the_loop_ends()
        with contextlib.suppress(StopIteration):
            guard.asend(None).send(None)  # run it to its `yield`: the loop now tracks it
        self._loop_end = guard

    async def _close_owned_sessions(self) -> None:
        owned = [self._downloads, *self._stale]
        if self._borrowed is None:
            owned.append(self._session)
        self._downloads = None
        self._stale = []
        self._session = self._borrowed
        for session in owned:
            if session is not None:
                await session.close()

    async def aclose(self) -> None:
        """End every pending wait with `ClientClosedError` and close the owned sessions."""
        self._closed = True
        if self._gate is not None:
            self._gate.close(_closed_error())
        guard, self._loop_end = self._loop_end, None
        if guard is not None and self._gate is not None and self._gate.loop is asyncio.get_running_loop():
            await guard.aclose()  # nothing left for it to do
        await self._close_owned_sessions()

    def api_session(self) -> aiohttp.ClientSession:
        """The session API requests go through (the caller's, or our own), for a file the API serves.

        It carries no key of its own: pass `auth_headers` per request, to the
        API's origin only.
        """
        self.gate()
        if self._session is None:
            self._session = _own_session(self.base_url)
        return self._session

    def cdn_session(self) -> aiohttp.ClientSession:
        """The session for video hosts: the caller's way to the network, none of its credentials.

        With a borrowed session, a session on the caller's connector (its
        pool, TLS settings and any proxying connector), with its `trust_env`
        and its default `proxy`/`proxy_auth`, and nothing else: no default
        headers, no `auth`, no cookies (a `DummyCookieJar`), no middlewares.
        Closing it leaves the caller's connector open. Without one, a session
        of our own with `trust_env=True`: HTTP_PROXY, HTTPS_PROXY and
        NO_PROXY apply, and so does a ~/.netrc entry for the video host itself.
        The API key is sent per request by `_exchange`, never from a session.

        Raises:
            ClientClosedError, EventLoopMismatchError: As for `gate`.
            DownloadError: The borrowed session is closed.
        """
        self.gate()
        if self._downloads is None:
            borrowed = self._borrowed
            if borrowed is None:
                self._downloads = aiohttp.ClientSession(trust_env=True, cookie_jar=aiohttp.DummyCookieJar())
            else:
                if borrowed.closed or borrowed.connector is None:
                    raise DownloadError("the aiohttp.ClientSession given to SoraClient is closed")
                # aiohttp has no public getter for a session's default proxy
                # (a `proxy=` argument since 3.10); copy it where it exists.
                proxy_options = {
                    name: value
                    for name in ("proxy", "proxy_auth")
                    if (value := getattr(borrowed, f"_default_{name}", None)) is not None
                }
                self._downloads = aiohttp.ClientSession(
                    connector=borrowed.connector,
                    connector_owner=False,
                    trust_env=borrowed.trust_env,
                    cookie_jar=aiohttp.DummyCookieJar(),
                    **proxy_options,
                )
        return self._downloads

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        parse: Callable[[Response], _T],
        may_retry: Callable[[SoraError, Response | None], bool],
        deadline: float | None,
        *,
        content_type: str = "application/json",
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> _T:
        """Send a request and parse the answer, resending while `may_retry` allows (see `retrying`).

        `content_type` is the body's (JSON unless said otherwise: a
        multipart body names its boundary). `before_send` is awaited by each
        attempt once the budget has admitted it, just before it is sent (a
        create's journal entry); what it raises ends the call unsent.

        Raises:
            APITimeoutError: The budget did not admit the request before `deadline`.
            SoraError: What `parse` or the exchange raised, once retries are spent.
        """
        response: Response | None = None

        async def attempt() -> _T:
            nonlocal response
            response = None
            try:
                response = await self.send(
                    method, path, body, deadline, content_type=content_type, before_send=before_send
                )
            except DeadlineReached:
                raise APITimeoutError(
                    f"{method} {path}: no turn in the request budget before the deadline",
                    request_sent=False,
                ) from None
            return parse(response)

        return await self.retrying(
            attempt, lambda exc: may_retry(exc, response), deadline, f"{method} {path}", self._max_retries
        )

    async def retrying(
        self,
        attempt: Callable[[], Awaitable[_T]],
        may_retry: Callable[[SoraError], bool],
        deadline: float | None,
        what: str,
        retries: int,
    ) -> _T:
        """Run `attempt`, and again at most `retries` times while it raises a `SoraError` that
        `may_retry` accepts: the one resend loop of the client, for API requests and file transfers.

        Resends wait `retry`'s backoff (on top of any pause the budget holds);
        none starts when the backoff would pass `deadline`. Each resend is
        logged at DEBUG with `extra={"sora_retry": (what, error, delay)}`.
        """
        gate = self.gate()
        for tried in itertools.count():
            try:
                return await attempt()
            except SoraError as exc:
                if tried >= retries or not may_retry(exc):
                    raise
                delay = self.retry.delay(tried)
                if deadline is not None and gate.now() + delay >= deadline:
                    raise
                logger.debug(
                    "%s failed (%s); retry %d/%d in %.2f s",
                    what,
                    type(exc).__name__,
                    tried + 1,
                    retries,
                    delay,
                    extra={"sora_retry": (what, exc, delay)},
                )
                await gate.sleep_until(gate.now() + delay)
        raise AssertionError("unreachable")

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        *,
        content_type: str = "application/json",
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        """One HTTP exchange under the client's budget; `before_send` as for `call`.

        Raises:
            DeadlineReached: The budget did not admit it before `deadline`.
            APITimeoutError: The exchange passed its timeout (cut to the deadline).
            APIConnectionError: No usable answer (refused, reset, cut short).
            ResponseDecodeError: The body is over `max_response_bytes`.
            ClientClosedError: The client was closed.
        """
        gate = self.gate()
        if self._stale:
            await self._close_stale()
        budget = self.budget
        if not gate.try_enter(budget):
            await gate.enter(budget, deadline)
        try:
            if before_send is not None:
                await before_send()
            return await self._exchange(gate, method, path, body, deadline, content_type)
        finally:
            gate.leave(budget)

    async def _close_stale(self) -> None:
        stale, self._stale = self._stale, []
        for session in stale:
            await session.close()

    async def _exchange(
        self,
        gate: Gate,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        content_type: str = "application/json",
    ) -> Response:
        started = gate.now()
        timeout = self._client_timeout
        seconds = self._timeout
        if deadline is not None:
            remaining = deadline - started
            if remaining <= 0:
                raise APITimeoutError(
                    f"{method} {path}: no time left before the deadline", request_sent=False
                )
            if remaining < seconds:
                seconds = remaining
                timeout = _client_timeout(remaining)
        headers = self._headers if body is None else {**self._headers, "Content-Type": content_type}
        session = self._session
        if session is None:
            session = self._session = _own_session(self.base_url)
        try:
            async with session.request(
                method,
                self.base_url + path,
                data=body,
                headers=headers,
                timeout=timeout,
                **self._request_options,
            ) as resp:
                # Content-Length counts the bytes on the wire; with a
                # Content-Encoding, aiohttp inflates them and only the count
                # taken while streaming is the size held in memory.
                length = resp.content_length
                if length is not None and length <= self._max_response_bytes and not _encoded(resp):
                    payload = await resp.read()
                else:
                    payload = await self._read_limited(resp, length)
                status = resp.status
                response_headers = resp.headers
        except asyncio.TimeoutError as exc:
            if self._closed:
                raise _closed_error() from None
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                # No connection came free, or none could be opened, in time:
                # not a byte of the request was written.
                raise APITimeoutError(
                    f"{method} {path}: no connection to the API within {seconds:.3g} s",
                    request_sent=False,
                ) from exc
            raise APITimeoutError(f"{method} {path} timed out after {seconds:.3g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            # Raised before any byte of the request was written.
            raise APIConnectionError(
                f"{method} {path}: cannot connect: {clip(str(exc), self._api_key)}", request_sent=False
            ) from exc
        except (aiohttp.ClientError, RuntimeError) as exc:
            if self._closed:  # aclose() closed the session under this request
                raise _closed_error() from None
            if isinstance(exc, RuntimeError):
                raise
            raise APIConnectionError(
                f"{method} {path}: {type(exc).__name__}: {clip(str(exc), self._api_key)}"
            ) from exc
        finished = gate.now()
        hint = response_headers.get("Retry-After")  # aiohttp's headers ignore case
        retry_after = None if hint is None else self.budget.usable_retry_after(parse_retry_after(hint))
        self.budget.on_answer(finished, status, retry_after)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d (%d bytes, %.1f ms)",
                method,
                path,
                status,
                len(payload),
                (finished - started) * 1000,
            )
        return Response(status, response_headers, payload, retry_after)

    async def _read_limited(self, resp: aiohttp.ClientResponse, length: int | None) -> bytes:
        """Read a body of unknown, encoded or excessive length, refusing more than the limit.

        The limit counts the bytes after decoding. aiohttp inflates a
        compressed body in bounded steps as it is read, so memory stays near
        the limit whatever the encoding (a gzip bomb ends at the limit).
        """
        limit = self._max_response_bytes
        if length is not None and length > limit and not _encoded(resp):
            raise ResponseDecodeError(f"the response is {length} bytes; the limit is {limit}")
        chunks = bytearray()
        async for chunk in resp.content.iter_any():
            chunks += chunk
            if len(chunks) > limit:
                encoding = resp.headers.get("Content-Encoding")
                how = f" once decoded ({clip(encoding)})" if encoding else ""
                raise ResponseDecodeError(f"the response is over the limit of {limit} bytes{how}")
        return bytes(chunks)


def _encoded(resp: aiohttp.ClientResponse) -> bool:
    """Whether the body comes with a Content-Encoding other than identity."""
    encoding = resp.headers.get("Content-Encoding")
    return encoding is not None and encoding.strip().lower() not in ("", "identity")


def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for one exchange of at most `seconds`.

    Getting a connection (a free one from the pool, or a new one) must end
    `CONNECT_LEAD` before the whole exchange does, so that a deadline that
    passes before any byte was written raises aiohttp's
    `ConnectionTimeoutError` (and our `request_sent=False`) rather than the
    exchange's plain timeout. No rounding up to whole seconds
    (`ceil_threshold`), which could make both fire in the same tick.
    """
    lead = min(CONNECT_LEAD, seconds / 10)
    return aiohttp.ClientTimeout(total=seconds, connect=seconds - lead, ceil_threshold=math.inf)


CONNECT_LEAD = 0.05
"""Seconds by which getting a connection must end before the exchange's timeout."""


def _own_session(base_url: str) -> aiohttp.ClientSession:
    """A session of our own for the API, using the proxy the environment names for `base_url`.

    HTTPS_PROXY (for an https base URL), HTTP_PROXY (for http) and NO_PROXY
    are read as Python's `urllib.request` reads them (either case), once per
    session; an http(s) proxy is used, others are ignored, as aiohttp does.
    aiohttp's own `trust_env=True` would also look the API host up in
    ~/.netrc on every request (a thread hop per poll), and refuse every
    request to a host listed there, since we send our own Authorization.
    """
    parts = urllib.parse.urlsplit(base_url)
    proxy = None
    if not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy is not None and not proxy.lower().startswith(("http://", "https://")):
        proxy = None
    return aiohttp.ClientSession(proxy=proxy)


def retry_idempotent(exc: SoraError, response: Response | None) -> bool:
    """Whether a GET may be resent: whenever the error says it may pass."""
    return exc.retryable


def retry_create(exc: SoraError, response: Response | None) -> bool:
    """Whether a create may be resent: only when it provably did not arrive, or was
    turned away unprocessed (a 429 error document): a billed task is never made twice."""
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    return response is not None and create_rejected_unprocessed(response.status, response.body)
