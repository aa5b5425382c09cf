"""sora_async: an asyncio SDK for CometAPI's Sora video task API."""

from ._budget import DEFAULT_MAX_RETRY_AFTER, Budget
from ._cadence import CadencePolicy, SweepEstimator
from ._cadence_store import CadenceFile, CadenceStore, StoredCadence
from ._client import SoraClient
from ._download import DEFAULT_MAX_DOWNLOAD_BYTES, DownloadProgress, VideoStream
from ._download_plan import Destination, Variant, check_destination
from ._engine import CONSUMER_GRACE, FINAL_POLL_LEAD, Batch
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    DestinationExistsError,
    DownloadError,
    DownloadTimeoutError,
    EventLoopMismatchError,
    InvalidTaskIdError,
    JournalError,
    ModelNotAvailableError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    SoraError,
    TaskNotFoundError,
    URLExpiredError,
    VideoNotReadyError,
)
from ._journal import ClaimResult, CreateRecord, CreateState, DownloadRecord, Journal, TaskRecord
from ._journal_sqlite import SQLiteJournal
from ._models import Encoding, Encodings, Generation, Task, TaskStatus, Video
from ._outcomes import Outcome, TaskFailedError, WaitTimeoutError
from ._policy import PollPolicy, RetryPolicy, TaskPolicy
from ._protocol import Action, CreateOptions
from ._resume import Resume
from ._videos import InputReference, Videos
from ._videos_protocol import ContentVariant
from ._waits import DEFAULT_BATCH_CONCURRENCY, DEFAULT_WAIT_TIMEOUT, ProgressCallback

__version__ = "0.1.0"

__all__ = [
    "CONSUMER_GRACE",
    "DEFAULT_BATCH_CONCURRENCY",
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_WAIT_TIMEOUT",
    "FINAL_POLL_LEAD",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Action",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "Budget",
    "CadenceFile",
    "CadencePolicy",
    "CadenceStore",
    "ClaimResult",
    "ClientClosedError",
    "ContentVariant",
    "CreateOptions",
    "CreateRecord",
    "CreateState",
    "Destination",
    "DestinationExistsError",
    "DownloadError",
    "DownloadProgress",
    "DownloadRecord",
    "DownloadTimeoutError",
    "Encoding",
    "Encodings",
    "EventLoopMismatchError",
    "Generation",
    "InputReference",
    "InvalidTaskIdError",
    "Journal",
    "JournalError",
    "ModelNotAvailableError",
    "Outcome",
    "PermissionDeniedError",
    "PollPolicy",
    "ProgressCallback",
    "RateLimitError",
    "ResponseDecodeError",
    "Resume",
    "RetryPolicy",
    "SQLiteJournal",
    "ServerError",
    "SoraClient",
    "SoraError",
    "StoredCadence",
    "SweepEstimator",
    "Task",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskPolicy",
    "TaskRecord",
    "TaskStatus",
    "URLExpiredError",
    "Variant",
    "Video",
    "VideoNotReadyError",
    "VideoStream",
    "Videos",
    "WaitTimeoutError",
    "__version__",
    "check_destination",
]
