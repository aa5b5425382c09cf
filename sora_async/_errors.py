"""The exception hierarchy of sora_async.

Every exception the SDK raises on purpose derives from `SoraError`::

    SoraError
    ├── APIError                    the API answered with an error
    │   ├── BadRequestError         400, and other 4xx answers the SDK has no class for
    │   │   ├── TaskNotFoundError   the gateway's 400 `task_not_exist`, or /content's 404
    │   │   └── VideoNotReadyError  /content asked for before the video completed
    │   ├── AuthenticationError     401: a bad or missing key
    │   ├── PermissionDeniedError   403, `quota_not_enough` among them
    │   ├── RateLimitError          429, with `.retry_after`
    │   ├── ModelNotAvailableError  no channel serves the model: final (`model_not_found`)
    │   └── ServerError             5xx, and gateway codes that mean "try again"
    ├── APIConnectionError          no usable answer: refused, reset, truncated
    │   └── APITimeoutError         a request or a call ran out of time (also a TimeoutError)
    ├── ResponseDecodeError         the body is not JSON, or not the expected shape
    ├── InvalidTaskIdError          a task id that cannot be sent (also a ValueError)
    ├── TaskFailedError             the task ended in FAILURE              (_outcomes)
    ├── WaitTimeoutError            a wait's deadline passed first         (_outcomes)
    ├── ClientClosedError           the client was closed (also a RuntimeError)
    ├── EventLoopMismatchError      used from an event loop it cannot serve (also a RuntimeError)
    ├── JournalError                the task journal cannot be opened, read or written
    └── DownloadError               a video could not be saved
        ├── DestinationExistsError  a file is already there and overwrite=False (also a FileExistsError)
        ├── DownloadTimeoutError    the transfer ran out of time (also a TimeoutError)
        └── URLExpiredError         the CDN refused the signed URL (403): fetch the task again

Each error has `retryable`: whether sending the same request again may
succeed, and `task_id`: the task it concerns when one is known. An error
raised after a create (by `generate`) always names the task it created, so a
billed task is never lost. Every error survives `pickle` with its public
attributes, so it can cross a process pool or a job queue. Messages are
built from what the server said, clipped, and never contain the API key.
The two errors that carry a `Task` live in `_outcomes`, above `_models`, so
that this module depends on nothing.
"""

from __future__ import annotations

import errno
import os
import pathlib
import sys

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "DestinationExistsError",
    "DownloadError",
    "DownloadTimeoutError",
    "EventLoopMismatchError",
    "InvalidTaskIdError",
    "JournalError",
    "ModelNotAvailableError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "ServerError",
    "SoraError",
    "TaskNotFoundError",
    "URLExpiredError",
    "VideoNotReadyError",
]


class SoraError(Exception):
    """Base class of every error raised by sora_async.

    Attributes:
        message: What went wrong, without the API key.
        retryable: Whether sending the same request again may succeed.
        task_id: The task this error concerns, when one is known. Every
            error `generate` raises after its create has succeeded carries
            the created task's id: the task exists and is billed, so wait
            for it again (or download it) by this id instead of creating
            another.
    """

    retryable: bool = False
    task_id: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickles as cls(*args), which cannot pass the keyword-only
        # arguments of the subclasses; rebuild from the attributes instead.
        return (_rebuild, (type(self), self.__dict__.copy()))


