"""The entry points: `run` (in a running loop, for tests and embedding) and `main` (the console script)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import IO, Any

from sora_async._errors import SoraError

from ._args import EXIT_INTERRUPTED, EXIT_PIPE, EXIT_USAGE, build_parser, option
from ._commands import cmd_download, cmd_fake_server, cmd_generate, cmd_status, cmd_wait
from ._display import error_json
from ._failures import ConfigError, exit_code_for, hint_for, retry_log
from ._jobs import cmd_jobs, cmd_resume

COMMANDS: dict[str, Callable[[argparse.Namespace, IO[str], IO[str]], Any]] = {
    "generate": cmd_generate,
    "status": cmd_status,
    "wait": cmd_wait,
    "download": cmd_download,
    "jobs": cmd_jobs,
    "resume": cmd_resume,
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
        except BrokenPipeError:
            return EXIT_PIPE  # the reader of stdout left (a pipe into head): nothing to say
        except (SoraError, ConfigError, ValueError, OSError) as exc:
            if debug:
                traceback.print_exc(file=err)
            message = error_json(None, exc)["message"]  # in the CLI's words
            hint = hint_for(exc, args, retries)
            if option(args, "json", False):
                # stderr keeps to JSON lines; stdout stays one document, an error one too (generate
                # prints its own; with -o - the video is on stdout, so the document goes to stderr).
                print(json.dumps({"event": "error", "message": message, "hint": hint}), file=err)
                if args.command != "generate":
                    where = err if option(args, "output") == "-" else out
                    print(json.dumps(error_json(option(args, "task_id"), exc)), file=where)
                return exit_code_for(exc)
            print(f"error: {message}", file=err)
            if hint is not None:
                print(f"hint: {hint}", file=err)
            return exit_code_for(exc)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run a command, map Ctrl-C to 130 and a closed stdout to 141."""
    try:
        code = asyncio.run(run(argv))
        sys.stdout.flush()  # a pipe's buffer: a reader that left shows here, not at exit
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_PIPE
    if code == EXIT_PIPE:
        # Python would report the closed pipe again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code
