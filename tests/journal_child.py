"""A process that works on a task journal, for the crash and two-process tests.

Run as `python tests/journal_child.py MODE URL JOURNAL ...`; it prints "ready" once
its client and journal are open, waits for a line on stdin, does its work and
prints one JSON document as its last line:

- `batch URL JOURNAL FOLDER COUNT CONCURRENCY`: `generate` COUNT prompts
  ("prompt 00", ...), CONCURRENCY at a time, and `download` each finished one
  into FOLDER (outside those slots, so downloads overlap the next creates).
  Prints {"saved": n, "failed": n}. The crash test kills it.
- `download URL JOURNAL FOLDER`: `download_pending(FOLDER)`. Prints
  {task id: the path saved, or "error: ..."}.
- `generate URL JOURNAL PREFIX COUNT`: `generate` COUNT prompts ("PREFIX 00",
  ...) at once on a journal that commits snapshots every 10 ms, so that two
  such processes write together all the time. Prints {prompt: task id}.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

from sora_async import PollPolicy, RetryPolicy, SoraClient, SQLiteJournal, TaskFailedError

KEY = "sk-journal-child-5e0d"
FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
QUICK = RetryPolicy(initial_delay=0.01, max_delay=0.02)


def prompt(prefix: str, n: int) -> str:
    """The prompt of intent `n`: unique, so the server's log tells intents apart."""
    return f"{prefix} {n:02d}"


def say(line: str) -> None:
    print(line, flush=True)


async def ready() -> None:
    """Say "ready", then wait for the test's go-ahead (a line on stdin)."""
    say("ready")
    await asyncio.to_thread(sys.stdin.readline)


async def batch(url: str, journal: str, folder: str, count: int, concurrency: int) -> dict[str, int]:
    async with SoraClient(KEY, base_url=url, journal=journal, poll=FAST_POLL, retry=QUICK) as client:
        await client.pending()  # opens the journal file
        await ready()
        slots = asyncio.Semaphore(concurrency)

        async def one(n: int) -> str:
            async with slots:  # CONCURRENCY tasks created and waited for at a time
                try:
                    task = await client.generate(prompt("prompt", n), timeout=60)
                except TaskFailedError:
                    return "failed"
            await client.download(task, folder, timeout=60)
            return "saved"

        ends = await asyncio.gather(*(one(n) for n in range(count)))
    return {"saved": ends.count("saved"), "failed": ends.count("failed")}


async def download(url: str, journal: str, folder: str) -> dict[str, str]:
    async with SoraClient(KEY, base_url=url, journal=journal, poll=FAST_POLL, retry=QUICK) as client:
        await client.pending()
        await ready()
        saved = await client.download_pending(folder, concurrency=4, timeout=60)
    return {
        task_id: str(what) if isinstance(what, pathlib.Path) else f"error: {what}"
        for task_id, what in saved.items()
    }


async def generate(url: str, journal: str, prefix: str, count: int) -> dict[str, str]:
    records = SQLiteJournal(journal, flush_interval=0.01)
    try:
        async with SoraClient(KEY, base_url=url, journal=records, poll=FAST_POLL, retry=QUICK) as client:
            await client.pending()
            await ready()
            tasks = await asyncio.gather(
                *(client.generate(prompt(prefix, n), timeout=60) for n in range(count))
            )
    finally:
        await records.aclose()
    return {prompt(prefix, n): task.task_id for n, task in enumerate(tasks)}


def main(argv: list[str]) -> None:
    mode, url, journal, *rest = argv
    result: object
    if mode == "batch":
        folder, count, concurrency = rest
        result = asyncio.run(batch(url, journal, folder, int(count), int(concurrency)))
    elif mode == "download":
        (folder,) = rest
        result = asyncio.run(download(url, journal, folder))
    elif mode == "generate":
        prefix, count = rest
        result = asyncio.run(generate(url, journal, prefix, int(count)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    say(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
