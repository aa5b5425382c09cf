"""Client CPU per poll and throughput: raw aiohttp (the floor), get_task, and the openai SDK.

A minimal aiohttp.web stub runs in its own process on the second core and
serves the recorded 18 KB task body (and an OpenAI-shaped video object for
the openai SDK). This process, pinned to the first core, runs the clients
in small alternating batches, so that the drift of a shared machine falls on
all of them alike; its CPU time per request is what a poller pays. Each
ratio is the median over rounds of the ratio within one round.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from sora_async import SoraClient

from ._harness import median, pin_to, python_process

TASK_ID = "task_01jhjp54x0f759wceyasz6xrge"
Request = Callable[[], Awaitable[object]]
BATCH = 256
"""Requests per batch; the openai SDK, ten times slower, gets a quarter of that."""


async def drive(request: Request, total: int, concurrency: int) -> tuple[float, float]:
    """Send `total` requests from `concurrency` workers; return (CPU s, wall s)."""
    per_worker = max(1, total // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await request()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(url: str, rounds: int, concurrency: int, peer: bool) -> dict[str, dict[str, Any]]:
    """Per client: CPU µs per request in each round, and requests per second.

    With `peer`, get_task alternates with the openai SDK; otherwise with raw aiohttp.
    """
    session = aiohttp.ClientSession()
    headers = {"Authorization": "Bearer bench-key"}
    target = f"{url}/sora/v1/videos/{TASK_ID}"

    async def raw() -> bytes:
        async with session.get(target, headers=headers) as response:
            return await response.read()

    sdk = SoraClient("bench-key", base_url=url)
    clients: dict[str, tuple[Request, int]] = {"get_task": (lambda: sdk.get_task(TASK_ID), BATCH)}
    openai_client: Any = None
    if peer:
        from openai import AsyncOpenAI

        warnings.simplefilter("ignore", DeprecationWarning)  # OpenAI's own Sora API is retiring
        openai_client = AsyncOpenAI(api_key="bench-key", base_url=f"{url}/v1", max_retries=0)
        videos = openai_client.videos
        clients["openai videos.retrieve"] = (lambda: videos.retrieve("video_1"), BATCH // 4)
    else:
        clients["raw aiohttp"] = (raw, BATCH)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    try:
        for request, count in clients.values():  # warm up connections and caches
            await drive(request, count, concurrency)
        for round_number in range(rounds):
            names = list(clients) if round_number % 2 == 0 else list(reversed(clients))
            for name in names:
                request, count = clients[name]
                count = max(count, concurrency)
                cpu, wall = await drive(request, count, concurrency)
                done = (count // concurrency) * concurrency
                samples[name].append((cpu / done * 1e6, done / wall))
    finally:
        await session.close()
        await sdk.aclose()
        if openai_client is not None:
            await openai_client.close()
    return {
        name: {"cpu_us": [s[0] for s in runs], "rps": median([s[1] for s in runs])}
        for name, runs in samples.items()
    }


def run_pass(url: str, rounds: int, concurrency: int, peer: bool) -> dict[str, dict[str, Any]]:
    """One pass in a fresh process, so the openai SDK's imports cannot slow the floor pass."""
    command = ["-m", "benchmarks.poll_cpu", "--pass", url, str(rounds), str(concurrency), str(int(peer))]
    output = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True).stdout
    result: dict[str, dict[str, Any]] = json.loads(output)
    return result


def ratio(results: dict[str, dict[str, Any]], name: str, base: str) -> float:
    """The median over rounds of `name`'s CPU per request over `base`'s in the same round."""
    pairs = zip(results[name]["cpu_us"], results[base]["cpu_us"], strict=True)
    return median([ours / theirs for ours, theirs in pairs])


def main(rounds: int = 24) -> list[str]:
    """Run the measurement and print its table; return the markdown lines."""
    have_openai = importlib.util.find_spec("openai") is not None
    if not have_openai:
        print("openai is not installed (pip install -e '.[bench]'); skipping its rows")
    lines = [
        f"### CPU per poll against a stub serving the 18 KB body (medians over {rounds} alternating rounds)",
        "",
        "| client | concurrency | CPU µs/request | requests/s | x raw aiohttp | x get_task |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    goals = []
    with python_process(["-m", "benchmarks._stub"], cpu=1) as url:
        for concurrency in (1, 64):
            floor = run_pass(url, rounds, concurrency, peer=False)
            to_floor = ratio(floor, "get_task", "raw aiohttp")
            for name, figures in (("raw aiohttp", floor["raw aiohttp"]), ("get_task", floor["get_task"])):
                shown = to_floor if name == "get_task" else 1.0
                lines.append(
                    f"| {name} | {concurrency} | {median(figures['cpu_us']):.1f} | {figures['rps']:,.0f} "
                    f"| {shown:.2f} | |"
                )
            goals.append(f"- c={concurrency}: get_task / raw aiohttp = {to_floor:.2f} (goal <= 1.25)")
            if have_openai:
                peers = run_pass(url, rounds, concurrency, peer=True)
                to_ours = ratio(peers, "openai videos.retrieve", "get_task")
                figures = peers["openai videos.retrieve"]
                lines.append(
                    f"| openai videos.retrieve | {concurrency} | {median(figures['cpu_us']):.1f} "
                    f"| {figures['rps']:,.0f} | | {to_ours:.1f} |"
                )
                goals.append(f"- c={concurrency}: openai / get_task = {to_ours:.1f} (goal >= 8)")
    lines += ["", *goals]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--pass":
        pin_to(0)
        _, _, pass_url, pass_rounds, pass_concurrency, pass_peer = sys.argv
        print(
            json.dumps(
                asyncio.run(measure(pass_url, int(pass_rounds), int(pass_concurrency), pass_peer == "1"))
            )
        )
    else:
        main()
