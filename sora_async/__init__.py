"""sora_async: an asyncio SDK for CometAPI's Sora video task API."""

from ._cadence import CadencePolicy, SweepEstimator
from ._client import DEFAULT_WAIT_TIMEOUT, ProgressCallback, SoraClient
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    SoraError,
    TaskFailedError,
    TaskNotFoundError,
    URLExpiredError,
    WaitTimeoutError,
)
from ._models import Encoding, Encodings, Generation, Task, TaskStatus, Video
from ._policy import PollPolicy, RetryPolicy
from ._protocol import Action, CreateOptions

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Action",
    "AuthenticationError",
    "BadRequestError",
    "CadencePolicy",
    "CreateOptions",
    "DownloadError",
    "Encoding",
    "Encodings",
    "Generation",
    "PermissionDeniedError",
    "PollPolicy",
    "ProgressCallback",
    "RateLimitError",
    "ResponseDecodeError",
    "RetryPolicy",
    "ServerError",
    "SoraClient",
    "SoraError",
    "SweepEstimator",
    "Task",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskStatus",
    "URLExpiredError",
    "Video",
    "WaitTimeoutError",
    "__version__",
]
