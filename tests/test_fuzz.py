"""Fuzzing the response parsers: any bytes, any JSON, any status -> a Task or a SoraError.

Bounded in `make test` (the "ci" profile); `make fuzz` runs the "fuzz" profile.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sora_async import SoraError, Task
from sora_async._protocol import parse_create_response, parse_retry_after, parse_task_response

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
TASK_FIELDS = [
    "task_id",
    "status",
    "progress",
    "fail_reason",
    "submit_time",
    "start_time",
    "finish_time",
    "action",
    "notify_hook",
    "data",
]
task_objects = st.dictionaries(st.sampled_from(TASK_FIELDS), json_values, max_size=len(TASK_FIELDS))
envelopes = st.fixed_dictionaries(
    {
        "code": st.sampled_from(["success", "task_not_exist", "x"]) | json_values,
        "data": task_objects | json_values,
    }
)
statuses = st.integers(min_value=100, max_value=599)


def exercise(outcome: Task) -> None:
    """Every property of a decoded Task is total: it returns, or raises a SoraError for .video."""
    assert isinstance(outcome.percent, float | None)
    assert isinstance(outcome.is_terminal, bool)
    with contextlib.suppress(SoraError):
        outcome.video_url  # noqa: B018 - the access itself is under test


def parse_any(status: int, body: bytes) -> None:
    try:
        outcome = parse_task_response(status, {}, body)
    except SoraError:
        return
    assert 200 <= status < 300
    exercise(outcome)


@given(st.binary(max_size=2048), statuses)
def test_arbitrary_bytes(body: bytes, status: int) -> None:
    """Random bytes with any status give a Task or a SoraError, never another exception."""
    parse_any(status, body)


@given(json_values, statuses)
def test_arbitrary_json(value: Any, status: int) -> None:
    """Any JSON document gives a Task or a SoraError."""
    parse_any(status, json.dumps(value).encode())


@given(envelopes)
def test_envelopes_with_arbitrary_task_fields(envelope: dict[str, Any]) -> None:
    """Envelopes whose task fields hold any JSON value give a Task or a SoraError."""
    parse_any(200, json.dumps(envelope).encode())


@given(json_values | envelopes, statuses)
def test_create_answers(value: Any, status: int) -> None:
    """Any create answer gives a task id string or a SoraError."""
    try:
        task_id = parse_create_response(status, {}, json.dumps(value).encode())
    except SoraError:
        return
    assert isinstance(task_id, str)
    assert task_id.strip()


@given(st.text(max_size=64))
def test_retry_after_values(value: str) -> None:
    """Any Retry-After header gives a non-negative number of seconds or None."""
    seconds = parse_retry_after(value, now=1_700_000_000.0)
    assert seconds is None or seconds >= 0
