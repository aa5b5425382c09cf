"""How the command line reports what went wrong: exit codes, hints, and visible retries."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import IO

import aiohttp

from sora_async._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    JournalError,
    ModelNotAvailableError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    TaskNotFoundError,
    VideoNotReadyError,
)
from sora_async._protocol import DEFAULT_BASE_URL
from sora_async._waits import created_task_id

from ._args import (
    EXIT_CONFIG,
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PRECEDENCE,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    JOURNAL_ENV,
    base_url_of,
    journal_on,
    option,
    request_timeout,
)
from ._display import ABOVE, reason_words


class ConfigError(Exception):
    """The client could not be set up: no key, or an unusable base URL."""


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that ended a command, or a task of `status` or `wait`."""
    if isinstance(error, TimeoutError):  # WaitTimeoutError, APITimeoutError, DownloadTimeoutError
        return EXIT_TIMEOUT
    if isinstance(
        error, (AuthenticationError, PermissionDeniedError, ConfigError, ModelNotAvailableError, JournalError)
    ) or wrong_path(error):
        return EXIT_CONFIG
    if isinstance(error, VideoNotReadyError):  # like a reverse-format task with no video yet
        return EXIT_FAILED
    if isinstance(error, TaskNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, (ValueError, BadRequestError)):  # a bad value: ours (empty id) or the API's 400
        return EXIT_USAGE
    if isinstance(error, (APIConnectionError, ServerError, RateLimitError, ResponseDecodeError)):
        return EXIT_CONNECTION
    if isinstance(error, DownloadError) and error.retryable:  # the video host failed, or the connection
        return EXIT_CONNECTION
    return EXIT_FAILED


def most_pressing(codes: Sequence[int]) -> int:
    """The exit code of a command that reports many tasks: see `EXIT_PRECEDENCE`."""
    return next((code for code in EXIT_PRECEDENCE if code in codes), EXIT_OK)


def wrong_path(error: BaseException) -> bool:
    """Whether the answer says the URL is not the API's: a 404 or a redirect.

    The gateway answers an unknown task with a 400 and never redirects, so
    these come from a --base-url with a wrong path, or another server.
    """
    if isinstance(error, (TaskNotFoundError, ModelNotAvailableError)):  # a 404 of the OpenAI format
        return False
    return isinstance(error, APIError) and (error.status_code in (404, 405) or 300 <= error.status_code < 400)


def about_the_server(error: BaseException) -> bool:
    """Whether an error concerns the server rather than one task, so that other tasks would fail alike."""
    return isinstance(error, (APIConnectionError, AuthenticationError, PermissionDeniedError)) or wrong_path(
        error
    )