def add_note(exc: BaseException, note: str) -> None:
    """`exc.add_note(note)`; on Python 3.10 the same `__notes__` attribute, which its
    tracebacks do not print."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:
        setattr(exc, "__notes__", [*getattr(exc, "__notes__", ()), note])  # noqa: B010


def _rebuild(cls: type[SoraError], state: dict[str, object]) -> SoraError:
    """Recreate a pickled error: the same class and attributes, no `__init__` run."""
    error = cls.__new__(cls)
    error.args = (state.get("message", ""),)
    error.__dict__.update(state)
    return error


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
        # A message built from the answer may already say its status ("HTTP 404 with a non-JSON body").
        parts = [] if self.message.startswith(f"HTTP {self.status_code} ") else [f"HTTP {self.status_code}"]
        if self.code and self.code != self.message:  # the gateway's 400 says task_not_exist as both
            parts.append(f"code={self.code}")
        if self.request_id and self.request_id not in self.message:  # the gateway's 401 names it
            parts.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(parts)})" if parts else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"status_code={self.status_code}, code={self.code!r}, "
            f"request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """The request was refused as invalid (400 and other unclassified 4xx)."""


class TaskNotFoundError(BadRequestError):
    """The gateway knows no task with this id.

    HTTP 400 `task_not_exist` from a query of either format; HTTP 404 "Task
    not found" from the OpenAI format's `/content` (PROTOCOL.md, Part 2).
    """


class VideoNotReadyError(BadRequestError):
    """The video's file was asked for before the video completed (HTTP 400
    "Task is not completed yet, current status: ..."; PROTOCOL.md, Part 2).

    Wait for the video (`SoraClient.videos.wait_until_done`), then download it.
    """


class ModelNotAvailableError(APIError):
    """The gateway serves no such model, or no channel for it: final, never retried.

    new-api's `model_not_found` code (its message says no channel is
    available for the model), a message saying so without the code, or a
    404 naming the model (PROTOCOL.md, Part 2). Whatever the HTTP status (the
    gateway sends it with 503), waiting or resending cannot help: the model
    was retired or is not enabled for the key's group.
    """

    retryable = False


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
        request_sent: True only when bytes of the request were written to a
            connection, so the server may have acted on it.

            For a create this decides what to do next. False (the connection
            was refused, no connection came free before the deadline, the
            request budget never admitted it): nothing was sent and no task
            exists, so creating again cannot pay twice. True (a timeout or a
            reset after sending): a task may exist and be billed, and the
            answer naming it is lost; creating again may pay twice, so look
            for the task first (the gateway has no route that lists tasks,
            PROTOCOL.md; CometAPI's console shows them) or accept the risk.
            For reads (`get_task`, waits) it does not matter: they are safe
            to resend, and the SDK does.
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


class InvalidTaskIdError(SoraError, ValueError):
    """A task id that cannot be sent: empty, too long, or with white space or control characters.

    Also a `ValueError`. Nothing is sent for such an id. In a batch it is
    that id's outcome, and the other ids are waited for as usual.
    """


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


class JournalError(SoraError):
    """The task journal cannot be opened, read or written.

    Raised by a create before anything is sent when its intent cannot be
    recorded (so no task exists that the journal does not know of), by a
    download whose record cannot be written, and by the journal's own
    methods. A journal file that is not a database, or was written by a
    newer sora_async, is refused with this error when first used.

    Attributes:
        path: The journal's file, when it has one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DownloadError(SoraError):
    """A video could not be fetched or saved: no such file, a CDN error, a short or
    long body, or a destination that cannot be written.

    A file destination is left as it was (nothing new under its name); a
    device or FIFO destination, which is written into directly, may have
    received part of the body.
    """


class DestinationExistsError(DownloadError, FileExistsError):
    """The destination already exists and the download was asked not to replace it (`overwrite=False`).

    Raised by `check_destination` and before any request to the video host
    when something is already there, or when the transfer is done and a file
    appeared under the name meanwhile; that file is kept as it is. Also a
    `FileExistsError`, with `errno` `EEXIST` and `filename` set.

    Attributes:
        path: The destination as named (the file inside a folder `dest`).
    """

    def __init__(self, path: str | os.PathLike[str], *, message: str | None = None) -> None:
        self.path = pathlib.Path(path)
        super().__init__(message or f"{self.path} already exists; pass overwrite=True to replace it")
        # Only as attributes: OSError's (errno, strerror, filename) arguments
        # would change `args`, which every SoraError keeps as (message,).
        self.errno = errno.EEXIST
        self.strerror = os.strerror(errno.EEXIST)
        self.filename = os.fspath(self.path)

    def __reduce__(self) -> tuple[object, ...]:
        # OSError keeps errno, strerror and filename outside __dict__; the
        # third item goes through BaseException.__setstate__, which sets them.
        state = {"errno": self.errno, "strerror": self.strerror, "filename": self.filename}
        return (*super().__reduce__(), state)


class DownloadTimeoutError(DownloadError, TimeoutError):
    """A download ran out of time: its `timeout=`, or 60 s without a byte from the video host.

    Also a `TimeoutError`, like `APITimeoutError` and `WaitTimeoutError`.
    """


class URLExpiredError(DownloadError):
    """The CDN refused the signed video URL (HTTP 403), most likely because it expired.

    Fetch the task again with `get_task`: the gateway may hand out fresh URLs.
    """
