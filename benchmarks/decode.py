"""Decode cost of the recorded 18 KB task answer, against json.loads in the same run."""

from __future__ import annotations

import json
import pathlib
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import msgspec

from sora_async._protocol import parse_task_response

SAMPLE = pathlib.Path(__file__).parent.parent / "tests" / "samples" / "sora_task_success.json"


def per_call_us(func: Callable[[], object], *, number: int = 2000, rounds: int = 7) -> float:
    """The median over `rounds` of the per-call time in microseconds."""
    samples = [timeit.timeit(func, number=number) / number * 1e6 for _ in range(rounds)]
    return statistics.median(samples)


def pydantic_decoder() -> Callable[[bytes], object] | None:
    """pydantic v2 models equivalent to Task plus Video, or None without pydantic."""
    try:
        import pydantic
    except ImportError:
        return None

    class Encoding(pydantic.BaseModel):
        path: str | None = None
        size: int | None = None
        width: int | None = None
        height: int | None = None
        duration_secs: float | None = None
        ssim: float | None = None

    class Encodings(pydantic.BaseModel):
        source: Encoding | None = None
        md: Encoding | None = None
        ld: Encoding | None = None
        thumbnail: Encoding | None = None
        spritesheet: Encoding | None = None

    class Generation(pydantic.BaseModel):
        id: str | None = None
        url: str | None = None
        prompt: str | None = None
        seed: int | None = None
        width: int | None = None
        height: int | None = None
        n_frames: int | None = None
        encodings: Encodings | None = None

    class Video(pydantic.BaseModel):
        id: str | None = None
        status: str | None = None
        prompt: str | None = None
        width: int | None = None
        height: int | None = None
        n_frames: int | None = None
        n_variants: int | None = None
        progress_pct: float | None = None
        progress_pos_in_queue: int | None = None
        estimated_queue_wait_time: float | None = None
        failure_reason: str | None = None
        generations: list[Generation] = []

    class TaskModel(pydantic.BaseModel):
        task_id: str
        status: str = ""
        progress: str = ""
        fail_reason: str = ""
        submit_time: int = 0
        start_time: int = 0
        finish_time: int = 0
        action: str = ""
        notify_hook: str = ""
        data: Video | None = None

    class Envelope(pydantic.BaseModel):
        code: str | None = None
        message: str = ""
        data: TaskModel | None = None

    return Envelope.model_validate_json


def run() -> list[tuple[str, float]]:
    """Time each decoder on the sample; return (name, median µs) rows."""
    body = SAMPLE.read_bytes()
    untyped = msgspec.json.Decoder()

    def task_and_video() -> object:
        return parse_task_response(200, {}, body).video

    rows = [
        ("json.loads", per_call_us(lambda: json.loads(body))),
        ("msgspec, untyped", per_call_us(lambda: untyped.decode(body))),
        ("parse_task_response -> Task", per_call_us(lambda: parse_task_response(200, {}, body))),
        ("Task + first .video access", per_call_us(task_and_video)),
    ]
    validate: Any = pydantic_decoder()
    if validate is not None:
        rows.append(("pydantic v2 model_validate_json", per_call_us(lambda: validate(body))))
    return rows


def main() -> list[str]:
    """Print the decode table and return it as markdown lines."""
    rows = run()
    baseline = rows[0][1]
    lines = [
        f"### Decode of the {SAMPLE.stat().st_size:,}-byte task answer (median of 7 rounds of 2,000)",
        "",
        "| decoder | µs/call | x json.loads |",
        "| --- | --- | --- |",
        *(f"| {name} | {micros:.1f} | {micros / baseline:.2f} |" for name, micros in rows),
        "",
        f"- parse_task_response / json.loads = {rows[2][1] / baseline:.2f} (goal <= 0.5)",
    ]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
