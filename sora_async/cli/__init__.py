"""The `sora-async` command: generate, follow, inspect and download videos from a terminal.

Exit codes, for scripts to branch on:

    ====  =============================================================
    code  meaning
    ====  =============================================================
    0     success
    1     a task failed (FAILURE), or another error: a file that could
          not be written or is already there (without --force), a task
          with no video yet
    2     usage: a bad option or value (argparse's own code), or a value
          the API refused as invalid (HTTP 400)
    3     timeout, in any phase: create, wait, download
    4     authentication or configuration: no key, a wrong key (401),
          no permission or quota (403), an unusable --base-url (one
          that answers 404 or a redirect), a model no channel serves
    5     not found: the gateway knows no such task
    6     connection or server error after the retries: refused, reset,
          TLS, 5xx, 429, an answer that is not the API's JSON
    130   interrupted (Ctrl-C)
    141   standard output was closed early (a pipe into `head`), quietly
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

from ._args import (
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRIES,
    EXIT_CONFIG,
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_PRECEDENCE,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    build_parser,
)
from ._display import JsonLinesDisplay, PlainDisplay, RichDisplay, Tenths, make_display
from ._failures import exit_code_for, hint_for, most_pressing
from ._main import main, run

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RETRIES",
    "EXIT_CONFIG",
    "EXIT_CONNECTION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_PRECEDENCE",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "JsonLinesDisplay",
    "PlainDisplay",
    "RichDisplay",
    "Tenths",
    "build_parser",
    "exit_code_for",
    "hint_for",
    "main",
    "make_display",
    "most_pressing",
    "run",
]