def tls_refused(error: BaseException) -> bool:
    """Whether `error` was caused by a TLS failure (such as https:// to a plain-HTTP port)."""
    seen: BaseException | None = error
    for _ in range(10):  # the chain of causes, bounded
        if seen is None:
            return False
        if isinstance(seen, (ssl.SSLError, aiohttp.ClientSSLError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def hint_for(error: BaseException, args: argparse.Namespace, retries: RetryLog) -> str | None:
    """One line of advice for the common mistakes, or None.

    `retries` tells how many tries the failed request took and since when
    the command ran, for a server that never answers.
    """
    if isinstance(error, JournalError) or (
        isinstance(error, ConfigError) and "the journal's folder" in str(error)
    ):
        return (
            f"choose another file with --journal PATH (or ${JOURNAL_ENV}), or record nothing with "
            "--no-journal (then a Ctrl-C or a crash can lose a created task)"
        )
    if option(args, "fake", False):
        return None
    base = base_url_of(args).strip()
    try:
        parts = urllib.parse.urlsplit(base)
    except ValueError:  # "http://[::1": the error itself says what is wrong
        return None
    created = created_task_id(error) or getattr(error, "task_id", None)
    if isinstance(error, ModelNotAvailableError):
        return (
            "the gateway has no channel for this model now (retired, or not enabled for your key's "
            "group); choose another --model from CometAPI's model list"
        )
    if isinstance(error, VideoNotReadyError):
        task_id = error.task_id or option(args, "task_id")
        return f"wait for it first: sora-async wait --openai {task_id}" if task_id else None
    if isinstance(error, DownloadError) and "has no video yet" in str(error):
        task_id = error.task_id or option(args, "task_id")
        return f"wait for it first: sora-async wait {task_id}" if task_id else None
    if own_deadline_passed(error, args, retries):
        return f"the --timeout of {option(args, 'timeout'):g} s ran out first; raise --timeout to wait longer"
    if args.command == "generate" and created is None:
        sent = isinstance(error, APIConnectionError) and error.request_sent
        if sent or isinstance(error, ServerError):  # a 5xx after the create: it may have been made
            kept = " (sora-async jobs --pending lists the create)" if journal_on(args) else ""
            return (
                "the create was sent but its answer was lost: a task may exist and be billed. The gateway "
                "cannot list tasks; look for it in CometAPI's console (task logs) before running "
                f"generate again{kept}"
            )
    if tls_refused(error) and parts.scheme == "https":
        return (
            "the server does not speak TLS on this port; for a local gateway use "
            f"--base-url http://{parts.netloc} (with --allow-insecure-http if it is not this machine)"
        )
    if wrong_path(error):
        path = parts.path.rstrip("/")
        if path:
            root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            return f"--base-url should be the API root, without {path}: {root} (CometAPI: {DEFAULT_BASE_URL})"
        return f"nothing at {base} answers the Sora task API; check --base-url (e.g. {DEFAULT_BASE_URL})"
    if isinstance(error, APITimeoutError) and error.request_sent:
        tries = retries.tries(str(error))
        return (
            f"{parts.netloc or base} accepted the connection but sent no answer: {tries} "
            f"{'try' if tries == 1 else 'tries'} of {request_timeout(args):g} s each, "
            f"{retries.elapsed():.0f} s in all; check --base-url, or raise --request-timeout"
        )
    if isinstance(error, APIConnectionError) and not error.request_sent and not tls_refused(error):
        return f"nothing answers at {parts.netloc or base}; check --base-url and that the server is running"
    return None


def own_deadline_passed(error: BaseException, args: argparse.Namespace, retries: RetryLog) -> bool:
    """Whether a timeout or a refused turn came from the command's own --timeout running out
    (then the server is not to blame, and the hints about it would mislead)."""
    timeout = option(args, "timeout")
    if timeout is None or not isinstance(error, (APIConnectionError, DownloadError)):
        return False
    if isinstance(error, APIConnectionError) and "before the deadline" in str(error):
        return True  # no time, or no turn in the budget, was left: said by the transport itself
    return isinstance(error, TimeoutError) and retries.elapsed() >= 0.9 * float(timeout)


class RetryLog(logging.Handler):
    """Counts the SDK's retries (its `sora_retry` log records), and shows each on a terminal.

    Args:
        stream: Where to write one dim line per retry.
        show: Whether to write them (stderr is a terminal, and --debug is off).
    """

    def __init__(self, stream: IO[str], *, show: bool) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.show = show
        self.color = "NO_COLOR" not in os.environ
        self.started = time.monotonic()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        info = getattr(record, "sora_retry", None)
        if info is None:
            return
        what, error, delay = info
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.show:
            text = f"{what} failed ({reason_words(error)}); next try in {delay:.1f} s"
            above = ABOVE.get()
            if above is not None:  # a live display runs: the line goes above it, not through it
                above(text, "dim" if self.color else None)
                return
            if self.color:
                text = f"\x1b[2m{text}\x1b[0m"
            with contextlib.suppress(OSError, ValueError):  # a broken stderr must not end the command
                print(text, file=self.stream, flush=True)

    def tries(self, message: str) -> int:
        """The tries of the request a message of the transport names ("GET /path ..."), at least 1."""
        return 1 + max((n for what, n in self.counts.items() if message.startswith(f"{what} ")), default=0)

    def elapsed(self) -> float:
        """Seconds since the command started."""
        return time.monotonic() - self.started


@contextlib.contextmanager
def retry_log(stream: IO[str], *, show: bool) -> Iterator[RetryLog]:
    """Attach a `RetryLog` to the `sora_async` logger for the duration of a command."""
    logger = logging.getLogger("sora_async")
    handler = RetryLog(stream, show=show)
    level = logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
