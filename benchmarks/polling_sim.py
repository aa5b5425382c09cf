"""A discrete-event simulation of polling strategies against the gateway, on a virtual clock.

Tasks arrive one every two seconds on average. Each waits in the upstream
queue 0-300 s, then runs for a log-normal time (median 120 s), optionally
reporting upstream percentages along the way. The gateway shows upstream
changes only when its sweep reaches the task: every P seconds from a random
phase, each task updated within half a second of the sweep's start; or, in
"no sweep" mode, at once. A request takes 0.15 s there and back; the
gateway answers with the state it shows when the request arrives.

For each policy it reports requests per task and the detection lag of every
visible change (the time from the gateway showing it to the client seeing
it). The policies are the real ones from sora_async, driven by the virtual
clock, plus fixed-interval pollers standing in for the peers. While a task
is queued the upstream shows an estimate of its remaining queue time, off
by up to 30%; "cadence + queue-wait hints" is the default policy fed those
estimates, as the client does when the payload carries them.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import pathlib
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from sora_async._cadence import CadencePolicy
from sora_async._policy import PollPolicy

ROUND_TRIP = 0.15
SWEEP_SPREAD = 0.5
PLOT_PATH = pathlib.Path(__file__).parent / "polling_sim.png"


@dataclass
class SimTask:
    """One task: when the gateway shows each new state, and when it becomes final."""

    submit: float
    change_times: list[float]  # visible change times, the first being the submit itself
    states: list[int]
    start: float = 0.0  # when the upstream starts running it
    estimate_error: float = 1.0  # the upstream's queue-wait estimates are off by this factor

    def queue_wait(self, moment: float, state: int) -> float | None:
        """The upstream's estimate of the remaining queue time, shown while queued."""
        if state != 1 or moment >= self.start:
            return None
        return (self.start - moment) * self.estimate_error

    @property
    def final_time(self) -> float:
        return self.change_times[-1]

    def state_at(self, moment: float) -> int:
        index = bisect.bisect_right(self.change_times, moment) - 1
        return self.states[max(index, 0)]


def make_tasks(count: int, seed: int, period: float | None, upstream_percent: bool) -> list[SimTask]:
    """Tasks and what the gateway shows of them; `period` None means no sweep."""
    draw = random.Random(seed)
    phase = draw.uniform(0, period) if period else 0.0
    tasks = []
    arrival = 0.0
    for _ in range(count):
        arrival += draw.expovariate(0.5)
        queue = draw.uniform(0, 300)
        duration = math.exp(draw.gauss(math.log(120), 0.5))
        start = arrival + queue
        upstream: list[tuple[float, int]] = [(arrival, 1), (start, 3)]  # 1 queued, 3 running
        if upstream_percent:
            upstream += [(start + duration * j / 5, 3 + j) for j in range(1, 5)]
        upstream.append((start + duration, 9))  # 9: success
        offset = draw.uniform(0, SWEEP_SPREAD)
        times, states = [arrival], [0]  # 0: submitted, shown at once by the gateway itself
        for moment, state in upstream:
            if period is None:
                shown = max(moment, times[-1] + 1e-6)
            else:
                shown = phase + math.ceil((moment - phase) / period) * period + offset
                if shown <= times[-1]:  # the same sweep as the previous change: only the later shows
                    states[-1] = state
                    continue
            times.append(shown)
            states.append(state)
        tasks.append(SimTask(arrival, times, states, start, draw.uniform(0.7, 1.3)))
    return tasks


