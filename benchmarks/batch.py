"""Batch waiting at scale: throughput under a rate limit, memory per id, a 429 storm.

Each figure is measured against a FakeSoraServer in its own process. The
memory figures come from fresh subprocesses so that nothing else in this
run skews their RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from typing import Any

from sora_async import PollPolicy, RetryPolicy, SoraClient, Task, TaskFailedError

from ._harness import admin, median, pin_to, rss_bytes, server_process, sleeping_task_baseline

SCALE = 10.0
"""The fake server's clock runs this much faster than real time."""

# The default policy (2 s growing to the 15 s sweep), compressed like the clock.
SCALED_POLL = PollPolicy(initial_interval=2.0 / SCALE, max_interval=15.0 / SCALE)


async def ten_thousand(url: str, count: int) -> dict[str, Any]:
    """`count` tasks lasting 5-30 s (server time), waited for with rate_limit=500."""
    ids = admin(url, "/_fake/tasks", {"count": count, "duration": [5, 30], "failure_rate": 0.1, "seed": 7})[
        "task_ids"
    ]
    outcomes: dict[str, int] = {}
    kinds = {"success": 0, "failure": 0, "other": 0}
    async with SoraClient("bench-key", base_url=url, poll=SCALED_POLL) as client:
        started = time.perf_counter()
        async for task_id, outcome in client.as_completed(ids, concurrency=32, rate_limit=500.0, timeout=600):
            outcomes[task_id] = outcomes.get(task_id, 0) + 1
            if isinstance(outcome, Task):
                kinds["success"] += 1
            elif isinstance(outcome, TaskFailedError):
                kinds["failure"] += 1
            else:
                kinds["other"] += 1
        wall = time.perf_counter() - started
    stats = admin(url, "/_fake/stats")
    return {
        "wall_s": wall,
        "requests_per_task": stats["requests"] / count,
        "max_requests_in_1s": stats["max_requests_in_1s"],
        "throttled": stats["throttled"],
        "outcomes": sum(outcomes.values()),
        "each_id_once": len(outcomes) == count and set(outcomes.values()) == {1},
        **kinds,
    }


async def storm(url: str, seconds: float) -> dict[str, Any]:
    """The server allows 50 req/s; the batch asks for 500 and must settle under it."""
    ids = admin(url, "/_fake/tasks", {"count": 400, "never_finish": True})["task_ids"]
    poll = PollPolicy(initial_interval=0.05, max_interval=0.05)
    retry = RetryPolicy(initial_delay=0.05, max_delay=1.0)
    async with SoraClient("bench-key", base_url=url, poll=poll, retry=retry) as client:
        await client.wait_many(ids, concurrency=16, rate_limit=500.0, timeout=seconds)
    stats = admin(url, "/_fake/stats")
    return {
        "per_second": stats["requests_per_second"],
        "throttled_per_second": stats["throttled_per_second"],
        "throttled_total": stats["throttled"],
        "requests": stats["requests"],
    }


def memory_child(mode: str, count: int, url: str) -> None:
    """Run in a fresh process: print RSS growth per tracked id as JSON."""

    async def batch() -> int:
        ids = admin(url, "/_fake/tasks", {"count": count, "never_finish": True})["task_ids"]
        async with SoraClient("bench-key", base_url=url) as client:
            await client.get_task(ids[0])  # open the session before measuring
            gc.collect()
            before = rss_bytes()
            outcomes = client.as_completed(ids, concurrency=32)
            consumer = asyncio.create_task(anext(outcomes))
            await asyncio.sleep(5.0)  # let the scheduler poll a few thousand of them
            gc.collect()
            grown = rss_bytes() - before
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await outcomes.aclose()
        return grown

    if mode == "baseline":
        per_id = asyncio.run(sleeping_task_baseline(count))
    else:
        per_id = asyncio.run(batch()) / count
    print(json.dumps({"bytes_per_id": per_id}))


