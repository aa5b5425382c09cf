"""A discrete-event simulation of polling strategies against the gateway, on a virtual clock.

Each task waits in the upstream queue 0-300 s, then runs for a log-normal
time (median 120 s), reporting upstream percentages at a fifth, two fifths,
three fifths and four fifths of its run. The gateway shows an upstream change
only when it refreshes the task, which depends on the scenario:

1. **steady**: a 15 s sweep from a random phase refreshes every task within
   half a second of its start; a steady stream of tasks, one every 2 s on
   average, all waited on by one process.
2. **batches**: the same gateway; 100 batches of 100 tasks, each batch
   created back to back (20 ms apart) by a fresh process that waits for
   them all and ends.
3. **channel**: the gateway's sweep as PROTOCOL.md describes it: a pass
   walks the channel's unfinished tasks one at a time, oldest first, 1 s
   apart, and the next pass starts 15 s after the last one ended, so the
   period grows with the pass. Tasks arrive so that about 30 are pending.
4. **single task**: the steady stream's gateway and arrivals, but each task
   is waited on by its own fresh process (a CLI run, a short script): once
   with nothing remembered, once with the cadence an earlier process
   remembered (a process that waited for an hour of tasks before these; each
   process then leaves what it verified for the next, as a client does
   through its journal or state file).
5. **no sweep / sweep moves**: the gateway shows each change at once; and a
   15 s sweep that becomes a 20 s sweep halfway through the run.

A request takes 0.15 s there and back; the gateway answers with what it
shows when the request arrives. The policies are the real ones from
sora_async on the virtual clock, plus fixed-interval pollers standing in for
the peers (the openai SDK polls every second). Detection lag is measured for
every visible change (from the gateway showing it to the client seeing it).
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import pathlib
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sora_async._cadence import CadencePolicy, SweepEstimator
from sora_async._policy import PollPolicy, TaskPolicy

ROUND_TRIP = 0.15
SWEEP_SPREAD = 0.5
PERIOD = 15.0
PLOT_PATH = pathlib.Path(__file__).parent / "polling_sim.png"

# Upstream states: 0 submitted (shown by the gateway at once), 1 queued,
# 3 running, 4-7 running with a percentage, 9 succeeded.
QUEUED, RUNNING, SUCCESS = 1, 3, 9


@dataclass
class Upstream:
    """What the upstream does with one task, before the gateway shows any of it."""

    arrival: float
    changes: list[tuple[float, int]]  # (time, state), the first at arrival

    def state_at(self, moment: float) -> int:
        state = 0
        for at, value in self.changes:
            if at > moment:
                break
            state = value
        return state

    @property
    def end(self) -> float:
        return self.changes[-1][0]


@dataclass
class SimTask:
    """One task as the gateway shows it: when each new state appears, and who waits for it."""

    submit: float
    change_times: list[float]  # visible change times, the first being the submit itself
    states: list[int]
    process: int = 0  # tasks of one process share its poll policy

    @property
    def final_time(self) -> float:
        return self.change_times[-1]


def upstream_tasks(arrivals: Sequence[float], draw: random.Random) -> list[Upstream]:
    tasks = []
    for arrival in arrivals:
        start = arrival + draw.uniform(0, 300)
        duration = math.exp(draw.gauss(math.log(120), 0.5))
        changes = [(arrival, QUEUED), (start, RUNNING)]
        changes += [(start + duration * j / 5, RUNNING + j) for j in range(1, 5)]
        changes.append((start + duration, SUCCESS))
        tasks.append(Upstream(arrival, changes))
    return tasks


def shown_at_refreshes(upstream: Upstream, refreshes: Callable[[float], float], process: int) -> SimTask:
    """The task as shown by a gateway that refreshes it at `refreshes(after)` (the first at or after)."""
    times, states = [upstream.arrival], [0]
    moment = upstream.arrival
    while states[-1] != SUCCESS:
        moment = refreshes(moment)
        state = upstream.state_at(moment)
        if state != states[-1]:
            times.append(moment)
            states.append(state)
        moment += 1e-6
    return SimTask(upstream.arrival, times, states, process)


def shown_at_once(upstream: Upstream, process: int) -> SimTask:
    times = [upstream.arrival] + [max(at, upstream.arrival + 1e-6) for at, _ in upstream.changes]
    states = [0] + [state for _, state in upstream.changes]
    return SimTask(upstream.arrival, times, states, process)


def sweeps(phase: float, period: float, offset: float) -> Callable[[float], float]:
    """A sweep every `period` s from `phase`; the task is refreshed `offset` s after each starts."""

    def refresh(after: float) -> float:
        return phase + math.ceil((after - offset - phase) / period) * period + offset

    return refresh


def moving_sweeps(
    phase: float, switch: float, before: float, after: float, offset: float
) -> Callable[[float], float]:
    """A sweep every `before` s until `switch`, then every `after` s."""
    last_before = phase + math.floor((switch - phase) / before) * before

    def refresh(moment: float) -> float:
        if moment - offset <= last_before:
            return phase + math.ceil((moment - offset - phase) / before) * before + offset
        return last_before + math.ceil((moment - offset - last_before) / after) * after + offset

    return refresh


def channel_tasks(ups: list[Upstream], spacing: float, rest: float, phase: float) -> list[SimTask]:
    """Passes over the channel's unfinished tasks, oldest first, `spacing` s apart; `rest` s
    between passes."""
    shown = [SimTask(up.arrival, [up.arrival], [0]) for up in ups]
    unfinished: list[int] = []
    arrived = 0
    moment = phase
    while arrived < len(ups) or unfinished:
        while arrived < len(ups) and ups[arrived].arrival <= moment:
            unfinished.append(arrived)
            arrived += 1
        if not unfinished:
            moment = max(moment + rest, ups[arrived].arrival)
            continue
        still = []
        for place, index in enumerate(unfinished):
            at = moment + place * spacing
            state = ups[index].state_at(at)
            task = shown[index]
            if state != task.states[-1]:
                task.change_times.append(at)
                task.states.append(state)
            if state != SUCCESS:
                still.append(index)
        moment += len(unfinished) * spacing + rest
        unfinished = still
    return shown


@dataclass
class Result:
    name: str
    requests: list[int] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    when: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        lags = sorted(self.lags)
        per_task = statistics.fmean(self.requests)
        mean = statistics.fmean(lags)
        return {
            "requests": per_task,
            "lag_mean": mean,
            "lag_p95": lags[int(len(lags) * 0.95)],
            "product": per_task * mean,
        }


def fixed_interval(name: str, tasks: list[SimTask], interval: float) -> Result:
    """A poller at a fixed interval, in closed form: polls sent at submit + k * interval."""
    result = Result(name)
    for task in tasks:
        polls = 0
        for change in task.change_times[1:]:
            # the first poll whose request reaches the gateway at or after the change
            polls = math.ceil((change - task.submit - ROUND_TRIP / 2) / interval)
            result.lags.append(task.submit + polls * interval + ROUND_TRIP - change)
        result.requests.append(polls + 1)
    return result


Store = dict[str, tuple[float, float, float]]


def event_driven(
    name: str,
    tasks: list[SimTask],
    make_policy: Callable[[], PollPolicy],
    *,
    store: Store | None = None,
) -> Result:
    """Simulate the polls of all tasks in time order, so that a process's policy learns as it goes.

    With `store`, each process starts from the cadence stored there (as a
    client loads it from its journal) and, when its last task ends, stores
    what it has verified (as a client does when it closes).
    """
    result = Result(name)
    policies: dict[int, PollPolicy] = {}
    left: dict[int, int] = {}
    for task in tasks:
        left[task.process] = left.get(task.process, 0) + 1
    trackers: list[TaskPolicy | None] = [None] * len(tasks)
    polls = [0] * len(tasks)
    seen = [0] * len(tasks)
    last_sent = [0.0] * len(tasks)
    heap = [(task.submit, index) for index, task in enumerate(tasks)]
    heapq.heapify(heap)
    while heap:
        sent, index = heapq.heappop(heap)
        task = tasks[index]
        policy = policies.get(task.process)
        if policy is None:
            policy = policies[task.process] = make_policy()
            if store and isinstance(policy, CadencePolicy):
                policy.estimator.adopt(*store["cadence"], now=sent)
        tracker = trackers[index]
        if tracker is None:
            tracker = trackers[index] = policy.for_task()
        received = sent + ROUND_TRIP
        state_index = bisect.bisect_right(task.change_times, sent + ROUND_TRIP / 2) - 1
        polls[index] += 1
        changed = state_index > seen[index]
        if changed:
            for moment in task.change_times[seen[index] + 1 : state_index + 1]:
                result.lags.append(received - moment)
                result.when.append(moment)
            seen[index] = state_index
        if polls[index] > 1:  # a change since the previous poll happened in (last_sent, received]
            tracker.observe(last_sent[index], received, changed)
        last_sent[index] = sent
        if state_index == len(task.states) - 1:
            result.requests.append(polls[index])
            trackers[index] = None
            left[task.process] -= 1
            if left[task.process] == 0:
                ended = policies.pop(task.process)
                if store is not None and isinstance(ended, CadencePolicy):
                    learned = ended.estimator.learned(verified=True)
                    if learned is not None:
                        store["cadence"] = learned
            continue
        heapq.heappush(heap, (received + tracker.next_delay(polls[index], now=received), index))
    return result


def backoff_default(seed: int) -> Callable[[], PollPolicy]:
    draw = random.Random(seed)
    return lambda: PollPolicy(random=draw.random)


def cadence_default(seed: int) -> Callable[[], PollPolicy]:
    draw = random.Random(seed)
    return lambda: CadencePolicy(random=draw.random)


def policies(tasks: list[SimTask], seed: int, *, store: Store | None = None) -> list[Result]:
    return [
        fixed_interval("fixed 1 s", tasks, 1.0),
        fixed_interval("fixed 6 s", tasks, 6.0),
        event_driven("backoff default", tasks, backoff_default(seed)),
        event_driven("new default", tasks, cadence_default(seed), store=store),
    ]


def scenarios(count: int, seed: int) -> dict[str, list[Result]]:
    """Every scenario's results, by scenario name."""
    draw = random.Random(seed)
    phase = draw.uniform(0, PERIOD)
    offsets = random.Random(seed + 1)

    def steady_arrivals(mean_gap: float, start: float = 0.0) -> list[float]:
        moment, times = start, []
        for _ in range(count):
            moment += draw.expovariate(1 / mean_gap)
            times.append(moment)
        return times

    def swept(ups: list[Upstream], process: Callable[[int], int]) -> list[SimTask]:
        return [
            shown_at_refreshes(up, sweeps(phase, PERIOD, offsets.uniform(0, SWEEP_SPREAD)), process(i))
            for i, up in enumerate(ups)
        ]

    tables: dict[str, list[Result]] = {}
    steady = upstream_tasks(steady_arrivals(2.0), draw)
    tables["1. 15 s sweep, steady stream"] = policies(swept(steady, lambda i: 0), seed)

    batch = 100
    arrivals = [b * 900.0 + i * 0.02 for b in range(count // batch) for i in range(batch)]
    tables["2. 15 s sweep, batches of 100"] = policies(
        swept(upstream_tasks(arrivals, draw), lambda i: i // batch), seed
    )

    channel = upstream_tasks(steady_arrivals(9.5), draw)
    tables["3. channel pass, 1 s per pending task"] = policies(channel_tasks(channel, 1.0, 15.0, phase), seed)

    singles = swept(steady, lambda i: i)
    tables["4a. one task per fresh process"] = policies(singles, seed)
    # What an earlier process learned in the hour before these tasks.
    earlier = upstream_tasks(steady_arrivals(2.0, start=-4000.0)[:1500], draw)
    store: Store = {}
    event_driven("earlier process", swept(earlier, lambda i: 0), cadence_default(seed), store=store)
    if store:
        tables["4b. one task per fresh process, cadence remembered"] = policies(singles, seed, store=store)

    tables["5a. no sweep"] = policies([shown_at_once(up, 0) for up in steady], seed)
    switch = steady[len(steady) // 2].arrival
    tables["5b. sweep moves from 15 s to 20 s halfway"] = policies(
        [
            shown_at_refreshes(
                up, moving_sweeps(phase, switch, 15.0, 20.0, offsets.uniform(0, SWEEP_SPREAD)), 0
            )
            for up in steady
        ],
        seed,
    )
    return tables


def plot(tables: dict[str, list[Result]]) -> None:
    """Requests per task against mean lag, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    columns = 4
    rows = math.ceil(len(tables) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), sharey=True)
    flat = list(axes.flat)
    for axis, (scenario, results) in zip(flat, tables.items(), strict=False):
        for result in results:
            figures = result.row()
            axis.scatter(figures["lag_mean"], figures["requests"], label=result.name)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_title(scenario, fontsize=8)
        axis.set_xlabel("mean detection lag (s)")
        axis.grid(True, which="both", alpha=0.3)
    for axis in flat[len(tables) :]:
        axis.axis("off")
    flat[0].set_ylabel("requests per task")
    flat[0].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(PLOT_PATH, dpi=72)
    plt.close(figure)


def update_cost(seed: int, updates: int = 5000) -> dict[str, list[float]]:
    """Seconds per `SweepEstimator.record` + `update`, after the window of 200 brackets is full.

    Three streams: changes at random times (no sweep, and no prior: every
    update fits and fails, the worst case); a 15 s sweep learned from its
    brackets without a prior; and a verified estimate followed over a
    drifting sweep (a refit every few narrow brackets).
    """
    draw = random.Random(seed)

    def timed(estimator: SweepEstimator, bracket: Callable[[int], tuple[float, float]]) -> list[float]:
        costs = []
        for index in range(updates):
            start, end = bracket(index)
            began = time.perf_counter()
            estimator.record(start, end)
            estimator.update()
            if index >= 200:
                costs.append(time.perf_counter() - began)
        return costs

    def random_change(index: int) -> tuple[float, float]:
        end = index * 1.5 + draw.uniform(0, 1.0)
        return end - draw.uniform(0.3, 5.5), end

    def around_sweep(period: float) -> Callable[[int], tuple[float, float]]:
        def bracket(index: int) -> tuple[float, float]:
            moment = 3.0 + (index // 4) * period + draw.uniform(0, 0.3)
            width = draw.uniform(0.5, 5.0)
            start = moment - draw.uniform(0.01, width - 0.01)
            return start, start + width

        return bracket

    return {
        "no sweep, no prior (every update fits)": timed(SweepEstimator(prior=None), random_change),
        "15 s sweep, learned without a prior": timed(SweepEstimator(prior=None), around_sweep(15.0)),
        "15.02 s sweep, followed once verified": timed(SweepEstimator(), around_sweep(15.02)),
    }


def main(count: int = 10_000, seed: int = 1, *, draw: bool = True) -> list[str]:
    """Run the simulation; print and return the table, and draw the plot."""
    tables = scenarios(count, seed)
    lines = [
        f"### Polling simulation: {count:,} tasks per scenario, seed {seed}",
        "",
        "| scenario | policy | requests/task | lag mean | p95 | requests x mean lag "
        "| vs fixed 1 s: requests | vs backoff: requests x lag |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario, results in tables.items():
        rows = {result.name: result.row() for result in results}
        fixed_one, backoff = rows["fixed 1 s"], rows["backoff default"]
        for name, f in rows.items():
            bold = "**" if name == "new default" else ""
            lines.append(
                f"| {scenario} | {bold}{name}{bold} | {f['requests']:.1f} | {f['lag_mean']:.2f} s "
                f"| {f['lag_p95']:.2f} s | {f['product']:.1f} | {f['requests'] / fixed_one['requests']:.3f} "
                f"| {f['product'] / backoff['product']:.2f} |"
            )
    lines += [
        "",
        "### SweepEstimator: one record + update, 200 brackets kept (goal: at most 2 ms each)",
        "",
        "| stream | median | p99 | max | updates timed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stream, costs in update_cost(seed).items():
        costs.sort()
        median, p99, worst = (costs[int(len(costs) * q)] * 1e6 for q in (0.5, 0.99, 1 - 1e-9))
        lines.append(f"| {stream} | {median:.0f} µs | {p99:.0f} µs | {worst:.0f} µs | {len(costs)} |")
    if draw:
        try:
            plot(tables)
            lines.append("")
            lines.append(f"Plot: `benchmarks/{PLOT_PATH.name}`.")
        except ImportError:
            lines.append("(matplotlib is not installed: no plot; pip install -e '.[bench]')")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-plot", action="store_true")
    arguments = parser.parse_args()
    main(arguments.tasks, arguments.seed, draw=not arguments.no_plot)
