"""The CLI's task journal: where it lives, and what it says about earlier runs.

The journal is `--journal PATH`, else `$SORA_ASYNC_JOURNAL`, else
`journal.sqlite3` in the user's state folder (`platformdirs.user_state_path`,
such as `~/.local/state/sora-async/` on Linux). `--no-journal` turns it
off, and `--fake` never uses one: its tasks end with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
from collections.abc import Collection, Sequence
from typing import IO

from sora_async._client import SoraClient
from sora_async._journal import CreateRecord, TaskRecord, process_alive
from sora_async._journal_sqlite import SENDING_LEASE

from ._args import JOURNAL_ENV, default_journal_path, journal_on, option
from ._display import ABOVE
from ._failures import ConfigError


class JournalOff(ValueError):
    """A command that reads the journal was run with --no-journal or --fake (a usage error)."""


def journal_path(
    args: argparse.Namespace, *, need: str | None = None, create: bool = True
) -> pathlib.Path | None:
    """The journal's file, or None with --no-journal or --fake; its folder is created with `create`.

    Args:
        need: The command, when it cannot run without a journal: then
            --no-journal and --fake are usage errors rather than None.
        create: Whether to create the journal's folder (a command that
            only reads the journal leaves a missing one missing).

    Raises:
        ValueError: --journal with --no-journal or --fake, or a command
            that needs the journal without one (exit 2).
        ConfigError: The journal's folder cannot be created (exit 4).
    """
    given = option(args, "journal")
    if given is not None and option(args, "no_journal", False):
        raise ValueError("--journal and --no-journal cannot be used together")
    if given is not None and option(args, "fake", False):
        raise ValueError(
            "--fake records nothing in a journal (its tasks end with the command): drop --journal"
        )
    if not journal_on(args):
        if need is not None:
            flag = "--no-journal" if option(args, "no_journal", False) else "--fake"
            raise JournalOff(f"{need} reads the task journal, which {flag} turns off")
        return None
    if given is not None and not given.strip():
        raise ValueError("--journal is empty: name a file, or use --no-journal")
    chosen = given or os.environ.get(JOURNAL_ENV, "").strip() or default_journal_path()
    if chosen is None:
        raise ConfigError(
            "the default journal lives in your state folder, which platformdirs finds, and it is not "
            f"installed: pip install platformdirs, or choose a file with --journal PATH "
            f"(or ${JOURNAL_ENV}), or record nothing with --no-journal"
        )
    path = pathlib.Path(chosen).expanduser()
    if not create:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the journal's folder {str(path.parent)!r}: {exc.strerror or exc}"
        ) from exc
    return path


def journal_flags(args: argparse.Namespace) -> str:
    """--journal as given on the command line, for a command printed to pick things up again."""
    given = option(args, "journal")
    return f" --journal {shlex.quote(given)}" if given else ""


def resume_command(args: argparse.Namespace, folder: str | None = None) -> str:
    """`sora-async resume`, with -o FOLDER and the flags that reach the same API and journal."""
    flags = []
    base_url = option(args, "base_url")
    if base_url:
        flags.append(f" --base-url {shlex.quote(base_url)}")
    if option(args, "allow_insecure_http", False):
        flags.append(" --allow-insecure-http")
    where = f" -o {shlex.quote(folder)}" if folder not in (None, "", ".", "./") else ""
    return f"sora-async resume{where}{''.join(flags)}{journal_flags(args)}"


def folder_of(output: str | None) -> str | None:
    """The folder `resume -o` should save into for a command's -o: itself, or a file's folder."""
    if output is None or output == "-":
        return None
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        return output
    return os.path.dirname(output) or None


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


async def earlier_runs(
    client: SoraClient, exclude: Collection[str] = ()
) -> tuple[list[TaskRecord], list[CreateRecord]]:
    """The journal's unfinished tasks of earlier runs (not those of a create whose process still
    runs, nor `exclude`), and its creates in doubt."""
    pending = await client.pending()
    doubts = await client.in_doubt()
    if not pending:
        return [], doubts
    owners = {c.ref: c.owner for c in await client.journal.creates()} if client.journal else {}

    def live(task: TaskRecord) -> bool:  # its create's process still runs: not an earlier run's
        owner = owners.get(task.ref) if task.ref else None
        # Another host's process cannot be asked: live while its task changed lately.
        return bool(owner) and process_alive(owner or "", since=task.updated_at, lease=SENDING_LEASE)

    earlier = [task for task in pending if task.task_id not in exclude and not live(task)]
    return earlier, doubts


def earlier_notice(args: argparse.Namespace, tasks: int, creates: int) -> str:
    """The line that says what earlier runs left, and the commands that deal with it."""
    jobs = f"sora-async jobs --pending{journal_flags(args)}"
    if not tasks:
        verb = "is" if creates == 1 else "are"
        return (
            f"{plural(creates, 'create')} from earlier runs {verb} in doubt (a task may exist and be "
            f"billed): {jobs} lists {'it' if creates == 1 else 'them'}"
        )
    verb = "is" if tasks == 1 else "are"
    text = f"{plural(tasks, 'task')} from earlier runs {verb} unfinished"
    if creates:
        text += f" and {plural(creates, 'create')} {'is' if creates == 1 else 'are'} in doubt"
    return f"{text}: {resume_command(args)} waits for and downloads them; {jobs} lists them"


async def announce_earlier(
    client: SoraClient, args: argparse.Namespace, err: IO[str], exclude: Sequence[str] = ()
) -> None:
    """Say on stderr (a JSON line with --json) what earlier runs left unfinished, if anything."""
    if client.journal is None:
        return
    tasks, creates = await earlier_runs(client, set(exclude))
    if not tasks and not creates:
        return
    text = earlier_notice(args, len(tasks), len(creates))
    if option(args, "json", False):
        event = {"event": "pending", "tasks": len(tasks), "in_doubt": len(creates), "message": text}
        print(json.dumps(event), file=err, flush=True)
        return
    above = ABOVE.get()
    if above is not None:  # a live display runs: above it, not through it
        above(text, None)
    else:
        print(text, file=err, flush=True)
