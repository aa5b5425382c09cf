"""The commands that read the task journal: jobs, jobs forget, and resume."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import shlex
import time
from collections.abc import Sequence
from typing import IO, Any

import msgspec

from sora_async._client import SoraClient
from sora_async._errors import InvalidTaskIdError, SoraError
from sora_async._journal import CreateRecord, TaskRecord
from sora_async._journal_sqlite import SQLiteJournal
from sora_async._models import Task
from sora_async._outcomes import TaskFailedError

from ._args import EXIT_NOT_FOUND, EXIT_OK, option
from ._commands import open_client
from ._display import Display, error_json, error_words, make_display, task_json
from ._failures import about_the_server, exit_code_for, most_pressing
from ._state import journal_flags, journal_path, plural, resume_command

PROMPT_WIDTH = 40
"""Characters of a prompt the jobs table shows."""

IN_DOUBT = "IN DOUBT"

DOUBT_ADVICE = (
    "a create in doubt was sent and never answered: a task may exist and be billed, and the gateway "
    "cannot list tasks. Look for it in CometAPI's dashboard (task logs) by its prompt and time, "
    "then remove it from the journal: sora-async jobs forget REF{flags}"
)


# --- formatting -------------------------------------------------------------------


def age_text(seconds: float) -> str:
    """An age in its largest unit: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def local_time(unix: float) -> str:
    """A Unix time as local date and time with its UTC offset: 2025-01-14 15:03:22 +0100."""
    return datetime.datetime.fromtimestamp(unix).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def excerpt(prompt: str, width: int = PROMPT_WIDTH) -> str:
    """The start of a prompt on one line, cut with an ellipsis."""
    # Control characters (an escape sequence would restyle the terminal) become spaces.
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in prompt).split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def doubt_line(create: CreateRecord) -> str:
    """A create in doubt as one line: its reference, when it was sent, and its prompt."""
    prompt = json.dumps(create.prompt, ensure_ascii=False)
    return f"in doubt: create {create.ref}, sent {local_time(create.sent_at)}, prompt {prompt}"


def print_doubts(creates: Sequence[CreateRecord], args: argparse.Namespace, out: IO[str]) -> None:
    """Each create in doubt with its prompt and time, then what to do about them."""
    for create in creates:
        print(doubt_line(create), file=out)
    if creates:
        print(DOUBT_ADVICE.format(flags=journal_flags(args)), file=out)


def table(rows: Sequence[tuple[str, str, str, str, str]]) -> list[str]:
    """Rows of (id, status, percent, age, prompt) under a header, in aligned columns."""
    header = ("ID", "STATUS", "PERCENT", "AGE", "PROMPT")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    lines = []
    for row in (header, *rows):
        cells = (
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].rjust(widths[3]),
            row[4],
        )
        lines.append("  ".join(cells).rstrip())
    return lines


def task_row(task: TaskRecord, now: float) -> tuple[str, str, str, str, str]:
    percent = f"{task.percent:.0f}%" if task.percent is not None else "-"
    return task.task_id, task.status, percent, age_text(now - task.first_seen), excerpt(task.prompt)


def create_row(create: CreateRecord, now: float) -> tuple[str, str, str, str, str]:
    return create.ref, IN_DOUBT, "-", age_text(now - create.sent_at), excerpt(create.prompt)


def record_json(record: TaskRecord | CreateRecord) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(record)
    fields.pop("owner", None)  # which process sent a create: the journal's own business
    if isinstance(record, TaskRecord):
        fields["files"] = fields.pop("downloads")
    return fields


# --- jobs -----------------------------------------------------------------------


async def read_journal(
    path: pathlib.Path, *, pending: bool = False, failed: bool = False, since: float | None = None
) -> tuple[list[TaskRecord], list[CreateRecord]]:
    """The tasks that match, and the creates in doubt (unless only `failed` ones are asked for)
    sent at or after `since`; a journal that does not exist yet is empty (and is not created)."""
    if not await asyncio.to_thread(path.exists):
        return [], []
    journal = SQLiteJournal(path)
    try:
        tasks = await journal.tasks(pending=pending, failed=failed, since=since)
        creates = [] if failed and not pending else await journal.creates(in_doubt=True)
    finally:
        await journal.aclose()
    return tasks, [c for c in creates if since is None or c.sent_at >= since]


