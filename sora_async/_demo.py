"""`make demo`: generate one video and show its progress.

Runs against the real API when COMETAPI_KEY is set, otherwise against an
embedded `FakeSoraServer` on loopback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from . import PollPolicy, SoraClient, SoraError, Task
from .testing import FakeSoraServer

PROMPT = "a paper boat drifting across a rainy city street, golden hour"
_BAR_WIDTH = 24


def render(task: Task, elapsed: float) -> str:
    """One progress line: elapsed time, status, percent and a bar."""
    percent = task.percent
    filled = round(_BAR_WIDTH * (percent or 0.0) / 100)
    bar = "#" * filled + "." * (_BAR_WIDTH - filled)
    shown = f"{percent:5.1f}%" if percent is not None else "   ?  "
    return f"[{elapsed:6.1f}s] {task.raw_status:<12} {shown} [{bar}]"


async def run(client: SoraClient, poll: PollPolicy | None) -> Task:
    """Generate the demo video, printing a line per progress change."""
    started = time.monotonic()

    def show(task: Task) -> None:
        print(render(task, time.monotonic() - started), flush=True)

    task = await client.generate(PROMPT, poll=poll, on_progress=show, timeout=1800)
    print(f"task {task.task_id} finished in {time.monotonic() - started:.1f} s")
    print(f"video: {task.video_url}")
    return task


async def main() -> int:
    """Run the demo; return the process exit code."""
    try:
        if os.environ.get("COMETAPI_KEY"):
            print("Using the real API (COMETAPI_KEY is set).")
            async with SoraClient() as client:
                await run(client, None)
        else:
            print("COMETAPI_KEY is not set: running against the embedded fake server.")
            async with (
                FakeSoraServer(advance="clock", step_seconds=0.4) as server,
                SoraClient("demo-key", base_url=server.url) as client,
            ):
                await run(client, PollPolicy(initial_interval=0.1, max_interval=0.2))
    except SoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