def run_memory(count: int, rounds: int) -> dict[str, float]:
    per_id: dict[str, list[float]] = {"baseline": [], "batch": []}
    with server_process(cpu=1) as url:
        for _ in range(rounds):
            for mode in per_id:
                output = subprocess.run(
                    [sys.executable, "-m", "benchmarks.batch", "--memory-child", mode, str(count), url],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                per_id[mode].append(json.loads(output)["bytes_per_id"])
    return {mode: median(values) for mode, values in per_id.items()}


def main(
    count: int = 10_000, memory_ids: int = 100_000, storm_seconds: float = 20.0, rounds: int = 3
) -> list[str]:
    """Run the three batch benchmarks; print and return their markdown lines."""
    pin_to(0)
    lines: list[str] = []
    with server_process(scale=SCALE, cpu=1) as url:
        result = asyncio.run(ten_thousand(url, count))
    lines += [
        f"### {count:,} ids, 5-30 s tasks, server clock x{SCALE:g}, "
        "as_completed(concurrency=32, rate_limit=500)",
        "",
        "| wall | requests/task | max requests in any 1 s at the server | 429s | outcomes |",
        "| --- | --- | --- | --- | --- |",
        f"| {result['wall_s']:.1f} s | {result['requests_per_task']:.2f} | {result['max_requests_in_1s']} "
        f"(budget 500 + burst 50) | {result['throttled']} | {result['outcomes']:,}, each id once: "
        f"{result['each_id_once']} ({result['success']:,} success, {result['failure']:,} failure, "
        f"{result['other']} other) |",
        "",
    ]
    memory = run_memory(memory_ids, rounds)
    lines += [
        f"### Memory: {memory_ids:,} tracked ids whose tasks never finish "
        f"(median of {rounds} fresh processes)",
        "",
        "| bare asyncio.sleep task per id | as_completed | ratio |",
        "| --- | --- | --- |",
        f"| {memory['baseline']:,.0f} B | {memory['batch']:,.0f} B "
        f"| {memory['batch'] / memory['baseline']:.2f} |",
        "",
        f"- {memory['batch']:,.0f} B per tracked id (goal <= 1 KB)",
        "",
    ]
    with server_process(rate_limit=50, cpu=1) as url:
        storm_result = asyncio.run(storm(url, storm_seconds))
    sent = storm_result["per_second"]
    refused = storm_result["throttled_per_second"]
    accepted = [s - r for s, r in zip(sent, refused, strict=True)]
    first_ok = next(
        (i for i, r in enumerate(refused) if all(x == 0 for x in refused[i : i + 3])), len(refused)
    )
    late_sent, late_refused = sum(sent[5:-1]), sum(refused[5:-1])
    steady = accepted[5:-1] or accepted
    mean = sum(steady) / len(steady)
    lines += [
        f"### 429 storm: the server allows 50 req/s, the batch asks for 500, {storm_seconds:g} s",
        "",
        f"- accepted per second: {accepted}",
        f"- 429s per second: {refused}",
        f"- 429s before settling: {sum(refused[:first_ok])} (quiet from second {first_ok} on)",
        f"- steady accepted rate after 5 s: median {median(steady):.1f}, mean {mean:.1f} req/s "
        f"({mean / 50:.0%} of the limit; goal within 10%)",
        f"- 429s after 5 s: {late_refused} of {late_sent} requests "
        f"({late_refused / max(1, late_sent):.2%}; goal < 2%)",
    ]
    print("\n".join(lines))
    return lines


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-child", nargs=3, metavar=("MODE", "COUNT", "URL"))
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--memory-ids", type=int, default=100_000)
    parser.add_argument("--storm-seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.memory_child:
        mode, count, url = args.memory_child
        memory_child(mode, int(count), url)
    else:
        main(args.count, args.memory_ids, args.storm_seconds)


if __name__ == "__main__":
    cli()
