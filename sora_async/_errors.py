"""The exception hierarchy of sora_async.

Every exception the SDK raises on purpose derives from `SoraError`::

    SoraError
    ├── APIError                  the API answered with an error
    │   ├── BadRequestError       400, and other 4xx answers the SDK has no class for
    │   │   └── TaskNotFoundError the gateway's 400 `task_not_exist`
    │   ├── AuthenticationError   401: a bad or missing key
    │   ├── PermissionDeniedError 403, `quota_not_enough` among them
    │   ├── RateLimitError        429, with `.retry_after`
    │   └── ServerError           5xx, and gateway codes that mean "try again"
    ├── APIConnectionError        no usable answer: refused, reset, truncated
    │   └── APITimeoutError       a request or a call ran out of time (also a TimeoutError)
    ├── ResponseDecodeError       the body is not JSON, or not the expected shape
    ├── TaskFailedError           the task ended in FAILURE              (_outcomes)
    ├── WaitTimeoutError          a wait's deadline passed first         (_outcomes)
    ├── ClientClosedError         the client was closed (also a RuntimeError)
    ├── EventLoopMismatchError    used from an event loop it cannot serve (also a RuntimeError)
    └── DownloadError             a video could not be saved
        └── URLExpiredError       the CDN refused the signed URL (403): fetch the task again

Each error has `retryable`: whether sending the same request again may
succeed. Messages are built from what the server said, clipped, and never
contain the API key. The two errors that carry a `Task` live in `_outcomes`,
above `_models`, so that this module depends on nothing.
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "DownloadError",
    "EventLoopMismatchError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "ServerError",
    "SoraError",
    "TaskNotFoundError",
    "URLExpiredError",
]


class SoraError(Exception):
    """Base class of every error raised by sora_async."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class APIError(SoraError):
    """The API answered, and the answer is an error.

    Attributes:
        status_code: The HTTP status (200 when the envelope carried the error).
        code: The envelope's `code`, or the OpenAI-style `error.code`, if any.
        message: The server's message, clipped.
        request_id: The gateway's request id, when the answer carried one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        parts = [f"HTTP {self.status_code}"]
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(parts)})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"status_code={self.status_code}, code={self.code!r}, "
            f"request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """The request was refused as invalid (400 and other unclassified 4xx)."""


class TaskNotFoundError(BadRequestError):
    """The gateway knows no task with this id (HTTP 400 `task_not_exist`)."""


class AuthenticationError(APIError):
    """The API key is missing, wrong or revoked (401)."""


class PermissionDeniedError(APIError):
    """The key may not do this, or the account is out of quota (403)."""


class RateLimitError(APIError):
    """Too many requests (429).

    Attributes:
        retry_after: Seconds the server asked us to wait, or None.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, request_id=request_id)
        self.retry_after = retry_after


class ServerError(APIError):
    """The gateway or upstream failed (5xx); most of these are worth retrying."""

    retryable = True


class APIConnectionError(SoraError):
    """No usable answer arrived: the connection failed, reset or was cut short.

    Attributes:
        request_sent: False when the failure happened before any byte of the
            request left this machine, so resending cannot duplicate work.
    """

    retryable = True

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError, TimeoutError):
    """A request took longer than its timeout, or a call's `timeout=` passed.

    Also a `TimeoutError`, like `WaitTimeoutError`.
    """


class ResponseDecodeError(SoraError):
    """The body is not JSON, is too large, or does not have the expected shape."""


class ClientClosedError(SoraError, RuntimeError):
    """The client was closed: `aclose()` ended this call, or it was made afterwards.

    Waits pending when `aclose()` is called end with this error at once;
    their tasks keep running upstream and can be waited for again with a new
    client and the same ids.

    Attributes:
        task_id: The task a `generate` had created before the close, else None.
    """

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class EventLoopMismatchError(SoraError, RuntimeError):
    """The client cannot serve the running event loop.

    Raised before any request when a borrowed `aiohttp.ClientSession` belongs
    to another event loop, or when the client is used from a second loop
    while its first loop is still open. Create the client (and its session)
    inside the loop that uses it.
    """


class DownloadError(SoraError):
    """A video could not be saved: no such file, a CDN error, or a short or long body.

    Nothing is left under the destination name when this is raised.
    """


class URLExpiredError(DownloadError):
    """The CDN refused the signed video URL (HTTP 403), most likely because it expired.

    Fetch the task again with `get_task`: the gateway may hand out fresh URLs.
    """
