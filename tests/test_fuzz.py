"""Fuzzing the response parsers: any bytes, any JSON, any status -> a Task or a SoraError.

Beyond random documents, the shape tests put any JSON value (null, bools,
numbers out of every range, strings, lists, objects, nesting) into each
field position of a valid answer: the task envelope, the nested video
object and the create answer. The positions come from the Structs' own
fields, so a field added later is fuzzed too.

Bounded in `make test` (the "ci" profile); `make fuzz` runs the "fuzz" profile.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from sora_async import (
    APIError,
    BadRequestError,
    Encoding,
    Encodings,
    Generation,
    PermissionDeniedError,
    ResponseDecodeError,
    ServerError,
    Task,
    TaskNotFoundError,
    TaskStatus,
    Video,
)
from sora_async._models import parse_percent, queue_wait_hint
from sora_async._protocol import (
    KNOWN_ERROR_CODES,
    _TaskWire,
    parse_create_response,
    parse_retry_after,
    parse_task_response,
)
from sora_async._videos_protocol import _ErrorObject as _VideoError
from sora_async._videos_protocol import _VideoWire as _VideoObjectWire
from sora_async._videos_protocol import parse_video_response

from .shapes import FULL_VIDEO


class Number:
    """A JSON number written exactly as given, such as 1e400 or a 5,000-digit integer."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Number({self.text[:20]}{'...' if len(self.text) > 20 else ''})"


