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
    │   └── APITimeoutError       one request took longer than its timeout
    ├── ResponseDecodeError       the body is not JSON, or not the expected shape
    ├── TaskFailedError           the task ended in FAILURE
    ├── WaitTimeoutError          a wait's deadline passed before the task ended
    └── DownloadError             a video could not be saved
        └── URLExpiredError       the CDN refused the signed URL (403): fetch the task again

Each error has `retryable`: whether sending the same request again may
succeed. Messages are built from what the server said, clipped, and never
contain the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Task

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "ServerError",
    "SoraError",
    "TaskFailedError",
    "TaskNotFoundError",
    "URLExpiredError",
    "WaitTimeoutError",
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


class APITimeoutError(APIConnectionError):
    """One request took longer than its timeout."""


class ResponseDecodeError(SoraError):
    """The body is not JSON, is too large, or does not have the expected shape."""


class TaskFailedError(SoraError):
    """The task ended with status FAILURE.

    Attributes:
        task: The final `Task` snapshot.
        fail_reason: The gateway's `fail_reason` (may be empty).
    """

    def __init__(self, task: Task) -> None:
        reason = task.fail_reason or "no reason given"
        super().__init__(f"task {task.task_id} failed: {reason}")
        self.task = task
        self.fail_reason = task.fail_reason

    @property
    def task_id(self) -> str:
        """The id of the failed task."""
        return self.task.task_id


class WaitTimeoutError(SoraError, TimeoutError):
    """The wait's deadline passed before the task reached SUCCESS or FAILURE.

    The task may still finish later; wait for it again with the same id.

    Attributes:
        task_id: The task that was being waited for.
        last_task: The last snapshot seen, or None if no poll succeeded. To
            keep long waits small its nested payload (`data`, `.video`) is
            not kept; poll `get_task` for the full object.
    """

    def __init__(self, task_id: str, last_task: Task | None, timeout: float | None) -> None:
        seen = f"last status {last_task.raw_status}" if last_task else "no status seen"
        after = f" after {timeout:,.1f} s" if timeout is not None else ""
        super().__init__(f"task {task_id} did not finish{after} ({seen})")
        self.task_id = task_id
        self.last_task = last_task


class DownloadError(SoraError):
    """A video could not be saved: no such file, a CDN error, or a short or long body.

    Nothing is left under the destination name when this is raised.
    """


class URLExpiredError(DownloadError):
    """The CDN refused the signed video URL (HTTP 403), most likely because it expired.

    Fetch the task again with `get_task`: the gateway may hand out fresh URLs.
    """
