"""SDK CPU per completed generate (create, six polls, done), split into transport, decode and policy.

The fake server runs in its own process and advances each task one state
per poll, so every generate is one create and six polls. cProfile runs
around the client; its per-function times are grouped by where the code
lives. The full profile is written next to RESULTS.md.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pathlib
import pstats
import time
from collections.abc import Callable

from sora_async import PollPolicy, SoraClient

from ._harness import pin_to, server_process

PROFILE_PATH = pathlib.Path(__file__).parent / "profile_generate.txt"

# (label, test on a profile key (file, line, function)), first match wins.
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "decode (msgspec, _protocol, _models)",
        lambda f, n: "msgspec" in n or f.endswith(("_protocol.py", "_models.py")),
    ),
    (
        "budget and policy (_budget, _policy, _cadence)",
        lambda f, n: f.endswith(("_budget.py", "_policy.py", "_cadence.py")),
    ),
    (
        "SDK glue (_client, _transport, _engine, _gate)",
        lambda f, n: f.endswith(("_client.py", "_transport.py", "_engine.py", "_gate.py")),
    ),
    ("transport (aiohttp, asyncio, sockets)", lambda f, n: True),
]


async def generate_many(url: str, count: int, concurrency: int) -> None:
    poll = PollPolicy(initial_interval=0.001, max_interval=0.001, jitter=0.0)
    async with SoraClient("bench-key", base_url=url, poll=poll) as client:
        queue = iter(range(count))

        async def worker() -> None:
            for n in queue:
                await client.generate(f"bench video {n}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main(count: int = 600, concurrency: int = 16) -> list[str]:
    """Profile `count` generate calls; print and return the breakdown table."""
    pin_to(0)
    with server_process(cpu=1, advance="poll") as url:
        asyncio.run(generate_many(url, 50, concurrency))  # warm up
        cpu = time.process_time()
        asyncio.run(generate_many(url, count, concurrency))
        cpu = time.process_time() - cpu
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(generate_many(url, count, concurrency))
        profiler.disable()
    stats = pstats.Stats(profiler)
    totals = dict.fromkeys((label for label, _ in CATEGORIES), 0.0)
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for label, matches in CATEGORIES:
            if matches(filename, name):
                totals[label] += tottime
                break
    profiled = sum(totals.values())
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(40)
    PROFILE_PATH.write_text(buffer.getvalue())
    lines = [
        f"### Whole loop: {count} generate calls (1 create + 6 polls each), concurrency {concurrency}",
        "",
        f"Client CPU per completed generate: {cpu / count * 1e6:,.0f} µs ({cpu / count / 7 * 1e6:,.0f} µs "
        f"per request). The split below comes from a second, profiled run, whose overhead inflates "
        f"every share alike ({profiled / count * 1e6:,.0f} µs per generate under the profiler).",
        "",
        "| where | share of client CPU | µs per generate (profiled) |",
        "| --- | --- | --- |",
        *(
            f"| {label} | {value / profiled:.0%} | {value / count * 1e6:,.0f} |"
            for label, value in totals.items()
        ),
        "",
        f"Full profile: `benchmarks/{PROFILE_PATH.name}`.",
    ]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
