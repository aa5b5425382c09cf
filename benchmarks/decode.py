"""Decode cost of the recorded 18 KB task answer, against json.loads in the same run."""

from __future__ import annotations

import json
import pathlib
import statistics
import timeit
from collections.abc import Callable

import msgspec

from sora_async._protocol import parse_task_response

SAMPLE = pathlib.Path(__file__).parent.parent / "tests" / "samples" / "sora_task_success.json"


def per_call_us(func: Callable[[], object], *, number: int = 2000, rounds: int = 7) -> float:
    """The median over `rounds` of the per-call time in microseconds."""
    samples = [timeit.timeit(func, number=number) / number * 1e6 for _ in range(rounds)]
    return statistics.median(samples)


def run() -> list[tuple[str, float]]:
    """Time each decoder on the sample; return (name, median us) rows."""
    body = SAMPLE.read_bytes()
    untyped = msgspec.json.Decoder()

    def task_and_video() -> object:
        return parse_task_response(200, {}, body).video

    return [
        ("json.loads", per_call_us(lambda: json.loads(body))),
        ("msgspec untyped", per_call_us(lambda: untyped.decode(body))),
        ("parse_task_response -> Task", per_call_us(lambda: parse_task_response(200, {}, body))),
        ("Task + first .video access", per_call_us(task_and_video)),
    ]


def main() -> None:
    rows = run()
    baseline = rows[0][1]
    print(f"Decode of the {SAMPLE.stat().st_size:,}-byte task answer (median of 7 rounds)")
    print(f"{'decoder':<30} {'us/call':>9} {'x json.loads':>13}")
    for name, micros in rows:
        print(f"{name:<30} {micros:9.1f} {micros / baseline:13.2f}")


if __name__ == "__main__":
    main()
