"""The command line's words: its commands, options, defaults and exit codes."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import re
import time
from typing import Any

from sora_async import __version__
from sora_async._models import VIDEO_VARIANTS
from sora_async._protocol import CREATE_DEFAULTS, DEFAULT_BASE_URL

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_CONFIG = 4
EXIT_NOT_FOUND = 5
EXIT_CONNECTION = 6
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
"""Standard output was closed early (a pipe into `head`), as for a command ended by SIGPIPE."""

EXIT_PRECEDENCE = (EXIT_CONFIG, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONNECTION, EXIT_FAILED, EXIT_TIMEOUT)
"""When tasks of one command end differently, the first of these codes present wins."""

DEFAULT_REQUEST_TIMEOUT = 20.0
"""Seconds one HTTP request may take in the CLI (the SDK's default is 30)."""

DEFAULT_RETRIES = 2
"""Resends of a failed single request in the CLI (the SDK's default is 4)."""

FAKE_KEY = "fake-key"

JOURNAL_ENV = "SORA_ASYNC_JOURNAL"
"""The environment variable naming the journal's file, between --journal and the default."""

APP = "sora-async"
JOURNAL_FILE = "journal.sqlite3"


def default_journal_path() -> pathlib.Path | None:
    """`journal.sqlite3` in the user's state folder, as platformdirs names it; None if
    platformdirs (a dependency of sora-async) cannot be imported."""
    try:
        import platformdirs
    except ImportError:
        return None
    return platformdirs.user_state_path(APP) / JOURNAL_FILE


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
        "--openai",
        action="store_true",
        default=argparse.SUPPRESS,
        help="use the OpenAI-format API (/v1/videos: sora-2 and the other video models); generate "
        "uses it by itself for --seconds, --size, --input-reference or a --model other than "
        f"{CREATE_DEFAULTS['model']} (default: the reverse format, /sora/v1/videos)",
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
    common.add_argument(
        "--journal",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"the task journal, a SQLite file that records every create, status change and download "
        f"(default: ${JOURNAL_ENV}, else {default_journal_path() or 'the state folder platformdirs finds'})",
    )
    common.add_argument(
        "--no-journal",
        action="store_true",
        default=argparse.SUPPRESS,
        help="record nothing in the task journal, and read nothing from it",
    )

    parser = argparse.ArgumentParser(
        prog="sora-async",
        description="Generate and fetch videos with CometAPI's Sora task API.",
        parents=[common],
        epilog="Every command that talks to the API records its tasks in a journal (a SQLite file: "
        f"--journal PATH, else ${JOURNAL_ENV}, else journal.sqlite3 in the user's state folder; "
        "--no-journal records nothing; --fake never records): `jobs` lists them, `resume` waits for "
        "and downloads the unfinished ones. "
        "Exit codes: 0 ok, 1 task failed, 2 usage, 3 timeout, 4 auth or config (a journal that "
        "cannot be opened too), 5 not found, 6 connection or server error, 130 interrupted, "
        "141 stdout closed.",
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
        type=int,
        choices=(150, 300),
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
    generate.add_argument(
        "--model",
        help=f"the model; sora-2, sora-2-pro and the gateway's other video models use the OpenAI "
        f"format (default: {CREATE_DEFAULTS['model']}, or sora-2 with the OpenAI format)",
    )
    generate.add_argument(
        "--seconds",
        metavar="N",
        help="OpenAI format: the duration, such as 4, 8 or 12 (default: the model's)",
    )
    generate.add_argument(
        "--size", metavar="WxH", help="OpenAI format: such as 1280x720 (default: the model's, 720x1280)"
    )
    generate.add_argument(
        "--input-reference",
        metavar="IMAGE",
        help="OpenAI format: an image file to start from, sent as multipart (default: none)",
    )
    generate.add_argument("--style", help=f"the visual style (default: {CREATE_DEFAULTS['style']})")
    generate.add_argument(
        "-o", "--output", help="save the video to this file or folder, - for stdout (default: do not save)"
    )
    add_force(generate)
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
    add_force(download)
    download.add_argument(
        "--variant",
        choices=(*VIDEO_VARIANTS, "video"),
        help="which rendition: source, md, ld, thumbnail or spritesheet; with --openai video, "
        "thumbnail or spritesheet (default: source, or video)",
    )
    download.add_argument(
        "--generation",
        type=count,
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

    add_journal_commands(commands, common)

    fake = commands.add_parser(
        "fake-server",
        help="run the fake API server in the foreground",
        description="Run the fake API server (sora_async.testing.FakeSoraServer) until Ctrl-C, "
        "logging each request on stderr. The client options (--base-url, --fake, --retries...) "
        "do not apply to it.",
    )
    fake.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help="accept only this key (default: any key; $COMETAPI_KEY is not read)",
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
        "--tasks",
        type=count,
        default=0,
        metavar="N",
        help="create N tasks at start and print their ids (default: %(default)s)",
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


def add_journal_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`jobs`, `jobs forget` and `resume`: the commands that read the task journal."""
    jobs = commands.add_parser(
        "jobs",
        parents=[common],
        help="list the tasks of the journal (no key needed)",
        description="List the tasks of the journal, oldest first: id, status, percent, age and prompt; "
        "then the creates in doubt (sent, never answered: a task may exist and be billed), by "
        "their reference. Reads the journal only: no key, no request.",
    )
    jobs.add_argument("--pending", action="store_true", help="only unfinished tasks, and creates in doubt")
    jobs.add_argument("--failed", action="store_true", help="only tasks that ended in FAILURE")
    jobs.add_argument(
        "--since",
        type=since_time,
        metavar="WHEN",
        help="only what was created since WHEN: a duration back from now (90s, 30m, 2h, 1d, 1w, "
        "1h30m) or an ISO date or time (2025-01-14, 2025-01-14T15:30, local time unless it has an "
        "offset)",
    )
    jobs.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", title="subcommand", metavar="forget")
    forget = jobs_commands.add_parser(
        "forget",
        parents=[common],
        help="delete tasks and creates in doubt from the journal",
        description="Delete tasks (by task id) and creates (by task id or reference) from the journal: "
        "nothing upstream changes. Exits 5 when an id is not in the journal.",
    )
    forget.add_argument("ids", nargs="+", metavar="ID", type=str.strip, help="task ids or create references")
    forget.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document on stdout"
    )

    resume = commands.add_parser(
        "resume",
        parents=[common],
        help="wait for and download every unfinished task of the journal",
        description="Wait for every unfinished task of the journal (left by Ctrl-C, a crash or a "
        "timeout), then save each finished task's video that has no saved file yet into -o DIR "
        "(named as download names them in a folder; a file already there is never replaced), and "
        "print what is done, failed, still pending and in doubt.",
    )
    resume.add_argument(
        "-o", "--output", default=".", metavar="DIR", help="the folder to save into (default: this folder)"
    )
    resume.add_argument(
        "--concurrency",
        type=positive_int,
        default=5,
        metavar="N",
        help="the most polls in flight at once (default: %(default)s)",
    )
    resume.add_argument(
        "--rate",
        type=positive_number,
        metavar="PER_SECOND",
        help="the most polls per second (default: no limit but the gateway's)",
    )
    resume.add_argument(
        "--timeout",
        type=positive_number,
        default=1800.0,
        metavar="SECONDS",
        help="seconds to wait for the tasks, all together (default: %(default)g)",
    )
    resume.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, progress as JSON on stderr"
    )


DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([smhdw]))", re.IGNORECASE)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since_time(text: str) -> float:
    """An argparse type: `--since`, a duration back from now (2h, 30m, 1d, 1h30m) or an ISO date or
    time (naive means local time), as a Unix time."""
    words = text.strip()
    compact = words.replace(" ", "")
    if compact and DURATION.sub("", compact) == "":
        seconds = sum(float(n) * UNIT_SECONDS[unit.lower()] for n, unit in DURATION.findall(compact))
        return time.time() - seconds
    iso = words[:-1] + "+00:00" if words[-1:] in ("Z", "z") else words  # 3.10 reads no "Z"
    try:
        when = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30m, 2h or 1d, or an ISO date or time such as 2025-01-14 "
            f"or 2025-01-14T15:30, got {text!r}"
        ) from None
    return when.timestamp()  # a naive time is local time


def add_force(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-f",
        "--force",
        "--overwrite",
        action="store_true",
        dest="force",
        help="replace a file that already exists at --output (default: refuse it)",
    )


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


def journal_on(args: argparse.Namespace) -> bool:
    """Whether the command records to a journal: --no-journal is absent, and it talks to a real API."""
    return not option(args, "no_journal", False) and not option(args, "fake", False)


def request_timeout(args: argparse.Namespace) -> float:
    return float(option(args, "request_timeout", DEFAULT_REQUEST_TIMEOUT))


def base_url_of(args: argparse.Namespace) -> str:
    """The base URL the command uses, as given (flag, then environment, then CometAPI's)."""
    return str(option(args, "base_url") or os.environ.get("COMETAPI_BASE_URL") or DEFAULT_BASE_URL)


def cli_words(message: str) -> str:
    """An SDK message with its parameter names replaced by the CLI's flags."""
    for python, flag in (
        ("allow_insecure_http=True", "--allow-insecure-http"),
        ("pass overwrite=True", "use --force"),
        ("base_url", "--base-url"),
        ("api_key", "--api-key"),
        ("task_id must", "TASK_ID must"),
    ):
        message = message.replace(python, flag)
    return message
