"""`make bench`: run every benchmark, print its tables, and write benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable
from importlib import metadata

from . import batch, decode, journal, poll_cpu, polling_sim, waiters, whole_loop

RESULTS = pathlib.Path(__file__).parent / "RESULTS.md"


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    # Benchmarks talk to loopback servers only: what a client learns of their cadence
    # is kept in a folder of its own, never in the user's state folder.
    os.environ.setdefault("SORA_ASYNC_STATE_DIR", tempfile.mkdtemp(prefix="sora-bench-state-"))
    started = time.monotonic()
    sections: list[tuple[str, Callable[[], list[str]]]] = [
        ("Decode", decode.main),
        ("CPU per poll", poll_cpu.main),
        ("Memory per waiter", waiters.main),
        ("Whole-loop overhead", whole_loop.main),
        ("Batch waiting", batch.main),
        ("Polling policies in simulation", polling_sim.main),
        ("Task journal", journal.main),
    ]
    body: list[str] = []
    for title, run in sections:
        print(f"\n## {title}\n", flush=True)
        body += [f"## {title}", "", *run(), ""]
    header = [
        "# Benchmark results",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {version('aiohttp')}, msgspec {version('msgspec')}, "
        f"openai {version('openai')}, pydantic {version('pydantic')}",
        f"- `make bench` took {time.monotonic() - started:.0f} s",
        "",
        "Ratios compare clients measured in the same run; the machine is shared, so absolute",
        "times move from run to run while the ratios hold better. See README.md here for method.",
        "",
    ]
    RESULTS.write_text("\n".join(header + body))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
