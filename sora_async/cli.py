"""The `sora-async` command: generate, follow, inspect and download videos from a terminal.

Exit codes: 0 success; 1 a task failed (or another API error); 2 usage
error; 3 timeout; 4 authentication or configuration error; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import pathlib
import shlex
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from typing import IO, Any, Protocol

from . import __version__
from ._client import SoraClient, created_task_id
from ._download_plan import Variant, check_destination
from ._errors import AuthenticationError, PermissionDeniedError, SoraError
from ._models import VIDEO_VARIANTS, Task
from ._outcomes import TaskFailedError, WaitTimeoutError
from ._policy import PollPolicy
from .testing import FakeSoraServer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_CONFIG = 4
EXIT_INTERRUPTED = 130

FAKE_KEY = "fake-key"


# --- arguments -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global options are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url", default=argparse.SUPPRESS, help="API root (default: $COMETAPI_BASE_URL)"
    )
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (default: $COMETAPI_KEY)")
    common.add_argument(
        "--fake", action="store_true", default=argparse.SUPPRESS, help="run against an embedded fake server"
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="log requests and show tracebacks"
    )

    parser = argparse.ArgumentParser(
        prog="sora-async",
        description="Generate and fetch videos with CometAPI's Sora task API.",
        parents=[common],
        epilog="Exit codes: 0 ok, 1 task failed, 2 usage, 3 timeout, 4 auth or config, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"sora-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", parents=[common], help="create a video and wait for it")
    generate.add_argument("prompt")
    generate.add_argument("--width", type=int)
    generate.add_argument("--height", type=int)
    generate.add_argument("--frames", type=int, dest="n_frames", help="150 (5 s) or 300 (10 s)")
    generate.add_argument("--variants", type=int, dest="n_variants")
    generate.add_argument("--model")
    generate.add_argument("--style")
    generate.add_argument("-o", "--output", help="save the video to this file or folder")
    generate.add_argument(
        "--timeout", type=seconds, default=1800.0, help="seconds for create and wait together"
    )
    generate.add_argument("--json", action="store_true", help="print only JSON on stdout")

    status = commands.add_parser("status", parents=[common], help="show tasks' current status")
    status.add_argument("task_ids", nargs="+", metavar="TASK_ID", type=str.strip)
    status.add_argument("--json", action="store_true")

    wait = commands.add_parser("wait", parents=[common], help="wait for many tasks at once")
    wait.add_argument("task_ids", nargs="+", metavar="TASK_ID", type=str.strip)
    wait.add_argument("--concurrency", type=int, default=5)
    wait.add_argument("--rate", type=float, help="requests per second")
    wait.add_argument("--timeout", type=seconds, default=1800.0, help="seconds for the whole batch")
    wait.add_argument("--json", action="store_true")

    download = commands.add_parser("download", parents=[common], help="save a finished task's video")
    download.add_argument("task_id", metavar="TASK_ID", type=str.strip)
    download.add_argument(
        "-o",
        "--output",
        default="./",
        help="file or folder (default: this folder); - writes the file to stdout, and all text to stderr",
    )
    download.add_argument("--variant", choices=VIDEO_VARIANTS, default="source")
    download.add_argument(
        "--generation", type=int, default=0, metavar="N", help="which of the task's videos, from 0"
    )
    download.add_argument("--json", action="store_true")

    fake = commands.add_parser(
        "fake-server", parents=[common], help="run the fake API server in the foreground"
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8787)
    fake.add_argument("--step-seconds", type=float, default=2.0, help="how long each task state lasts")
    return parser


def seconds(text: str) -> float:
    """An argparse type: seconds, a finite number > 0, as every `timeout=` of the SDK takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def option(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


# --- progress displays -----------------------------------------------------


class Display(Protocol):
    def task(self, task: Task) -> None: ...

    def bytes(self, done: int, total: int | None) -> None: ...

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """One line per change, for logs and pipes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self._last_reported = -1

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=self.stream, flush=True)

    def task(self, task: Task) -> None:
        self._line(describe(task))

    def bytes(self, done: int, total: int | None) -> None:
        # A line per tenth, not per chunk.
        tenth = done * 10 // total if total else -1
        if tenth != self._last_reported or (total is not None and done >= total):
            self._last_reported = tenth
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


class SilentDisplay:
    """No progress at all (for --json)."""

    def task(self, task: Task) -> None:
        pass

    def bytes(self, done: int, total: int | None) -> None:
        pass

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_display(json_output: bool, stream: IO[str]) -> Display:
    """Rich on a terminal when available, plain lines otherwise, nothing with --json."""
    if json_output:
        return SilentDisplay()
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
    if isinstance(error, TimeoutError):  # WaitTimeoutError, or an APITimeoutError at the deadline
        return EXIT_TIMEOUT
    if isinstance(error, (AuthenticationError, PermissionDeniedError, ConfigError)):
        return EXIT_CONFIG
    if isinstance(error, ValueError):  # a bad argument value, such as an empty task id
        return EXIT_USAGE
    return EXIT_FAILED


# --- commands --------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_client(args: argparse.Namespace) -> AsyncIterator[SoraClient]:
    """A client for the real API, or for an embedded fake server with --fake."""
    if option(args, "fake", False):
        # A compressed clock and a matching poll policy, so a demo takes seconds.
        async with FakeSoraServer(advance="clock", step_seconds=0.5) as server:
            key = option(args, "api_key") or FAKE_KEY
            poll = PollPolicy(initial_interval=0.25, max_interval=0.25)
            async with SoraClient(key, base_url=server.url, poll=poll) as client:
                yield client
        return
    try:
        client = SoraClient(option(args, "api_key"), base_url=option(args, "base_url"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    async with client:
        yield client


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
    display = make_display(args.json, text)
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
    code = EXIT_OK
    async with open_client(args) as client:
        for task_id in args.task_ids:
            try:
                task = await client.get_task(task_id)
            except (AuthenticationError, PermissionDeniedError):
                raise
            except SoraError as exc:
                code = EXIT_FAILED
                results.append(error_json(task_id, exc))
                if not args.json:
                    print(f"{task_id} {type(exc).__name__}: {exc}", file=out)
                continue
            results.append(task_json(task))
            if not args.json:
                reason = f" ({task.fail_reason})" if task.fail_reason else ""
                url = f" {task.video_url}" if task.status == "SUCCESS" and task.video_url else ""
                print(f"{task.task_id} {task.raw_status} {task.progress or '-'}{reason}{url}", file=out)
    if args.json:
        print(json.dumps({"tasks": results}), file=out)
    return code


async def cmd_wait(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    display = make_display(args.json, out)
    results: list[dict[str, Any]] = []
    failed = timed_out = False
    total = len(args.task_ids)
    try:
        async with open_client(args) as client:
            outcomes = client.as_completed(
                args.task_ids, concurrency=args.concurrency, rate_limit=args.rate, timeout=args.timeout
            )
            async with outcomes:
                async for task_id, outcome in outcomes:
                    if isinstance(outcome, (AuthenticationError, PermissionDeniedError)):
                        raise outcome
                    display.outcome(task_id, outcome, len(results) + 1, total)
                    if isinstance(outcome, Task):
                        results.append(task_json(outcome))
                    else:
                        results.append(error_json(task_id, outcome))
                        timed_out |= isinstance(outcome, WaitTimeoutError)
                        failed |= not isinstance(outcome, WaitTimeoutError)
    finally:
        display.close()
    if args.json:
        print(json.dumps({"tasks": results}), file=out)
    else:
        done = sum(1 for r in results if "error" not in r)
        print(f"{done} of {total} succeeded", file=out)
    return EXIT_FAILED if failed else EXIT_TIMEOUT if timed_out else EXIT_OK


async def write_video(
    client: SoraClient,
    task_or_id: Task | str,
    binary: IO[bytes],
    *,
    variant: Variant = "source",
    generation: int = 0,
    on_progress: Callable[[int, int | None], object] | None = None,
) -> int:
    """Stream a finished task's file into a binary stream, such as `sys.stdout.buffer`.

    Writes run in a worker thread, so a slow reader of a pipe never stalls
    the event loop. Returns the bytes written. Raises as `SoraClient.stream_video`
    does, and `OSError` from the stream (a closed pipe is `BrokenPipeError`).
    """
    async with client.stream_video(task_or_id, variant=variant, generation=generation) as video:
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
    display = make_display(args.json, report)
    received = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal received
        received = done
        display.bytes(done, total)

    choice = {"variant": args.variant, "generation": args.generation}
    try:
        async with open_client(args) as client:
            if binary is not None:
                await write_video(client, args.task_id, binary, **choice, on_progress=progress)
                where = "-"
            else:
                path = await client.download(args.task_id, args.output, **choice, on_progress=progress)
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
    server = FakeSoraServer(advance="clock", step_seconds=args.step_seconds, host=args.host, port=args.port)
    async with server:
        print(f"Fake Sora API on {server.url} (Ctrl-C to stop). Point a client at it:", file=out)
        print(f"  export COMETAPI_BASE_URL={server.url} COMETAPI_KEY=any-key", file=out, flush=True)
        await asyncio.Event().wait()  # until cancelled by Ctrl-C
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
    try:
        code: int = await COMMANDS[args.command](args, out, err)
    except (SoraError, ConfigError, ValueError, OSError) as exc:
        if debug:
            traceback.print_exc(file=err)
        print(f"error: {exc}", file=err)
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
