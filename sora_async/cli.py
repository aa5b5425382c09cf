"""The `sora-async` command: generate, follow, inspect and download videos from a terminal.

Exit codes, for scripts to branch on:

    ====  =============================================================
    code  meaning
    ====  =============================================================
    0     success
    1     a task failed (FAILURE), or another error: the API refused
          the request, a file could not be written
    2     usage: a bad option or value (argparse's own code)
    3     timeout, in any phase: create, wait, download
    4     authentication or configuration: no key, a wrong key (401),
          no permission or quota (403), an unusable --base-url (one
          that answers 404 or a redirect)
    5     not found: the gateway knows no such task
    6     connection or server error after the retries: refused, reset,
          TLS, 5xx, 429, an answer that is not the API's JSON
    130   interrupted (Ctrl-C)
    ====  =============================================================

`status` and `wait` report every task and then exit with the most
pressing code among them, in this order: 4, 2, 5, 6, 1, 3 (so a task that
is not found outranks one that failed, and a failure outranks a timeout);
`status` exits 1 when a listed task is FAILURE. An error that concerns
the server rather than one task (no connection, a wrong key or base URL)
stops them at once.

Each error is one `error: ...` line on stderr, followed for the common
mistakes by one `hint: ...` line. On a terminal, each retry of a request
or poll is one dim line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import pathlib
import shlex
import ssl
import sys
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import IO, Any, Protocol

import aiohttp

from . import __version__
from ._client import SoraClient, created_task_id
from ._download_plan import Variant, check_destination
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    DownloadError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
    SoraError,
    TaskNotFoundError,
)
from ._models import VIDEO_VARIANTS, Task
from ._outcomes import TaskFailedError
from ._policy import PollPolicy
from ._protocol import CREATE_DEFAULTS, DEFAULT_BASE_URL
from .testing import FakeSoraServer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_CONFIG = 4
EXIT_NOT_FOUND = 5
EXIT_CONNECTION = 6
EXIT_INTERRUPTED = 130

EXIT_PRECEDENCE = (EXIT_CONFIG, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONNECTION, EXIT_FAILED, EXIT_TIMEOUT)
"""When tasks of one command end differently, the first of these codes present wins."""

DEFAULT_REQUEST_TIMEOUT = 20.0
"""Seconds one HTTP request may take in the CLI (the SDK's default is 30)."""

DEFAULT_RETRIES = 2
"""Resends of a failed single request in the CLI (the SDK's default is 4)."""

FAKE_KEY = "fake-key"


# --- arguments -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global options are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help=f"the API root, without /v1 (default: $COMETAPI_BASE_URL, else {DEFAULT_BASE_URL})",
    )
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (default: $COMETAPI_KEY)")
    common.add_argument(
        "--fake", action="store_true", default=argparse.SUPPRESS, help="run against an embedded fake server"
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="log requests and show tracebacks"
    )
    common.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=argparse.SUPPRESS,
        help="allow an http:// --base-url to a host other than this machine (the key travels in clear)",
    )
    common.add_argument(
        "--request-timeout",
        type=positive_number,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"seconds one HTTP request may take (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    common.add_argument(
        "--retries",
        type=count,
        default=argparse.SUPPRESS,
        metavar="N",
        help=f"resends of a request that failed for a passing reason (default: {DEFAULT_RETRIES})",
    )

    parser = argparse.ArgumentParser(
        prog="sora-async",
        description="Generate and fetch videos with CometAPI's Sora task API.",
        parents=[common],
        epilog="Exit codes: 0 ok, 1 task failed, 2 usage, 3 timeout, 4 auth or config, 5 not found, "
        "6 connection or server error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"sora-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", parents=[common], help="create a video and wait for it")
    generate.add_argument("prompt", help="what the video should show, in quotes")
    width, height = CREATE_DEFAULTS["width"], CREATE_DEFAULTS["height"]
    generate.add_argument(
        "--width", type=positive_int, help=f"frame width in pixels, with --height (default: {width})"
    )
    generate.add_argument(
        "--height", type=positive_int, help=f"frame height in pixels, with --width (default: {height})"
    )
    generate.add_argument(
        "--frames",
        type=positive_int,
        dest="n_frames",
        metavar="N",
        help=f"150 (5 s) or 300 (10 s) (default: {CREATE_DEFAULTS['n_frames']})",
    )
    generate.add_argument(
        "--variants",
        type=positive_int,
        dest="n_variants",
        metavar="N",
        help=f"how many videos to make (default: {CREATE_DEFAULTS['n_variants']})",
    )
    generate.add_argument("--model", help=f"the model (default: {CREATE_DEFAULTS['model']})")
    generate.add_argument("--style", help=f"the visual style (default: {CREATE_DEFAULTS['style']})")
    generate.add_argument(
        "-o", "--output", help="save the video to this file or folder, - for stdout (default: do not save)"
    )
    generate.add_argument(
        "--timeout",
        type=positive_number,
        default=1800.0,
        metavar="SECONDS",
        help="seconds for create and wait together (default: %(default)g)",
    )
    generate.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, progress as JSON on stderr"
    )

    status = commands.add_parser("status", parents=[common], help="show tasks' current status")
    status.add_argument("task_ids", nargs="+", metavar="TASK_ID", type=str.strip, help="the tasks to show")
    status.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    wait = commands.add_parser("wait", parents=[common], help="wait for many tasks at once")
    wait.add_argument("task_ids", nargs="+", metavar="TASK_ID", type=str.strip, help="the tasks to wait for")
    wait.add_argument(
        "--concurrency",
        type=positive_int,
        default=5,
        metavar="N",
        help="the most polls in flight at once (default: %(default)s)",
    )
    wait.add_argument(
        "--rate",
        type=positive_number,
        metavar="PER_SECOND",
        help="the most polls per second (default: no limit but the gateway's)",
    )
    wait.add_argument(
        "--timeout",
        type=positive_number,
        default=1800.0,
        metavar="SECONDS",
        help="seconds for the whole batch (default: %(default)g)",
    )
    wait.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, progress as JSON on stderr"
    )

    download = commands.add_parser("download", parents=[common], help="save a finished task's video")
    download.add_argument("task_id", metavar="TASK_ID", type=str.strip, help="a task that ended in SUCCESS")
    download.add_argument(
        "-o",
        "--output",
        default="./",
        help="file or folder (default: this folder); - writes the file to stdout, and all text to stderr",
    )
    download.add_argument(
        "--variant", choices=VIDEO_VARIANTS, default="source", help="which rendition (default: %(default)s)"
    )
    download.add_argument(
        "--generation",
        type=int,
        default=0,
        metavar="N",
        help="which of the task's videos, from 0 (default: %(default)s)",
    )
    download.add_argument(
        "--timeout",
        type=positive_number,
        metavar="SECONDS",
        help="seconds for the whole download (default: none, but 60 s without a byte fails)",
    )
    download.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    fake = commands.add_parser(
        "fake-server",
        parents=[common],
        help="run the fake API server in the foreground",
        description="Run the fake API server (sora_async.testing.FakeSoraServer) until Ctrl-C, "
        "logging each request on stderr. It accepts any key, or only the one given with --api-key "
        "($COMETAPI_KEY is not read); --fake and --base-url do not apply.",
    )
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    fake.add_argument(
        "--port", type=int, default=8787, help="port to listen on, 0 for a free one (default: %(default)s)"
    )
    fake.add_argument(
        "--step-seconds",
        type=float,
        default=2.0,
        help="how long each task state lasts (default: %(default)s)",
    )
    fake.add_argument(
        "--tasks", type=int, default=0, metavar="N", help="create N tasks at start and print their ids"
    )
    fake.add_argument(
        "--failure-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="the share of those tasks that end in FAILURE, 0 to 1 (default: %(default)s)",
    )
    fake.add_argument(
        "--seed", type=int, default=0, help="seeds task ids and which tasks fail (default: %(default)s)"
    )
    return parser


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0, as every `timeout=` of the SDK takes for seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def option(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


# --- progress displays -----------------------------------------------------


class Display(Protocol):
    def task(self, task: Task) -> None: ...

    def bytes(self, done: int, total: int | None) -> None: ...

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None: ...

    def close(self) -> None: ...


class Tenths:
    """When a download's byte count is worth a line: the first chunk, each new tenth, and the end."""

    def __init__(self) -> None:
        self._last: int | None = None

    def due(self, done: int, total: int | None) -> bool:
        tenth = done * 10 // total if total else -1
        if tenth == self._last and not (total is not None and done >= total):
            return False
        self._last = tenth
        return True


class PlainDisplay:
    """One line per change, for logs and pipes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self._tenths = Tenths()

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=self.stream, flush=True)

    def task(self, task: Task) -> None:
        self._line(describe(task))

    def bytes(self, done: int, total: int | None) -> None:
        if self._tenths.due(done, total):  # a line per tenth, not per chunk
            self._line(f"downloaded {done:,} of {total:,} bytes" if total else f"downloaded {done:,} bytes")

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        self._line(f"{done}/{total} {task_id} {summarize(outcome)}")

    def close(self) -> None:
        pass


class RichDisplay:
    """A live progress bar, when stdout is a terminal and rich is installed."""

    def __init__(self, stream: IO[str], rich_console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        console = rich_console if rich_console is not None else Console(file=stream)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.progress.start()
        self.bar = self.progress.add_task("waiting for the first status", total=100)
        self.download_bar: Any = None

    def task(self, task: Task) -> None:
        self.progress.update(
            self.bar, description=describe(task, with_time=False), completed=task.percent or 0
        )

    def bytes(self, done: int, total: int | None) -> None:
        if self.download_bar is None:
            self.download_bar = self.progress.add_task("downloading", total=total)
        self.progress.update(self.download_bar, completed=done, total=total)

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        self.progress.update(self.bar, description=f"{done}/{total} done", completed=done, total=total)
        self.progress.console.print(f"{task_id} {summarize(outcome)}")

    def close(self) -> None:
        self.progress.stop()


class JsonLinesDisplay:
    """Progress as JSON lines, one object per change, for --json (on stderr: stdout keeps one document).

    Each line has an "event": "task" (the fields of a task in the final
    document), "bytes" (`done` and `total` bytes, about once per tenth), or
    "outcome" (a task of `wait` ended: `done` of `total`, and its task or
    error fields).
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._tenths = Tenths()

    def _emit(self, event: str, fields: dict[str, Any]) -> None:
        print(json.dumps({"event": event, **fields}), file=self.stream, flush=True)

    def task(self, task: Task) -> None:
        self._emit("task", task_json(task))

    def bytes(self, done: int, total: int | None) -> None:
        if self._tenths.due(done, total):
            self._emit("bytes", {"done": done, "total": total})

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        fields = task_json(outcome) if isinstance(outcome, Task) else error_json(task_id, outcome)
        self._emit("outcome", {"done": done, "total": total, **fields})

    def close(self) -> None:
        pass


def make_display(json_output: bool, stream: IO[str], err: IO[str] | None = None) -> Display:
    """Rich on a terminal when available, plain lines otherwise; JSON lines on `err` with --json."""
    if json_output:
        return JsonLinesDisplay(err if err is not None else sys.stderr)
    if stream.isatty():
        try:
            return RichDisplay(stream)
        except ImportError:
            pass
    return PlainDisplay(stream)


def describe(task: Task, *, with_time: bool = True) -> str:
    """A one-line description of a snapshot: status, percent, queue position."""
    percent = f" {task.percent:.0f}%" if task.percent is not None else ""
    text = f"{task.task_id} {task.raw_status}{percent}"
    try:
        video = task.video
    except SoraError:
        video = None
    if video is not None and video.progress_pos_in_queue is not None and not task.is_terminal:
        text += f" (queue position {video.progress_pos_in_queue})"
    return text


def summarize(outcome: Task | SoraError) -> str:
    if isinstance(outcome, Task):
        return f"{outcome.raw_status} {outcome.video_url or ''}".rstrip()
    return f"{type(outcome).__name__}: {outcome}"


def task_json(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "status": task.raw_status,
        "progress": task.progress,
        "percent": task.percent,
        "fail_reason": task.fail_reason,
        "submit_time": task.submit_time,
        "finish_time": task.finish_time,
        "video_url": task.video_url if task.status == "SUCCESS" else None,
    }


def error_json(task_id: str | None, error: BaseException, resume: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON error object: the task (None when none was created), the error, how to resume."""
    result: dict[str, Any] = {"task_id": task_id, "error": type(error).__name__, "message": str(error)}
    if isinstance(error, TaskFailedError):
        result.update(status="FAILURE", fail_reason=error.fail_reason)
    if resume:
        result["resume"] = list(resume)
    return result


class ConfigError(Exception):
    """The client could not be set up: no key, or an unusable base URL."""


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that ended a command, or a task of `status` or `wait`."""
    if isinstance(error, TimeoutError):  # WaitTimeoutError, APITimeoutError, DownloadTimeoutError
        return EXIT_TIMEOUT
    if isinstance(error, (AuthenticationError, PermissionDeniedError, ConfigError)) or wrong_path(error):
        return EXIT_CONFIG
    if isinstance(error, TaskNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, ValueError):  # a bad argument value, such as an empty task id
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
    return isinstance(error, APIError) and (error.status_code in (404, 405) or 300 <= error.status_code < 400)


def about_the_server(error: BaseException) -> bool:
    """Whether an error concerns the server rather than one task, so that other tasks would fail alike."""
    return isinstance(error, (APIConnectionError, AuthenticationError, PermissionDeniedError)) or wrong_path(
        error
    )


def base_url_of(args: argparse.Namespace) -> str:
    """The base URL the command uses, as given (flag, then environment, then CometAPI's)."""
    return str(option(args, "base_url") or os.environ.get("COMETAPI_BASE_URL") or DEFAULT_BASE_URL)


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
    if option(args, "fake", False):
        return None
    base = base_url_of(args).strip()
    parts = urllib.parse.urlsplit(base)
    created = created_task_id(error) or getattr(error, "task_id", None)
    if args.command == "generate" and created is None:
        sent = isinstance(error, APIConnectionError) and error.request_sent
        if sent or isinstance(error, ServerError):  # a 5xx after the create: it may have been made
            return (
                "the create was sent but its answer was lost: a task may exist and be billed. The gateway "
                "cannot list tasks; look for it in CometAPI's console (task logs) before running "
                "generate again"
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


def request_timeout(args: argparse.Namespace) -> float:
    return float(option(args, "request_timeout", DEFAULT_REQUEST_TIMEOUT))


def cli_words(message: str) -> str:
    """An SDK message with its parameter names replaced by the CLI's flags."""
    for python, flag in (
        ("allow_insecure_http=True", "--allow-insecure-http"),
        ("base_url", "--base-url"),
        ("api_key", "--api-key"),
    ):
        message = message.replace(python, flag)
    return message


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
            text = f"{what} failed ({type(error).__name__}); next try in {delay:.1f} s"
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


# --- commands --------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_client(args: argparse.Namespace) -> AsyncIterator[SoraClient]:
    """A client for the real API, or for an embedded fake server with --fake."""
    if option(args, "fake", False):
        # A compressed clock and a matching poll policy, so a demo takes seconds.
        async with FakeSoraServer(advance="clock", step_seconds=0.5) as server:
            key = option(args, "api_key") or FAKE_KEY
            poll = PollPolicy(initial_interval=0.25, max_interval=0.25)
            async with SoraClient(key, base_url=server.url, poll=poll, **client_options(args)) as client:
                yield client
        return
    key = option(args, "api_key") or os.environ.get("COMETAPI_KEY", "")
    if not key.strip():
        raise ConfigError("no API key: pass --api-key KEY or set COMETAPI_KEY")
    try:
        client = SoraClient(
            key,
            base_url=option(args, "base_url"),
            allow_insecure_http=bool(option(args, "allow_insecure_http", False)),
            **client_options(args),
        )
    except ValueError as exc:
        raise ConfigError(cli_words(str(exc))) from exc
    async with client:
        yield client


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """The client's per-request timeout and resends, from --request-timeout and --retries."""
    return {
        "timeout": request_timeout(args),
        "max_retries": int(option(args, "retries", DEFAULT_RETRIES)),
    }


async def cmd_generate(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    options = {
        name: value
        for name in ("width", "height", "n_frames", "n_variants", "model", "style")
        if (value := option(args, name)) is not None
    }
    # Every check on the destination happens now, before a task is created and billed.
    binary = binary_stdout(out) if args.output == "-" else None
    if args.output is not None and binary is None:
        check_destination(args.output)  # "" included: refused, never "no download"
    if option(args, "fake", False) and not args.json:
        print("Using an embedded fake server (--fake).", file=err, flush=True)
    # With -o - standard output carries the video, so every line of text goes to stderr.
    text = err if binary is not None else out
    display = make_display(args.json, text, err)
    task: Task | None = None
    path: pathlib.Path | None = None
    size: int | None = None
    try:
        async with open_client(args) as client:
            task = await client.generate(
                args.prompt, timeout=args.timeout, on_progress=display.task, **options
            )
            if binary is not None:
                size = await write_video(client, task, binary, on_progress=display.bytes)
            elif args.output is not None:
                path = await client.download(task, args.output, on_progress=display.bytes)
                size = path.stat().st_size
    except BaseException as exc:
        display.close()
        task_id = task.task_id if task is not None else created_task_id(exc)
        resume: list[str] = []
        if task_id is not None and not isinstance(exc, TaskFailedError):  # a failed task is over
            # The task exists and is billed: never end without saying how to get it.
            resume = resume_commands(task_id, args.output, downloading=task is not None)
            print(f"task {task_id} was created and is billed; to resume:", file=err)
            for command in resume:
                print(f"  {command}", file=err)
        if args.json:  # Ctrl-C included: the task id must reach whoever reads the JSON
            print(json.dumps(error_json(task_id, exc, resume)), file=text)
        raise
    finally:
        display.close()
    if args.json:
        print(json.dumps({**task_json(task), "file": str(path) if path else None, "bytes": size}), file=text)
    else:
        print(f"video: {task.video_url}", file=text)
        if path is not None:
            print(f"saved: {path} ({size:,} bytes)", file=text)
        elif binary is not None:
            print(f"wrote {size:,} bytes to standard output", file=text)
    return EXIT_OK


def resume_commands(task_id: str, output: str | None, *, downloading: bool) -> list[str]:
    """The commands that pick a created task up again: wait for it, then download it."""
    quoted = shlex.quote(task_id)
    commands = [] if downloading else [f"sora-async wait {quoted}"]
    if output:
        commands.append(f"sora-async download {quoted} -o {shlex.quote(output)}")
    elif downloading:
        commands.append(f"sora-async status {quoted}")
    return commands


async def cmd_status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    results: list[dict[str, Any]] = []
    codes: list[int] = []
    async with open_client(args) as client:
        for task_id in args.task_ids:
            try:
                task = await client.get_task(task_id)
            except SoraError as exc:
                if about_the_server(exc):  # every other task would fail alike
                    raise
                codes.append(exit_code_for(exc))
                results.append(error_json(task_id, exc))
                if not args.json:
                    print(f"{task_id} {type(exc).__name__}: {exc}", file=out)
                continue
            results.append(task_json(task))
            if task.status == "FAILURE":
                codes.append(EXIT_FAILED)
            if not args.json:
                reason = f" ({task.fail_reason})" if task.fail_reason else ""
                url = f" {task.video_url}" if task.status == "SUCCESS" and task.video_url else ""
                print(f"{task.task_id} {task.raw_status} {task.progress or '-'}{reason}{url}", file=out)
    if args.json:
        print(json.dumps({"tasks": results}), file=out)
    return most_pressing(codes)


async def cmd_wait(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    display = make_display(args.json, out, err)
    results: list[dict[str, Any]] = []
    ended: set[str] = set()
    codes: list[int] = []
    total = len(args.task_ids)
    try:
        async with open_client(args) as client:
            outcomes = client.as_completed(
                args.task_ids, concurrency=args.concurrency, rate_limit=args.rate, timeout=args.timeout
            )
            async with outcomes:
                async for task_id, outcome in outcomes:
                    if isinstance(outcome, SoraError) and about_the_server(outcome):
                        raise outcome  # every other task would fail alike
                    ended.add(task_id)
                    display.outcome(task_id, outcome, len(results) + 1, total)
                    if isinstance(outcome, Task):
                        results.append(task_json(outcome))
                    else:
                        results.append(error_json(task_id, outcome))
                        codes.append(exit_code_for(outcome))
    except (asyncio.CancelledError, KeyboardInterrupt):
        display.close()
        # Ctrl-C: the tasks go on upstream; say which, and how to pick them up again.
        running = list(dict.fromkeys(t for t in args.task_ids if t not in ended))
        if running:
            print(f"{len(running)} task(s) still running upstream; to resume:", file=err)
            print(f"  sora-async wait {' '.join(shlex.quote(t) for t in running)}", file=err)
        raise
    finally:
        display.close()
    if args.json:
        print(json.dumps({"tasks": results}), file=out)
    else:
        done = sum(1 for r in results if "error" not in r)
        print(f"{done} of {total} succeeded", file=out)
    return most_pressing(codes)


async def write_video(
    client: SoraClient,
    task_or_id: Task | str,
    binary: IO[bytes],
    *,
    variant: Variant = "source",
    generation: int = 0,
    on_progress: Callable[[int, int | None], object] | None = None,
    timeout: float | None = None,
) -> int:
    """Stream a finished task's file into a binary stream, such as `sys.stdout.buffer`.

    Writes run in a worker thread, so a slow reader of a pipe never stalls
    the event loop. `timeout` is in seconds for the whole transfer, None for
    no limit. Returns the bytes written. Raises as `SoraClient.stream_video`
    does (`DownloadTimeoutError` when `timeout` passes), and `OSError` from
    the stream (a closed pipe is `BrokenPipeError`).
    """
    async with client.stream_video(
        task_or_id, variant=variant, generation=generation, timeout=timeout
    ) as video:
        async for chunk in video:
            await asyncio.to_thread(binary.write, chunk)
            if on_progress is not None:
                on_progress(video.received, video.size)
        await asyncio.to_thread(binary.flush)
        return video.received


def binary_stdout(out: IO[str]) -> IO[bytes]:
    """The byte stream under the text stream `out`, for `-o -`.

    Raises:
        ValueError: `out` is a terminal (a video would garble it), or has no byte stream.
    """
    buffer: IO[bytes] | None = getattr(out, "buffer", None)
    if buffer is None:
        raise ValueError("-o - needs a standard output that takes bytes")
    if out.isatty():
        raise ValueError("refusing to write a video to a terminal: redirect standard output, or use -o FILE")
    return buffer


async def cmd_download(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    # With -o - standard output carries the video, so every line of text goes to stderr.
    binary = binary_stdout(out) if args.output == "-" else None
    report = err if binary is not None else out
    display = make_display(args.json, report, err)
    received = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal received
        received = done
        display.bytes(done, total)

    choice = {"variant": args.variant, "generation": args.generation}
    try:
        async with open_client(args) as client:
            if binary is not None:
                await write_video(
                    client, args.task_id, binary, **choice, on_progress=progress, timeout=args.timeout
                )
                where = "-"
            else:
                path = await client.download(
                    args.task_id, args.output, **choice, on_progress=progress, timeout=args.timeout
                )
                where = str(path)
    finally:
        display.close()
    if args.json:
        print(json.dumps({"task_id": args.task_id, "file": where, "bytes": received}), file=report)
    elif binary is not None:
        print(f"wrote {received:,} bytes to standard output", file=report)
    else:
        print(f"saved: {where} ({received:,} bytes)", file=report)
    return EXIT_OK


async def cmd_fake_server(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    import errno

    def usage(message: str) -> int:
        print(f"sora-async fake-server: error: {message}", file=err)
        return EXIT_USAGE

    # The global client options make no sense for the server: refuse them rather than ignore them.
    misplaced = [
        flag for flag, name in (("--fake", "fake"), ("--base-url", "base_url")) if hasattr(args, name)
    ]
    if misplaced:
        return usage(f"{' and '.join(misplaced)} cannot be used here: fake-server is the server itself")
    if not 0 <= args.port <= 65535:
        return usage(f"--port must be from 0 to 65535, got {args.port}")
    if not (math.isfinite(args.step_seconds) and args.step_seconds > 0):
        return usage(f"--step-seconds must be a finite number > 0, got {args.step_seconds}")
    if args.tasks < 0:
        return usage(f"--tasks must be 0 or more, got {args.tasks}")
    if not 0 <= args.failure_rate <= 1:
        return usage(f"--failure-rate must be from 0 to 1, got {args.failure_rate}")
    key: str | None = option(args, "api_key") or None  # only the flag: a real $COMETAPI_KEY is never echoed

    def log(method: str, path: str, status: int, elapsed: float) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {method} {path} {status or '-'} {elapsed * 1000:.1f} ms", file=err, flush=True)

    server = FakeSoraServer(
        api_key=key,
        advance="clock",
        step_seconds=args.step_seconds,
        seed=args.seed,
        host=args.host,
        port=args.port,
        on_request=log,
    )
    try:
        await server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"error: port {args.port} on {args.host} is already in use; pick another with --port "
                "(0 picks a free one)",
                file=err,
            )
        else:
            print(f"error: cannot listen on {args.host} port {args.port}: {exc.strerror or exc}", file=err)
        return EXIT_CONFIG
    try:
        # Pre-created tasks take from half to one and a half times as long as a created one.
        span = args.step_seconds * max(1, len(server.timeline) - 1)
        ids = server.add_tasks(
            args.tasks, duration=(span / 2, span * 1.5), failure_rate=args.failure_rate, seed=args.seed
        )
        accepts = "only the key given with --api-key" if key else "any key"
        print(
            f"Fake Sora API on {server.url}, accepting {accepts} (Ctrl-C to stop). Point a client at it:",
            file=out,
        )
        print(
            f"  export COMETAPI_BASE_URL={server.url} COMETAPI_KEY={shlex.quote(key or 'any-key')}", file=out
        )
        if ids:
            failing = sum(server.tasks[task_id].timeline[-1][0] == "FAILURE" for task_id in ids)
            print(
                f"{len(ids)} tasks created, {failing} of them to fail, all done within {span * 1.5:g} s:",
                file=out,
            )
            print(f"  sora-async wait {' '.join(ids)}", file=out)
        out.flush()
        await asyncio.Event().wait()  # until cancelled by Ctrl-C
    finally:
        await server.close()
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, IO[str], IO[str]], Any]] = {
    "generate": cmd_generate,
    "status": cmd_status,
    "wait": cmd_wait,
    "download": cmd_download,
    "fake-server": cmd_fake_server,
}


# --- entry points ------------------------------------------------------------


async def run(
    argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Parse `argv` and run the command in the running event loop; return the exit code."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(option(args, "debug", False))
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=err)
    with retry_log(err, show=err.isatty() and not debug) as retries:
        try:
            code: int = await COMMANDS[args.command](args, out, err)
        except (SoraError, ConfigError, ValueError, OSError) as exc:
            if debug:
                traceback.print_exc(file=err)
            print(f"error: {exc}", file=err)
            hint = hint_for(exc, args, retries)
            if hint is not None:
                print(f"hint: {hint}", file=err)
            return exit_code_for(exc)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run a command, map Ctrl-C to exit code 130."""
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