def to_json(value: Any) -> str:
    """Encode like json.dumps, writing `Number`s verbatim (so out-of-range numbers reach the parser)."""
    if isinstance(value, Number):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{to_json(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)


odd_numbers = st.sampled_from(
    [
        "1e400",
        "-1e400",
        "1e-400",
        "-0",
        "0.0",
        "1" * 5000,
        "-" + "9" * 4300,
        str(2**63),
        str(-(2**63) - 1),
        str(2**64),
        "123456789012345678901234567890",
        "1.5e308",
        "4.9e-324",
    ]
).map(Number)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_numbers
    | st.text()
    | st.sampled_from(["", "SUCCESS", "FAILURE", "100%", "nan", "inf", "-1", "1e400", "task_1"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
# A value for one field: any kind of JSON, kept small so that many positions are tried.
field_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
statuses = st.integers(min_value=100, max_value=599)

TASK_FIELDS = list(_TaskWire.__struct_fields__)
task_objects = st.dictionaries(st.sampled_from(TASK_FIELDS), json_values, max_size=len(TASK_FIELDS))
envelopes = st.fixed_dictionaries(
    {
        "code": st.sampled_from(["success", "task_not_exist", "x"]) | json_values,
        "data": task_objects | json_values,
    }
)

# --- a valid answer, and every position in it a value can be put ---------------------------

VIDEO = FULL_VIDEO
TASK = {
    "task_id": "task_1",
    "status": "QUEUED",
    "progress": "20%",
    "fail_reason": "",
    "submit_time": 1736867805,
    "start_time": 0,
    "finish_time": 0,
    "action": "sora-video",
    "notify_hook": "",
    "data": VIDEO,
}
ENVELOPE = {"code": "success", "message": "", "data": TASK}

Path = tuple[str | int, ...]
_VIDEO_AT: Path = ("data", "data")
TASK_POSITIONS: list[Path] = [
    ("code",),
    ("message",),
    ("data",),
    *[("data", name) for name in _TaskWire.__struct_fields__],
    *[(*_VIDEO_AT, name) for name in Video.__struct_fields__],
    (*_VIDEO_AT, "generations", 0),
    *[(*_VIDEO_AT, "generations", 0, name) for name in Generation.__struct_fields__],
    *[(*_VIDEO_AT, "generations", 0, "encodings", name) for name in Encodings.__struct_fields__],
    *[(*_VIDEO_AT, "generations", 0, "encodings", "md", name) for name in Encoding.__struct_fields__],
]
CREATE_ANSWERS = [
    {"code": "success", "message": "", "data": "task_1"},
    {"code": "success", "data": {"task_id": "task_1", "id": "task_1"}},
    {"id": "task_1", "task_id": "task_1", "status": "queued"},
]
CREATE_POSITIONS: list[Path] = [
    ("code",),
    ("message",),
    ("data",),
    ("id",),
    ("task_id",),
    ("data", "task_id"),
    ("data", "id"),
]


def put(document: Any, changes: list[tuple[Path, Any]]) -> Any:
    """A copy of `document` with each (path, value) set, creating objects along a path as needed."""
    document = copy.deepcopy(document)
    for path, value in changes:
        if not path:
            document = value
            continue
        target = document
        for step in path[:-1]:
            if isinstance(step, int):
                if not isinstance(target, list) or not target:
                    break
                target = target[0]
            else:
                if not isinstance(target, dict):
                    break
                if not isinstance(target.get(step), (dict, list)):
                    target[step] = {}
                target = target[step]
        else:
            last = path[-1]
            if isinstance(last, int) and isinstance(target, list) and target:
                target[0] = value
            elif isinstance(last, str) and isinstance(target, dict):
                target[last] = value
    return document


def changes_at(positions: list[Path]) -> st.SearchStrategy[list[tuple[Path, Any]]]:
    return st.lists(st.tuples(st.sampled_from(positions), field_values), min_size=1, max_size=3)


# The class the body's code chooses for a 200 answer, as the API documents it.
CLASS_OF_CODE: dict[str, type[APIError]] = {
    "task_not_exist": TaskNotFoundError,
    "quota_not_enough": PermissionDeniedError,
    "invalid_request": BadRequestError,
    "get_task_failed": ServerError,
    "fail_to_fetch_task": ServerError,
}


def test_every_known_code_has_a_documented_class() -> None:
    """The fuzz table of code classes covers every code the parser knows."""
    assert set(CLASS_OF_CODE) == KNOWN_ERROR_CODES


def exercise(task: Task) -> None:
    """Every derived property of a Task is total; only `video` may raise, a ResponseDecodeError."""
    assert isinstance(task.task_id, str)
    for name in ("raw_status", "progress", "fail_reason", "action", "notify_hook"):
        assert isinstance(getattr(task, name), str), name
    for name in ("submit_time", "start_time", "finish_time"):
        assert isinstance(getattr(task, name), int), name
    percent = task.percent
    assert percent is None or 0.0 <= percent <= 100.0
    assert isinstance(task.is_terminal, bool)
    url = task.video_url
    assert url is None or (isinstance(url, str) and url)
    with contextlib.suppress(ResponseDecodeError):
        video = task.video
        assert video is None or type(video) is Video
        if video is not None:
            assert all(type(generation) is Generation for generation in video.generations)
    for status in ("QUEUED", "SUCCESS"):
        hint = queue_wait_hint(msgspec.structs.replace(task, raw_status=status, status=TaskStatus(status)))
        assert hint is None or (math.isfinite(hint) and hint > 0)


def parse_any(status: int, body: bytes) -> None:
    try:
        outcome = parse_task_response(status, {}, body)
    except (ResponseDecodeError, APIError):
        return
    assert 200 <= status < 300
    exercise(outcome)


@given(st.binary(max_size=2048), statuses)
def test_arbitrary_bytes(body: bytes, status: int) -> None:
    """Random bytes with any status give a Task, a ResponseDecodeError or an APIError, nothing else."""
    parse_any(status, body)


@given(json_values, statuses)
def test_arbitrary_json(value: Any, status: int) -> None:
    """Any JSON document gives a Task, a ResponseDecodeError or an APIError."""
    parse_any(status, to_json(value).encode())


@given(envelopes)
def test_envelopes_with_arbitrary_task_fields(envelope: dict[str, Any]) -> None:
    """Envelopes whose task fields hold any JSON value give a Task or a typed error."""
    parse_any(200, to_json(envelope).encode())


@given(changes_at(TASK_POSITIONS))
def test_any_value_in_any_task_position(changes: list[tuple[Path, Any]]) -> None:
    """Any JSON value in any field of the envelope, task or video decodes or raises a typed error.

    A code the API documents chooses its class; a Task's every property is total.
    """
    document = put(ENVELOPE, changes)
    try:
        task = parse_task_response(200, {}, to_json(document).encode())
    except ResponseDecodeError:
        return
    except APIError as exc:
        error: APIError = exc
    else:
        exercise(task)
        return
    code = document.get("code") if isinstance(document, dict) else None
    assert code != "success"
    if code in CLASS_OF_CODE:
        assert type(error) is CLASS_OF_CODE[code]


@given(st.sampled_from(TASK_POSITIONS[3:]), json_values)
def test_one_value_in_one_task_position(path: Path, value: Any) -> None:
    """A single odd value below the envelope leaves the task id and the rest of a valid answer readable."""
    document = put(ENVELOPE, [(path, value)])
    try:
        task = parse_task_response(200, {}, to_json(document).encode())
    except ResponseDecodeError:
        assert len(path) == 2  # a task field; the nested object is not decoded while polling
        return
    assert task.task_id == "task_1" or path == ("data", "task_id")
    exercise(task)


@given(st.sampled_from(CREATE_ANSWERS), changes_at(CREATE_POSITIONS), statuses | st.just(200))
def test_any_value_in_any_create_position(
    base: dict[str, Any], changes: list[tuple[Path, Any]], status: int
) -> None:
    """Any JSON value in any field of a create answer gives a task id or a typed error."""
    document = put(base, changes)
    try:
        task_id = parse_create_response(status, {}, to_json(document).encode())
    except ResponseDecodeError:
        assert 200 <= status < 300
        return
    except APIError as exc:
        error: APIError = exc
    else:
        assert 200 <= status < 300
        assert isinstance(task_id, str)
        assert task_id.strip()
        return
    code = document.get("code") if isinstance(document, dict) else None
    if 200 <= status < 300 and code in CLASS_OF_CODE:
        assert type(error) is CLASS_OF_CODE[code]


@given(json_values | envelopes, statuses)
def test_create_answers(value: Any, status: int) -> None:
    """Any create answer gives a task id string or a typed error."""
    try:
        task_id = parse_create_response(status, {}, to_json(value).encode())
    except (ResponseDecodeError, APIError):
        return
    assert isinstance(task_id, str)
    assert task_id.strip()


@given(json_values)
def test_any_nested_video_object(value: Any) -> None:
    """Any JSON value as the nested video object: only `video` may raise, a ResponseDecodeError."""
    exercise(Task(task_id="t", status=TaskStatus.SUCCESS, data=msgspec.Raw(to_json(value).encode())))


@given(
    st.text()
    | st.text(alphabet="0123456789.eE+-%_ infa").map(lambda text: text * 3)
    | odd_numbers.map(lambda n: n.text + "%")
)
def test_parse_percent_of_any_string(progress: str) -> None:
    """parse_percent reads any string as a number in 0..100 or None, never raising."""
    percent = parse_percent(progress)
    assert percent is None or (0.0 <= percent <= 100.0)


@given(st.text(max_size=64))
def test_retry_after_values(value: str) -> None:
    """Any Retry-After header gives a non-negative number of seconds or None."""
    seconds = parse_retry_after(value, now=1_700_000_000.0)
    assert seconds is None or seconds >= 0


# --- the OpenAI format's video object (/v1/videos) ---------------------------------

VIDEO_OBJECT: dict[str, Any] = {
    "id": "task_1",
    "object": "video",
    "model": "sora-2",
    "status": "in_progress",
    "progress": 40,
    "created_at": 1773296991,
    "completed_at": None,
    "expires_at": None,
    "seconds": "8",
    "size": "1280x720",
    "prompt": "a kite",
    "error": {"code": "x", "message": "y"},
    "remixed_from_video_id": None,
    "video_url": "https://cdn.example/v.mp4",
}
VIDEO_POSITIONS: list[Path] = [
    (),
    *[(name,) for name in VIDEO_OBJECT],
    *[(name,) for name in _VideoObjectWire.__struct_fields__],
    *[("error", name) for name in _VideoError.__struct_fields__],
]


def exercise_video(task: Task) -> None:
    """A video snapshot is a Task of the OpenAI format with every property total."""
    exercise(task)
    assert task.format == "openai"
    for name in ("model", "seconds", "size", "remixed_from_video_id"):
        assert isinstance(getattr(task, name), str), name
    assert isinstance(task.expires_at, int)
    assert task.video is None


@given(changes_at(VIDEO_POSITIONS), statuses | st.just(200))
def test_any_value_in_any_video_object_position(changes: list[tuple[Path, Any]], status: int) -> None:
    """Any JSON value in any field of the video object (or in its place) gives a Task or a typed error."""
    body = to_json(put(VIDEO_OBJECT, changes)).encode()
    try:
        task = parse_video_response(status, {}, body)
    except (ResponseDecodeError, APIError):
        return
    assert 200 <= status < 300
    exercise_video(task)


@given(st.binary(max_size=2048) | json_values.map(lambda value: to_json(value).encode()), statuses)
def test_any_answer_to_a_video_query(body: bytes, status: int) -> None:
    try:
        task = parse_video_response(status, {}, body)
    except (ResponseDecodeError, APIError):
        return
    exercise_video(task)
