"""Run a FakeSoraServer in its own process, so client and server do not share a core.

`python -m benchmarks._server --scale 10 --rate-limit 50` prints the base URL
on its first line of output and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from sora_async.testing import FakeSoraServer


async def serve(scale: float, rate_limit: float | None) -> None:
    def clock() -> float:
        return time.monotonic() * scale

    async with FakeSoraServer(advance="clock", clock=clock, rate_limit=rate_limit) as server:
        print(server.url, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="how much faster the server's clock runs")
    parser.add_argument("--rate-limit", type=float, default=None)
    args = parser.parse_args()
    asyncio.run(serve(args.scale, args.rate_limit))


if __name__ == "__main__":
    main()
