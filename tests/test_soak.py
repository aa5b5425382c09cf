"""Soak: many tasks through a server that misbehaves on a fifth of its answers.

`make test` runs a small version; `make soak` runs 2,000 tasks
(SORA_SOAK_TASKS) and prints the figures.
"""

from __future__ import annotations

import os
import random
import time

from sora_async import PollPolicy, RetryPolicy, SoraClient, Task, TaskFailedError
from sora_async.testing import Chaos, FakeSoraServer

SOAK_TASKS = int(os.environ.get("SORA_SOAK_TASKS", "150"))


async def test_soak_every_task_reaches_its_true_outcome() -> None:
    """20% transient faults and 1% stalls: every task gets its true outcome, exactly once."""
    draw = random.Random(5)
    async with FakeSoraServer(chaos=Chaos(transient=0.2, stall=0.01, seed=3)) as server:
        truth: dict[str, type] = {}
        minimum = 0
        for _ in range(SOAK_TASKS):
            states = [("QUEUED", "20%")] * draw.randint(0, 3) + [("IN_PROGRESS", "30%")] * draw.randint(0, 2)
            fails = draw.random() < 0.2
            task_id = server.add_task(timeline=[*states, ("FAILURE" if fails else "SUCCESS", "100%")])
            truth[task_id] = TaskFailedError if fails else Task
            minimum += len(states) + 1
        client = SoraClient(
            "soak-key",
            base_url=server.url,
            timeout=0.5,  # what a stall costs
            max_retries=2,
            retry=RetryPolicy(initial_delay=0.01, max_delay=0.2),
            poll=PollPolicy(initial_interval=0.01, max_interval=0.05, jitter=0.2),
        )
        seen: dict[str, int] = {}
        wrong: list[tuple[str, object]] = []
        started = time.monotonic()
        async with client:
            async for task_id, outcome in client.as_completed(truth, concurrency=32, timeout=300):
                seen[task_id] = seen.get(task_id, 0) + 1
                if type(outcome) is not truth[task_id]:
                    wrong.append((task_id, outcome))
        wall = time.monotonic() - started
        requests = len(server.arrivals)
        faults = sum(server.chaos_faults.values())
    print(
        f"\nsoak: {SOAK_TASKS} tasks, {requests} requests ({requests - minimum} beyond the {minimum} a "
        f"fault-free run needs), {faults} faults injected {dict(server.chaos_faults)}, "
        f"outcomes {sum(seen.values())}, wrong {len(wrong)}, wall {wall:.1f} s"
    )
    assert wrong == []
    assert seen.keys() == truth.keys()
    assert set(seen.values()) == {1}
    assert faults > 0
