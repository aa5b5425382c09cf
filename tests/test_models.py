"""Tier 1: the Task model and its derived properties, without an event loop."""

from __future__ import annotations

import copy
import sys
from typing import Any

import msgspec
import pytest

from sora_async import Encoding, Encodings, Generation, ResponseDecodeError, Task, TaskStatus, Video
from sora_async._models import queue_wait_hint
from sora_async._protocol import parse_task_response

from .conftest import envelope
from .shapes import FULL_VIDEO


def test_fixture_decodes_to_success_task(success_body: bytes) -> None:
    """The recorded real answer decodes into a SUCCESS Task with its fields."""
    task = parse_task_response(200, {}, success_body)
    assert task.task_id == "task_01jhjp54x0f759wceyasz6xrge"
    assert task.status is TaskStatus.SUCCESS
    assert task.status == "SUCCESS"
    assert task.is_terminal
    assert task.action == "sora-video"
    assert (task.submit_time, task.start_time, task.finish_time) == (1736867805, 0, 1736867860)
    assert task.progress == "100%"
    assert task.percent == 100.0
    assert task.fail_reason == ""


def test_fixture_video_is_lazy_and_typed(success_body: bytes) -> None:
    """The nested object stays raw until .video is read, then decodes into typed Structs."""
    task = parse_task_response(200, {}, success_body)
    assert isinstance(task.data, msgspec.Raw)
    assert "video" not in task.__dict__
    video = task.video
    assert isinstance(video, Video)
    assert task.video is video  # cached
    assert video.status == "succeeded"
    assert (video.width, video.height, video.n_frames) == (854, 480, 150)
    generation = video.generations[0]
    assert generation.seed == 968194097
    assert generation.encodings is not None
    source = generation.encodings.source
    assert source is not None
    assert source.size == 4034268
    assert source.duration_secs == 5
    assert task.video_url is not None
    assert task.video_url == source.path


def test_task_does_not_pin_the_whole_body(success_body: bytes) -> None:
    """A Task holds its own copy of the nested object, not a reference to the response body."""
    body = bytes(bytearray(success_body))  # a fresh object nobody else refers to
    before = sys.getrefcount(body)
    task = parse_task_response(200, {}, body)
    assert sys.getrefcount(body) == before
    assert 0 < len(bytes(task.data)) < len(body)


@pytest.mark.parametrize("status", [s.value for s in TaskStatus])
def test_every_known_status_decodes(status: str) -> None:
    """Each documented status maps to its member; only SUCCESS and FAILURE are final."""
    task = parse_task_response(200, {}, envelope(status=status))
    assert task.status is TaskStatus(status)
    assert task.raw_status == status
    assert task.is_terminal == (status in ("SUCCESS", "FAILURE"))


@pytest.mark.parametrize("status", ["RETRYING", "", "success", "CANCELLED"])
def test_unknown_status_is_unknown_and_not_terminal(status: str) -> None:
    """A status never seen before decodes as UNKNOWN, keeps its raw string, and is not final."""
    task = parse_task_response(200, {}, envelope(status=status))
    assert task.status is TaskStatus.UNKNOWN
    assert task.raw_status == status
    assert not task.is_terminal


@pytest.mark.parametrize(
    ("progress", "percent"),
    [
        ("0%", 0.0),
        ("100%", 100.0),
        ("", None),
        ("abc", None),
        ("120%", 100.0),
        ("45.5%", 45.5),
        ("45%", 45.0),
        (" 30 % ", 30.0),
        ("-5%", 0.0),
        ("nan%", None),
        ("%", None),
        ("50", 50.0),
    ],
)
def test_progress_strings(progress: str, percent: float | None) -> None:
    """percent reads NN% strings, clamps to 0..100, and gives None for garbage."""
    task = parse_task_response(200, {}, envelope(progress=progress))
    assert task.progress == progress
    assert task.percent == percent


def test_missing_optional_fields_take_defaults() -> None:
    """A task object with only an id and a status still decodes."""
    body = b'{"code":"success","message":"","data":{"task_id":"t1","status":"QUEUED"}}'
    task = parse_task_response(200, {}, body)
    assert task == Task(task_id="t1", status=TaskStatus.QUEUED, raw_status="QUEUED")
    assert task.video is None
    assert task.video_url is None


def test_unfinished_task_video_has_no_url() -> None:
    """An unfinished task's nested object decodes, with no generations and no URL."""
    body = envelope(data={"id": "t", "status": "queued", "progress_pos_in_queue": 4, "generations": []})
    task = parse_task_response(200, {}, body)
    assert task.video is not None
    assert task.video.progress_pos_in_queue == 4
    assert task.video_url is None


def test_video_url_falls_back_to_generation_url() -> None:
    """Without encodings, video_url is the generation's own url."""
    body = envelope(status="SUCCESS", data={"generations": [{"id": "g", "url": "https://cdn.example/v.mp4"}]})
    task = parse_task_response(200, {}, body)
    assert task.video_url == "https://cdn.example/v.mp4"


def test_video_of_wrong_shape_raises_typed_error() -> None:
    """A nested object of the wrong shape raises ResponseDecodeError on access, not at poll time."""
    task = parse_task_response(200, {}, envelope(data={"generations": "nope"}))
    assert task.status is TaskStatus.IN_PROGRESS
    with pytest.raises(ResponseDecodeError, match=r"generations"):
        _ = task.video


