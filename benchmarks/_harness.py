"""Shared pieces of the benchmarks: a fake server in a subprocess, RSS, medians."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any


@contextlib.contextmanager
def server_process(
    *, scale: float = 1.0, rate_limit: float | None = None, cpu: int | None = None, advance: str = "clock"
) -> Iterator[str]:
    """Start a FakeSoraServer in a subprocess (pinned to `cpu` when taskset exists); yield its URL."""
    arguments = ["-m", "benchmarks._server", "--scale", str(scale), "--advance", advance]
    if rate_limit is not None:
        arguments += ["--rate-limit", str(rate_limit)]
    with python_process(arguments, cpu=cpu) as url:
        yield url


@contextlib.contextmanager
def python_process(arguments: list[str], *, cpu: int | None = None) -> Iterator[str]:
    """Run `python ARGUMENTS`, which prints its URL first and serves until stdin closes."""
    command = [sys.executable, *arguments]
    if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the fake server did not start: {url!r}")
        yield url
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def admin(url: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    """Call one of the fake server's /_fake routes (blocking; loopback only)."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def rss_bytes() -> int:
    """The resident set size of this process, from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def sleeping_task_baseline(count: int) -> float:
    """RSS growth per task for `count` bare asyncio.sleep tasks: the floor for anything that waits."""
    gc.collect()
    before = rss_bytes()
    sleepers = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(count)]
    await asyncio.sleep(0.5)
    gc.collect()
    grown = rss_bytes() - before
    for sleeper in sleepers:
        sleeper.cancel()
    await asyncio.gather(*sleepers, return_exceptions=True)
    return grown / count


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def pin_to(cpu: int) -> None:
    """Pin this process to one core when the machine has more than one."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
