"""Memory per concurrent wait_until_done, against a bare asyncio.sleep task per waiter.

Each figure comes from a fresh process: RSS before and after starting
10,000 waiters on tasks that never finish, once every waiter has made its
first poll and sleeps (the poll interval is long, so no request is in
flight when RSS is read).
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys

import aiohttp

from sora_async import CadencePolicy, SoraClient

from ._harness import admin, median, rss_bytes, server_process, sleeping_task_baseline


async def waiters(count: int, url: str, step: int) -> float:
    """RSS growth per waiter; `step` waiters are started at a time, each step once they have polled."""
    ids = admin(url, "/_fake/tasks", {"count": count, "never_finish": True})["task_ids"]
    # The default kind of policy, a CadencePolicy that keeps a view per wait, with a long
    # interval, so that once every waiter has polled nothing is in flight and RSS shows
    # what a waiter keeps between polls.
    poll = CadencePolicy(initial_interval=60.0, max_interval=60.0)
    async with (
        SoraClient("bench-key", base_url=url, poll=poll, remember_cadence=False) as client,
        aiohttp.ClientSession() as stats,
    ):

        async def polled_at_least(requests: int) -> None:
            while True:
                async with stats.get(f"{url}/_fake/stats") as response:
                    if (await response.json())["requests"] >= requests:
                        return
                await asyncio.sleep(0.05)

        await client.get_task(ids[0])  # open the session and its pool before measuring
        gc.collect()
        before = rss_bytes()
        running: list[asyncio.Task[object]] = []
        for start in range(0, count, step):
            batch = ids[start : start + step]
            running += [asyncio.create_task(client.wait_until_done(t, timeout=None)) for t in batch]
            await polled_at_least(1 + start + len(batch))
        await asyncio.sleep(0.5)
        gc.collect()
        grown = rss_bytes() - before
        for waiter in running:
            waiter.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return grown / count


def child(mode: str, count: int, url: str) -> None:
    if mode == "baseline":
        per_waiter = asyncio.run(sleeping_task_baseline(count))
    else:
        per_waiter = asyncio.run(waiters(count, url, count if mode == "at-once" else 1000))
    print(json.dumps({"bytes": per_waiter}))


def main(count: int = 10_000, rounds: int = 3) -> list[str]:
    """Print the memory table and return it as markdown lines."""
    samples: dict[str, list[float]] = {"baseline": [], "at-once": [], "staggered": []}
    with server_process(cpu=1) as url:
        for _ in range(rounds):
            for mode in samples:
                command = [sys.executable, "-m", "benchmarks.waiters", mode, str(count), url]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                samples[mode].append(json.loads(output)["bytes"])
    base = median(samples["baseline"])
    at_once, staggered = median(samples["at-once"]), median(samples["staggered"])
    lines = [
        f"### Memory per waiter: {count:,} concurrent wait_until_done on never-finishing tasks "
        f"(RSS growth, median of {rounds} fresh processes)",
        "",
        "| bare asyncio.sleep task | wait_until_done, all started at once | started 1,000 at a time |",
        "| --- | --- | --- |",
        f"| {base:,.0f} B | {at_once:,.0f} B ({at_once / base:.2f}x) "
        f"| {staggered:,.0f} B ({staggered / base:.2f}x) |",
        "",
        f"- wait_until_done: {at_once / 1024:.2f} KB per waiter started all at once, "
        f"{staggered / 1024:.2f} KB started in steps (goal <= 5 KB)",
    ]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 4:
        child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    else:
        main()