@pytest.mark.parametrize(
    "data",
    [{"generations": "nope"}, [1, 2], "x", 5, {"width": "wide"}, {"generations": [{"encodings": []}]}],
)
def test_video_url_of_undecodable_video_is_none(data: object) -> None:
    """video_url is None, never an error, when the nested object cannot be decoded; video raises."""
    task = parse_task_response(200, {}, envelope(status="SUCCESS", data=data))
    assert task.video_url is None
    with pytest.raises(ResponseDecodeError):
        _ = task.video


def test_deeply_nested_video_is_a_decode_error() -> None:
    """A nested object deeper than msgspec reads gives ResponseDecodeError, and video_url None."""
    deep = b'{"unknown": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    task = Task(task_id="t", status=TaskStatus.SUCCESS, data=msgspec.Raw(deep))
    with pytest.raises(ResponseDecodeError, match="deeply"):
        _ = task.video
    assert task.video_url is None
    assert queue_wait_hint(msgspec.structs.replace(task, status=TaskStatus.QUEUED)) is None


# --- null in every field of the nested object ---------------------------------------------

# A complete nested object: every field of every Struct holds a value, so
# that setting one to null is a change the test can see.

# (Struct, path from the nested object to an instance of it): each field of each
# Struct is set to null in turn, so a field added later is covered too.
NESTED: list[tuple[type[msgspec.Struct], tuple[str | int, ...]]] = [
    (Video, ()),
    (Generation, ("generations", 0)),
    (Encodings, ("generations", 0, "encodings")),
    (Encoding, ("generations", 0, "encodings", "source")),
]
NULL_POSITIONS = [
    pytest.param(struct, path, name, id=f"{struct.__name__}.{name}")
    for struct, path in NESTED
    for name in struct.__struct_fields__
]


def test_full_video_sets_every_field() -> None:
    """The base object of the null tests fills every field of every nested Struct."""
    task = parse_task_response(200, {}, envelope(status="SUCCESS", data=FULL_VIDEO))
    for struct, path in NESTED:
        target: Any = task.video
        for step in path:
            target = target[step] if isinstance(step, int) else getattr(target, step)
        assert isinstance(target, struct)
        for name in struct.__struct_fields__:
            assert getattr(target, name) not in (None, []), f"{struct.__name__}.{name}"


@pytest.mark.parametrize(("struct", "path", "name"), NULL_POSITIONS)
def test_null_in_any_nested_field_reads_as_empty(
    struct: type[msgspec.Struct], path: tuple[Any, ...], name: str
) -> None:
    """null in any field of the nested object decodes as that field's default (None, or [])."""
    data = copy.deepcopy(FULL_VIDEO)
    target: Any = data
    for step in path:
        target = target[step]
    target[name] = None
    task = parse_task_response(200, {}, envelope(status="SUCCESS", data=data))
    decoded: Any = task.video
    for step in path:
        decoded = decoded[step] if isinstance(step, int) else getattr(decoded, step)
    field = next(f for f in msgspec.structs.fields(struct) if f.name == name)
    empty = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    assert getattr(decoded, name) == empty
    assert type(decoded) is struct
    assert task.video_url is None or isinstance(task.video_url, str)


@pytest.mark.parametrize("generations", ["null", "missing", "[null]"])
def test_null_generations_read_as_empty_and_give_no_url(generations: str) -> None:
    """A SUCCESS task whose generations is null, missing or [null] has generations == [] and no URL."""
    data: dict[str, Any] = {"id": "v", "status": "succeeded"}
    if generations != "missing":
        data["generations"] = None if generations == "null" else [None]
    task = parse_task_response(200, {}, envelope(status="SUCCESS", data=data))
    assert task.video is not None
    assert type(task.video) is Video
    assert task.video.generations == []
    assert task.video_url is None


def test_null_entries_among_generations_are_dropped() -> None:
    """A null entry in generations is skipped; the others keep their order and the URL is found."""
    data = {"generations": [None, {"id": "g", "url": "https://cdn/v.mp4"}, None]}
    task = parse_task_response(200, {}, envelope(status="SUCCESS", data=data))
    assert task.video is not None
    assert [g.id for g in task.video.generations] == ["g"]
    assert task.video_url == "https://cdn/v.mp4"


@pytest.mark.parametrize("wait", [None, "soon", -1, 0, [], {"x": 1}])
def test_queue_wait_hint_ignores_bad_values(wait: object) -> None:
    """queue_wait_hint gives None for a null, negative, zero or wrongly typed estimate."""
    task = parse_task_response(
        200, {}, envelope(status="QUEUED", data={"estimated_queue_wait_time": wait, "generations": None})
    )
    assert queue_wait_hint(task) is None


def test_queue_wait_hint_reads_a_good_value() -> None:
    """queue_wait_hint reads a positive estimate of a queued task, even with nulls around it."""
    task = parse_task_response(
        200, {}, envelope(status="QUEUED", data={"estimated_queue_wait_time": 12.5, "generations": None})
    )
    assert queue_wait_hint(task) == 12.5


def test_task_status_is_a_str_enum() -> None:
    """TaskStatus members compare equal to their strings and print as them."""
    assert TaskStatus.SUCCESS == "SUCCESS"
    assert str(TaskStatus.QUEUED) == "QUEUED"
    assert TaskStatus.parse("never-seen") is TaskStatus.UNKNOWN