@dataclass
class Result:
    name: str
    requests: list[int] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    final_lags: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        lags = sorted(self.lags)
        per_task = statistics.fmean(self.requests)
        mean = statistics.fmean(lags)
        return {
            "requests": per_task,
            "lag_mean": mean,
            "lag_p50": lags[len(lags) // 2],
            "lag_p95": lags[int(len(lags) * 0.95)],
            "final_lag": statistics.fmean(self.final_lags),
            "product": per_task * mean,
        }


def record_detection(result: Result, task: SimTask, seen_upto: int, now_index: int, received: float) -> None:
    for index in range(seen_upto + 1, now_index + 1):
        result.lags.append(received - task.change_times[index])
    if now_index == len(task.states) - 1:
        result.final_lags.append(received - task.final_time)


def fixed_interval(name: str, tasks: list[SimTask], interval: float) -> Result:
    """A poller at a fixed interval, in closed form: polls sent at submit + k * interval."""
    result = Result(name)
    for task in tasks:
        received = 0.0
        polls = 0
        for change in task.change_times[1:]:
            # the first poll whose request reaches the gateway at or after the change
            polls = math.ceil((change - task.submit - ROUND_TRIP / 2) / interval)
            received = task.submit + polls * interval + ROUND_TRIP
            result.lags.append(received - change)
        result.final_lags.append(received - task.final_time)
        result.requests.append(polls + 1)
    return result


NextDelay = Callable[[int, float, "float | None"], float]
PolicyFactory = Callable[[], tuple[NextDelay, Callable[[float, float, bool], None]]]


def event_driven(
    name: str, tasks: list[SimTask], make_policy: PolicyFactory, seed: int, *, hints: bool = False
) -> Result:
    """Simulate polls of all tasks in time order, so a shared policy learns as it goes."""
    result = Result(name)
    next_delay, observe = make_policy()
    polls = [0] * len(tasks)
    seen = [0] * len(tasks)
    last_sent = [0.0] * len(tasks)
    heap = [(task.submit, index) for index, task in enumerate(tasks)]
    heapq.heapify(heap)
    while heap:
        sent, index = heapq.heappop(heap)
        task = tasks[index]
        received = sent + ROUND_TRIP
        state_index = bisect.bisect_right(task.change_times, sent + ROUND_TRIP / 2) - 1
        polls[index] += 1
        changed = state_index > seen[index]
        if changed:
            record_detection(result, task, seen[index], state_index, received)
            seen[index] = state_index
        if polls[index] > 1:  # a change since the previous poll happened in (last_sent, received]
            observe(last_sent[index], received, changed)
        last_sent[index] = sent
        if state_index == len(task.states) - 1:
            result.requests.append(polls[index])
            continue
        hint = task.queue_wait(sent + ROUND_TRIP / 2, task.states[state_index]) if hints else None
        heapq.heappush(heap, (received + next_delay(polls[index], received, hint), index))
    return result


def runway_like(tasks: list[SimTask], seed: int) -> Result:
    """6 s +/- 1.5 s, simulated per task (the jitter rules out a closed form)."""
    draw = random.Random(seed)

    def policy() -> tuple[NextDelay, Callable[[float, float, bool], None]]:
        return (lambda polls, now, hint: draw.uniform(4.5, 7.5)), (lambda sent, received, changed: None)

    return event_driven("fixed 6 s +/- 1.5 s", tasks, policy, seed)


def backoff_default(tasks: list[SimTask], seed: int) -> Result:
    def policy() -> tuple[NextDelay, Callable[[float, float, bool], None]]:
        draw = random.Random(seed)
        chosen = PollPolicy(random=draw.random)
        return (lambda polls, now, hint: chosen.next_delay(polls, now=now)), chosen.observe

    return event_driven("backoff default (2 s -> 15 s)", tasks, policy, seed)


def cadence(tasks: list[SimTask], seed: int, *, hints: bool = False) -> Result:
    def policy() -> tuple[NextDelay, Callable[[float, float, bool], None]]:
        draw = random.Random(seed)
        chosen = CadencePolicy(random=draw.random)
        return (lambda polls, now, hint: chosen.next_delay(polls, now=now, queue_wait=hint)), chosen.observe

    name = "cadence + queue-wait hints" if hints else "cadence (new default)"
    return event_driven(name, tasks, policy, seed, hints=hints)


def run(count: int, seed: int) -> dict[str, list[tuple[str, dict[str, float]]]]:
    """Every policy against each gateway; rows of figures by gateway."""
    gateways = {
        "15 s sweep": (15.0, False),
        "15 s sweep, upstream percent": (15.0, True),
        "10 s sweep": (10.0, False),
        "no sweep": (None, False),
    }
    tables: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for gateway, (period, percent) in gateways.items():
        tasks = make_tasks(count, seed, period, percent)
        results = [
            fixed_interval("fixed 0.5 s (replicate)", tasks, 0.5),
            fixed_interval("fixed 1 s (openai)", tasks, 1.0),
            runway_like(tasks, seed),
            backoff_default(tasks, seed),
            cadence(tasks, seed),
            cadence(tasks, seed, hints=True),
        ]
        tables[gateway] = [(result.name, result.row()) for result in results]
    return tables


def plot(tables: dict[str, list[tuple[str, dict[str, float]]]]) -> None:
    """Requests per task against mean lag, one panel per gateway."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.6), sharey=True)
    for axis, (gateway, rows) in zip(axes, tables.items(), strict=True):
        for name, figures in rows:
            axis.scatter(figures["lag_mean"], figures["requests"], label=name)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_title(gateway)
        axis.set_xlabel("mean detection lag (s)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("requests per task")
    axes[-1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(PLOT_PATH, dpi=80)
    plt.close(figure)


def main(count: int = 10_000, seed: int = 1) -> list[str]:
    """Run the simulation; print and return the tables, and draw the plot."""
    tables = run(count, seed)
    lines = [f"### Polling simulation: {count:,} tasks per gateway, seed {seed}", ""]
    for gateway, rows in tables.items():
        fixed_one = dict(rows)["fixed 1 s (openai)"]
        backoff = dict(rows)["backoff default (2 s -> 15 s)"]
        lines += [
            f"**{gateway}**",
            "",
            "| policy | requests/task | lag mean | p50 | p95 | completion lag | requests x mean lag |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, f in rows:
            lines.append(
                f"| {name} | {f['requests']:.1f} | {f['lag_mean']:.2f} s | {f['lag_p50']:.2f} s "
                f"| {f['lag_p95']:.2f} s | {f['final_lag']:.2f} s | {f['product']:.1f} |"
            )
        lines.append("")
        for name in ("cadence (new default)", "cadence + queue-wait hints"):
            ours = dict(rows)[name]
            lines.append(
                f"- {name}: mean lag {ours['lag_mean']:.2f} s, "
                f"{ours['requests'] / fixed_one['requests']:.3f}x the requests of fixed 1 s; "
                f"requests x lag {ours['product'] / backoff['product']:.2f}x the backoff default"
            )
        lines.append("")
    try:
        plot(tables)
        lines.append(f"Plot: `benchmarks/{PLOT_PATH.name}`.")
    except ImportError:
        lines.append("(matplotlib is not installed: no plot; pip install -e '.[bench]')")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    main(arguments.tasks, arguments.seed)
