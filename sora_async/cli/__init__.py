"""The `sora-async` command: generate, follow, inspect and download videos from a terminal.

Commands: `generate`, `status`, `wait`, `download`, `jobs` (the task
journal as a table: `--pending`, `--failed`, `--since 2h|1d|2025-01-14`,
`--json`), `jobs forget ID...`, `resume` (wait for every unfinished task of
the journal, then save the videos not saved yet into `-o DIR`), and
`fake-server`.

The task journal. `generate`, `status`, `wait`, `download` and `resume`
record every create (before it is sent), status change and saved file in a
SQLite file: `--journal PATH`, else the environment variable
`SORA_ASYNC_JOURNAL`, else `journal.sqlite3` in the user's state folder
(`platformdirs.user_state_path("sora-async")`, such as
`~/.local/state/sora-async/` on Linux). `--no-journal` records nothing;
`--fake` never records (its tasks end with the command). `jobs` and `jobs
forget` only read the journal and need no key. At its start, `generate` or
`wait` says on stderr how many tasks earlier runs left unfinished and how
many creates are in doubt (sent, never answered: a task may exist and be
billed), with the commands that deal with them; with --json that is one
`{"event": "pending", "tasks": N, "in_doubt": M, "message": ...}` line.

Exit codes, for scripts to branch on:

    ====  =============================================================
    code  meaning
    ====  =============================================================
    0     success
    1     a task failed (FAILURE), or another error: a file that could
          not be written or is already there (without --force), a task
          with no video yet
    2     usage: a bad option or value (argparse's own code, a bad
          --since too), --journal with --no-journal, a journal command
          with --no-journal, or a value the API refused as invalid
          (HTTP 400)
    3     timeout, in any phase: create, wait, download
    4     authentication or configuration: no key, a wrong key (401),
          no permission or quota (403), an unusable --base-url (one
          that answers 404 or a redirect), a model no channel serves, a
          journal that cannot be opened or whose folder cannot be made
    5     not found: the gateway knows no such task; `jobs forget` was
          given an id the journal does not have
    6     connection or server error after the retries: refused, reset,
          TLS, 5xx, 429, an answer that is not the API's JSON
    130   interrupted (Ctrl-C)
    141   standard output was closed early (a pipe into `head`), quietly
    ====  =============================================================

`status`, `wait` and `resume` report every task and then exit with the most
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
