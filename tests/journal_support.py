"""What the crash and two-process journal tests share: child processes, a slow video host, file checks."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sora_async.testing import sample_file

CHILD = pathlib.Path(__file__).with_name("journal_child.py")
VIDEO = sample_file("mp4")
"""The bytes of every video the fake video host serves."""

TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.part$")
"""The name `download` gives a file while it arrives (sora_async/_download.py)."""

PROBE = re.compile(r"^\.sora-probe-[0-9a-f]{12}$")
"""The empty file `check_destination` creates and removes at once to learn that a folder is
writable (sora_async/_download_plan.py)."""


class Child:
    """A `journal_child.py` process: started, told to go, then read or killed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, mode: str, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            mode,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self) -> None:
        """Wait until the child has its client and journal open."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        if line != b"ready\n":
            _, err = await self.process.communicate()
            raise AssertionError(f"the child did not get ready: {line!r}\n{err.decode()}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no flush."""
        self.process.send_signal(signal.SIGKILL)

    async def result(self) -> Any:
        """The JSON document the child printed last; it must have exited 0."""
        out, err = await asyncio.wait_for(self.process.communicate(), timeout=60)
        assert self.process.returncode == 0, err.decode()
        return json.loads(out.decode().splitlines()[-1])

    async def killed_when(self, killed: asyncio.Event, timeout: float = 60) -> None:
        """Wait until `killed` is set (by whoever kills the child) and reap the child.

        Fails if the child ends on its own first: the kill point was never reached.
        """
        kill = asyncio.ensure_future(killed.wait())
        end = asyncio.ensure_future(self.process.wait())
        await asyncio.wait({kill, end}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        reached = kill.done()
        kill.cancel()
        end.cancel()
        if not reached:
            self.kill()
        _, err = await asyncio.wait_for(self.process.communicate(), timeout=30)
        assert reached, f"the kill point was never reached; the child said:\n{err.decode()}"
        assert self.process.returncode == -signal.SIGKILL, err.decode()


def task_of_video(path: str) -> str | None:
    """The task id of a request to the fake video host (`/_fake/cdn/{task}/{variant}`), else None."""
    parts = path.split("/")
    return parts[3] if len(parts) == 5 and path.startswith("/_fake/cdn/") else None


async def serve_video(
    request: web.Request,
    *,
    piece: int = 512,
    pause: float = 0.002,
    midway: Callable[[], Awaitable[None]] | None = None,
) -> web.StreamResponse:
    """The sample video in pieces of `piece` bytes, `pause` seconds apart, with its full
    Content-Length; `midway` is awaited once half of it has been sent."""
    response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
    response.content_length = len(VIDEO)
    await response.prepare(request)
    half = len(VIDEO) // 2
    for start in range(0, len(VIDEO), piece):
        await response.write(VIDEO[start : start + piece])
        if midway is not None and start + piece >= half:
            await midway()
            midway = None
        await asyncio.sleep(pause)
    await response.write_eof()
    return response


def drop(request: web.Request) -> None:
    """Close the connection without an answer (as `FakeSoraServer`'s reset fault does)."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def files(folder: pathlib.Path) -> tuple[dict[str, bytes], dict[str, int]]:
    """({final name: content}, {temporary name: size}) of the files in `folder`.

    Fails on a file that is neither a download's final name nor its temporary name.
    """
    final: dict[str, bytes] = {}
    temporary: dict[str, int] = {}
    for path in folder.iterdir():
        if PROBE.match(path.name) and path.stat().st_size == 0:
            continue  # a kill between creating and removing the destination check's empty probe
        if path.name.startswith("."):
            assert TEMPORARY.match(path.name), f"an unexpected hidden file: {path.name}"
            temporary[path.name] = path.stat().st_size
        else:
            final[path.name] = path.read_bytes()
    return final, temporary


def integrity(path: pathlib.Path) -> str:
    """SQLite's own check of the journal file: "ok" when it is sound."""
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def rows(path: pathlib.Path, sql: str) -> list[tuple[Any, ...]]:
    """What a plain connection (another process) reads from the journal file."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()