async def cmd_jobs(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if option(args, "jobs_command") == "forget":
        return await cmd_forget(args, out, err)
    path = journal_path(args, need="jobs", create=False)
    assert path is not None
    tasks, creates = await read_journal(path, pending=args.pending, failed=args.failed, since=args.since)
    if args.json:
        document = {
            "journal": str(path),
            "tasks": [record_json(task) for task in tasks],
            "in_doubt": [record_json(create) for create in creates],
        }
        print(json.dumps(document), file=out)
        return EXIT_OK
    if not tasks and not creates:
        filtered = args.pending or args.failed or args.since is not None
        print(f"{'no job matches' if filtered else 'no jobs'} in the journal {path}", file=out)
        return EXIT_OK
    now = time.time()
    rows = [task_row(task, now) for task in tasks] + [create_row(create, now) for create in creates]
    for line in table(rows):
        print(line, file=out)
    if creates:
        print(file=out)
        print_doubts(creates, args, out)
    return EXIT_OK


async def cmd_forget(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    path = journal_path(args, need="jobs forget", create=False)
    assert path is not None
    ids = list(dict.fromkeys(args.ids))
    found: list[str] = []
    if await asyncio.to_thread(path.exists):
        journal = SQLiteJournal(path)
        try:
            found = await journal.forget(ids)
        finally:
            await journal.aclose()
    missing = [ident for ident in ids if ident not in found]
    if option(args, "json", False):
        print(json.dumps({"journal": str(path), "forgotten": found, "not_found": missing}), file=out)
    else:
        for ident in found:
            print(f"forgot {ident}", file=out)
        for ident in missing:
            print(f"not in the journal {path}: {ident or repr(ident)}", file=err)
    return EXIT_NOT_FOUND if missing else EXIT_OK


# --- resume -----------------------------------------------------------------------


async def probe(client: SoraClient, tasks: Sequence[TaskRecord]) -> Task | None:
    """One query before waiting (as `wait` does), in the first task's format: a server that refuses,
    never answers or refuses the key stops the command at once instead of at the deadline."""
    for record in tasks:
        get = client.videos.retrieve if record.format == "openai" else client.get_task
        try:
            return await get(record.task_id)
        except InvalidTaskIdError:
            continue
        except SoraError as exc:
            if about_the_server(exc):
                raise
            return None
    return None


def check_folder(output: str) -> None:
    """`resume -o` names a folder (created if missing), never a file or stdout."""
    if output == "-":
        raise ValueError("resume saves files into a folder: -o - cannot be used")
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"-o {output} is a file; resume saves each video into a folder")


async def other_apis(client: SoraClient) -> dict[str, int]:
    """{API root: unfinished tasks} for the journal's tasks of other APIs than the client's."""
    assert client.journal is not None
    counts: dict[str, int] = {}
    for task in await client.journal.tasks(pending=True):
        if task.base_url not in ("", client.base_url):
            counts[task.base_url] = counts.get(task.base_url, 0) + 1
    return counts


def print_other_apis(elsewhere: dict[str, int], out: IO[str]) -> None:
    for base_url, count in sorted(elsewhere.items()):
        print(
            f"{plural(count, 'unfinished task')} of another API: sora-async resume --base-url "
            f"{shlex.quote(base_url)} picks {'it' if count == 1 else 'them'} up",
            file=out,
        )


async def cmd_resume(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    journal = journal_path(args, need="resume")
    check_folder(args.output)
    results: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    codes: list[int] = []
    finished = saved = failed = 0
    display: Display | None = None
    unsaved: list[str] = []  # SUCCESS tasks whose download failed

    def on_saved(task_id: str, what: pathlib.Path | SoraError) -> None:
        nonlocal saved
        if isinstance(what, SoraError):
            codes.append(exit_code_for(what))
            unsaved.append(task_id)
            files.append(error_json(task_id, what))
            if args.json:
                print(json.dumps({"event": "download", **error_json(task_id, what)}), file=err, flush=True)
            else:
                print(f"{task_id} not saved: {error_words(what)}", file=out, flush=True)
            return
        saved += 1
        files.append({"task_id": task_id, "file": str(what)})
        if args.json:
            print(json.dumps({"event": "download", "task_id": task_id, "file": str(what)}), file=err)
        else:
            print(f"saved: {what}", file=out, flush=True)

    try:
        async with open_client(args) as client:
            pending = await client.pending()
            if pending:
                display = make_display(args.json, out, err, kind="batch", total=len(pending))
                outcomes = client.resume(
                    concurrency=args.concurrency,
                    rate_limit=args.rate,
                    timeout=args.timeout,
                    on_progress=display.task,
                )
                async with outcomes:  # reads the journal: before the probe records a final snapshot
                    probed = await probe(client, outcomes.tasks)
                    if probed is not None:
                        display.task(probed)
                    total = len(outcomes.tasks)
                    async for task_id, outcome in outcomes:
                        if isinstance(outcome, SoraError) and about_the_server(outcome):
                            raise outcome  # every other task would fail alike
                        display.outcome(task_id, outcome, len(results) + 1, total)
                        if isinstance(outcome, Task):
                            finished += 1
                            results.append(task_json(outcome))
                            continue
                        results.append(error_json(task_id, outcome))
                        code = exit_code_for(outcome)
                        codes.append(code)
                        failed += isinstance(outcome, TaskFailedError)
                display.close()
            # Every finished task without a file: those `wait` followed too, as its hint promises.
            await client.download_pending(args.output, on_saved=on_saved, only_created=False)
            left = await client.pending()
            doubts = await client.in_doubt()
            elsewhere = await other_apis(client)
    except (asyncio.CancelledError, KeyboardInterrupt):
        if display is not None:
            display.close()
        again = resume_command(args, args.output)
        if args.json:  # stdout stays one document, Ctrl-C included
            stopped = {"tasks": results, "files": files, "error": "Interrupted", "resume": [again]}
            print(json.dumps(stopped), file=out)
        else:
            print(f"interrupted: what is not done stays in the journal; to go on: {again}", file=err)
        raise
    finally:
        if display is not None:
            display.close()
    # Said to be unknown by the gateway (kept: another key or base URL may know them).
    unknown = [task.task_id for task in left if task.status == "NOT_FOUND"]
    pending_ids = [task.task_id for task in left if task.status != "NOT_FOUND"] + unsaved
    if args.json:
        document: dict[str, Any] = {
            "journal": str(journal),
            "tasks": results,
            "files": files,
            "still_pending": pending_ids,
            "not_found": unknown,
            "in_doubt": [record_json(create) for create in doubts],
            "other_apis": elsewhere,
            "summary": {
                "finished": finished,
                "saved": saved,
                "failed": failed,
                "not_found": len(unknown),
                "still_pending": len(pending_ids),
                "in_doubt": len(doubts),
            },
        }
        print(json.dumps(document), file=out)
        return most_pressing(codes)
    if not results and not files and not pending_ids and not unknown and not doubts:
        print(
            f"nothing to resume: no unfinished task and no video left to save in the journal {journal}",
            file=out,
        )
        print_other_apis(elsewhere, out)
        return EXIT_OK
    print(
        f"{finished} finished, {saved} saved, {failed} failed, {len(unknown)} not found, "
        f"{len(pending_ids)} still pending, {len(doubts)} in doubt",
        file=out,
    )
    if pending_ids:
        print(
            f"still pending: {' '.join(pending_ids)}; run {resume_command(args, args.output)} again later",
            file=out,
        )
    if unknown:
        print(
            f"not found: {' '.join(unknown)}: the gateway does not know them (another key or base URL, "
            f"or expired); they stay in the journal until sora-async jobs forget ID{journal_flags(args)}",
            file=out,
        )
    print_doubts(doubts, args, out)
    print_other_apis(elsewhere, out)
    return most_pressing(codes)
