"""Run a FakeSoraServer in its own process, so client and server do not share a core.

`python -m benchmarks._server --scale 10 --rate-limit 50` prints the base URL
on its first line of output and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Literal

from sora_async.testing import FakeSoraServer


async def serve(scale: float, rate_limit: float | None, advance: str) -> None:
    def clock() -> float:
        return time.monotonic() * scale

    mode: Literal["poll", "clock"] = "poll" if advance == "poll" else "clock"
    async with FakeSoraServer(advance=mode, clock=clock, rate_limit=rate_limit) as server:
        print(server.url, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="how much faster the server's clock runs")
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--advance", choices=["clock", "poll"], default="clock")
    args = parser.parse_args()
    asyncio.run(serve(args.scale, args.rate_limit, args.advance))


if __name__ == "__main__":
    main()
