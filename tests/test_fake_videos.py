"""The fake server's OpenAI-format surface, `/v1/videos`, checked with plain aiohttp requests.

These tests call the fake itself over loopback, so they hold whatever an SDK
built on it does: the create's bodies and checks, the video object at each
timeline state, content, remix, each quirk on and off, and the counters and
faults this surface shares with the reverse format.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

import sora_async.testing
from sora_async._fake_videos import other_origin, progress_percent
from sora_async.testing import (
    DEFAULT_TIMELINE,
    FakeSoraServer,
    Fault,
    UploadedReference,
    VideoQuirks,
    sample_file,
)

KEY = "sk-fake-videos-7c2a"
AUTH = {"Authorization": f"Bearer {KEY}"}
DONE = [("SUCCESS", "100%")]
SATURATED_MESSAGE = "当前分组上游负载已饱和，请稍后再试"  # noqa: RUF001 (the gateway's full-width comma)
SATURATED = {"error": {"message": SATURATED_MESSAGE, "type": "upstream_error", "code": "429"}}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def call(
    session: aiohttp.ClientSession,
    server: FakeSoraServer,
    method: str,
    path: str,
    *,
    auth: bool = True,
    **kwargs: Any,
) -> Answer:
    """One request to the fake; the whole answer, read."""
    headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
    async with session.request(method, server.url + path, headers=headers, **kwargs) as response:
        return Answer(response.status, dict(response.headers), await response.read())


async def create(session: aiohttp.ClientSession, server: FakeSoraServer, **fields: Any) -> dict[str, Any]:
    """A JSON create that must succeed; the video object it answers."""
    answer = await call(session, server, "POST", "/v1/videos", json={"model": "sora-2", **fields})
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.json()
    return body


async def retrieve(session: aiohttp.ClientSession, server: FakeSoraServer, video_id: str) -> Any:
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}")
    assert answer.status == 200, answer.body
    return answer.json()


async def read_into(response: aiohttp.ClientResponse, received: bytearray) -> None:
    """Read a body chunk by chunk, keeping what arrived if the connection drops."""
    async for chunk in response.content.iter_any():
        received.extend(chunk)


def invalid(code: str | None, message: str | None = None) -> dict[str, Any]:
    """The shape of this surface's 400s (the message is checked when given)."""
    error: dict[str, Any] = {"type": "invalid_request_error"}
    if code is not None:
        error["code"] = code
    if message is not None:
        error["message"] = message
    return error


def assert_error(answer: Answer, status: int, code: str | None, message: str | None = None) -> None:
    assert answer.status == status, answer.body
    error = answer.json()["error"]
    assert isinstance(error["message"], str)
    assert error.items() >= invalid(code, message).items()
    assert ("code" in error) == (code is not None)


# --- create ------------------------------------------------------------------------------


async def test_create_by_json(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A JSON create answers the queued video object and counts as a create."""
    video = await create(session, server, prompt="a red kite", seconds="8", size="1280x720")
    assert video == {
        "id": video["id"],
        "object": "video",
        "model": "sora-2",
        "status": "queued",
        "progress": 0,
        "created_at": server.tasks[video["id"]].submit_time,
        "completed_at": None,
        "expires_at": None,
        "seconds": "8",
        "size": "1280x720",
        "prompt": "a red kite",
        "error": None,
        "remixed_from_video_id": None,
    }
    assert video["id"].startswith("task_")
    assert server.requests["create"] == 1
    assert server.polls(video["id"]) == 0


async def test_create_fills_defaults(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """Without seconds and size the task is 4 s at 720x1280."""
    video = await create(session, server, prompt="a kite")
    assert (video["seconds"], video["size"]) == ("4", "720x1280")
    assert server.tasks[video["id"]].request == {
        "model": "sora-2",
        "prompt": "a kite",
        "seconds": "4",
        "size": "720x1280",
    }


async def test_create_by_multipart_records_the_input_reference(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """A multipart create keeps its text fields and the uploaded file's name, type and size."""
    image = sample_file("jpg")
    form = aiohttp.FormData()
    form.add_field("model", "sora-2-pro")
    form.add_field("prompt", "a kite over the sea")
    form.add_field("seconds", "12")
    form.add_field("size", "1792x1024")
    form.add_field("input_reference", image, filename="first-frame.jpg", content_type="image/jpeg")
    answer = await call(session, server, "POST", "/v1/videos", data=form)
    assert answer.status == 200, answer.body
    video = answer.json()
    assert (video["model"], video["seconds"], video["size"]) == ("sora-2-pro", "12", "1792x1024")
    task = server.tasks[video["id"]]
    assert task.input_reference == UploadedReference("first-frame.jpg", "image/jpeg", len(image))
    assert task.request["prompt"] == "a kite over the sea"
    assert server.recorded[-1].body.count(image) == 1  # the raw body is recorded too


async def test_create_by_multipart_without_a_file(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """A multipart create with text fields only has no input_reference, and keeps every field."""
    form = aiohttp.FormData()
    form.add_field("model", "sora-2")
    form.add_field("prompt", "a kite")
    form.add_field("note", "kept")
    form.add_field("unused", b"x", filename="other.png")  # a file under another name is not a reference
    answer = await call(session, server, "POST", "/v1/videos", data=form)
    task = server.tasks[answer.json()["id"]]
    assert task.input_reference is None
    assert task.request["note"] == "kept"


async def test_multipart_file_without_a_type(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A file part with no Content-Type records None, and a raw UTF-8 filename reads as sent."""
    body = (
        '--b0\r\nContent-Disposition: form-data; name="model"\r\n\r\nsora-2\r\n'
        '--b0\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nun cerf-volant é\r\n'
        '--b0\r\nContent-Disposition: form-data; name="input_reference"; filename="réf.png"\r\n\r\n'
        "\x00\r\n\r\n--b0--\r\n"
    ).encode()
    headers = {"Content-Type": "multipart/form-data; boundary=b0"}
    answer = await call(session, server, "POST", "/v1/videos", data=body, headers=headers)
    assert answer.json()["prompt"] == "un cerf-volant é"
    task = server.tasks[answer.json()["id"]]
    assert task.input_reference == UploadedReference("réf.png", None, 3)


async def test_create_url_encoded(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A url-encoded create reads its fields as strings."""
    data = {"model": "sora-2", "prompt": "a kite & a boat", "seconds": "8"}
    answer = await call(session, server, "POST", "/v1/videos", data=data)
    assert answer.status == 200, answer.body
    video = answer.json()
    assert (video["prompt"], video["seconds"]) == ("a kite & a boat", "8")
    assert server.tasks[video["id"]].input_reference is None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"prompt": "a kite"}, "missing_model"),
        ({"model": "", "prompt": "a kite"}, "missing_model"),
        ({"model": 2, "prompt": "a kite"}, "invalid_request"),
        ({"model": "sora-2"}, "invalid_request"),
        ({"model": "sora-2", "prompt": ""}, "invalid_request"),
        ({"model": "sora-2", "prompt": 7}, "invalid_request"),
        ({"model": "sora-2", "prompt": "k", "seconds": "3601"}, "invalid_seconds"),
        ({"model": "sora-2", "prompt": "k", "seconds": "-1"}, "invalid_seconds"),
        ({"model": "sora-2", "prompt": "k", "seconds": "four"}, "invalid_seconds"),
        ({"model": "sora-2", "prompt": "k", "seconds": 8}, "invalid_seconds"),
        ({"model": "sora-2", "prompt": "k", "size": "640x480"}, "invalid_size"),
        ({"model": "sora-2", "prompt": "k", "size": "1792x1024"}, "invalid_size"),
        ({"model": "sora-2", "prompt": "k", "size": "1024x1792"}, "invalid_size"),
    ],
)
async def test_create_validation_errors(
    server: FakeSoraServer, session: aiohttp.ClientSession, fields: dict[str, Any], code: str
) -> None:
    """Each refused create answers 400 with its code, creates no task, and still counts."""
    answer = await call(session, server, "POST", "/v1/videos", json=fields)
    assert_error(answer, 400, code)
    assert server.tasks == {}
    assert server.requests["create"] == 1


@pytest.mark.parametrize("seconds", ["0", "4", "3600", ""])
async def test_create_accepts_seconds_in_range(
    server: FakeSoraServer, session: aiohttp.ClientSession, seconds: str
) -> None:
    """Seconds from "0" to "3600" are accepted; an empty one means the default."""
    video = await create(session, server, prompt="k", seconds=seconds)
    assert video["seconds"] == (seconds or "4")


async def test_pro_sizes_are_accepted_for_pro(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """1792x1024 is refused for sora-2 only."""
    video = await create(session, server, prompt="k", model="sora-2-pro", size="1024x1792")
    assert video["size"] == "1024x1792"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "invalid_request"),
        ({"json": ["a", "list"]}, "invalid_request"),
        ({"data": b"model=x", "headers": {"Content-Type": "text/plain"}}, "invalid_request"),
        (
            {"data": b"junk", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            "invalid_request",
        ),
        ({"data": {"prompt": "a kite"}}, "missing_model"),
    ],
)
async def test_create_unreadable_bodies(
    server: FakeSoraServer, session: aiohttp.ClientSession, kwargs: dict[str, Any], code: str
) -> None:
    """Bad JSON, a non-object, an unknown type or a broken multipart body answer 400."""
    answer = await call(session, server, "POST", "/v1/videos", **kwargs)
    assert_error(answer, 400, code)


async def test_multipart_validation(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A multipart create without a model is refused like a JSON one."""
    form = aiohttp.FormData()
    form.add_field("prompt", "a kite")
    form.add_field("input_reference", b"img", filename="r.png", content_type="image/png")
    assert_error(await call(session, server, "POST", "/v1/videos", data=form), 400, "missing_model")


# --- retrieve ------------------------------------------------------------------------------


async def test_retrieve_walks_the_timeline(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """Each retrieve is a poll: the default timeline maps to status and integer progress."""
    video_id = (await create(session, server, prompt="a kite"))["id"]
    seen = [await retrieve(session, server, video_id) for _ in DEFAULT_TIMELINE]
    assert [(v["status"], v["progress"]) for v in seen] == [
        ("unknown", 0),
        ("queued", 10),
        ("queued", 20),
        ("in_progress", 30),
        ("in_progress", 60),
        ("completed", 100),
    ]
    assert all(v["completed_at"] is None and v["expires_at"] is None for v in seen[:-1])
    task = server.tasks[video_id]
    done = seen[-1]
    assert done["completed_at"] == task.submit_time + len(DEFAULT_TIMELINE)
    assert done["expires_at"] == done["completed_at"] + 3600
    assert done["error"] is None
    assert "video_url" not in done
    assert server.polls(video_id) == len(DEFAULT_TIMELINE)


async def test_retrieve_failed_task(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A failed task shows status failed, error with the fail reason, completed_at and no expires_at."""
    server.script_next([("FAILURE", "100%")], fail_reason="blocked by moderation")
    video = await retrieve(session, server, (await create(session, server, prompt="k"))["id"])
    assert video["status"] == "failed"
    assert video["progress"] == 100
    assert video["error"] == {"code": "video_generation_failed", "message": "blocked by moderation"}
    assert isinstance(video["completed_at"], int)
    assert video["expires_at"] is None


async def test_retrieve_unknown_id(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """An unknown id answers 400 with the envelope, and counts as a poll of that id."""
    answer = await call(session, server, "GET", "/v1/videos/task_nope")
    assert answer.status == 400
    assert answer.json() == {"code": "task_not_exist", "message": "task_not_exist", "data": None}
    assert server.polls("task_nope") == 1


async def test_retrieve_follows_the_clock(session: aiohttp.ClientSession) -> None:
    """In "clock" mode a retrieve reads the state the server's clock reached."""
    now = [100.0]
    async with FakeSoraServer(api_key=KEY, advance="clock", step_seconds=10, clock=lambda: now[0]) as server:
        video_id = server.add_task()
        assert (await retrieve(session, server, video_id))["status"] == "unknown"
        now[0] += 35
        assert (await retrieve(session, server, video_id))["progress"] == 30


async def test_unknown_states_and_progress_garbage(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """An unlisted status is lower-cased; unreadable progress reads 0."""
    video_id = server.add_task(timeline=[("UNKNOWN", "")])
    video = await retrieve(session, server, video_id)
    assert (video["status"], video["progress"]) == ("unknown", 0)


def test_progress_percent() -> None:
    """Progress strings read as integers from 0 to 100."""
    assert [progress_percent(p) for p in ("37%", "100%", "150%", "", "n/a", " 5 %", "٣%")] == [
        37,
        100,
        100,
        0,
        0,
        5,
        0,
    ]


# --- content -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "kind", "media_type"),
    [
        ("", "mp4", "video/mp4"),
        ("?variant=video", "mp4", "video/mp4"),
        ("?variant=thumbnail", "jpg", "image/jpeg"),
        ("?variant=spritesheet", "jpg", "image/jpeg"),
    ],
)
async def test_content_variants(
    server: FakeSoraServer, session: aiohttp.ClientSession, query: str, kind: Any, media_type: str
) -> None:
    """Content serves the sample MP4, or the sample JPEG for image variants, with Content-Length."""
    video_id = server.add_task(timeline=DONE)
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}/content{query}")
    assert answer.status == 200
    assert answer.body == sample_file(kind)
    assert answer.headers["Content-Type"] == media_type
    assert answer.headers["Content-Length"] == str(len(sample_file(kind)))
    assert server.requests["content"] == 1
    assert server.polls(video_id) == 0  # a download is not a poll


async def test_content_unknown_variant(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """An unknown variant answers 400 invalid_request."""
    video_id = server.add_task(timeline=DONE)
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}/content?variant=poster")
    assert_error(answer, 400, "invalid_request")


async def test_content_unknown_id(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """Content of an unknown id answers 404 "Task not found"."""
    answer = await call(session, server, "GET", "/v1/videos/task_nope/content")
    assert answer.status == 404
    assert answer.json() == {"error": {"message": "Task not found", "type": "invalid_request_error"}}


@pytest.mark.parametrize("state", [("QUEUED", "20%"), ("FAILURE", "100%")])
async def test_content_before_completion(
    server: FakeSoraServer, session: aiohttp.ClientSession, state: tuple[str, str]
) -> None:
    """Content of an unfinished (or failed) task answers 400 naming its reverse-format status."""
    video_id = server.add_task(timeline=[state])
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}/content")
    assert answer.status == 400
    message = f"Task is not completed yet, current status: {state[0]}"
    assert answer.json() == {"error": {"message": message, "type": "invalid_request_error"}}


# --- the key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/videos", {"json": {"model": "sora-2", "prompt": "k"}}),
        ("GET", "/v1/videos/{id}", {}),
        ("GET", "/v1/videos/{id}/content", {}),
        ("POST", "/v1/videos/{id}/remix", {"json": {"prompt": "k"}}),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}])
async def test_every_route_needs_the_key(
    server: FakeSoraServer,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    headers: dict[str, str],
) -> None:
    """Create, retrieve, content and remix answer 401 without the right key."""
    video_id = server.add_task(timeline=DONE)
    answer = await call(
        session, server, method, path.format(id=video_id), auth=False, headers=headers, **kwargs
    )
    assert answer.status == 401
    assert "error" in answer.json()
    assert len(server.tasks) == 1


async def test_fake_video_host_needs_no_key(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """The reverse format's fake video host still serves without a key."""
    video_id = server.add_task(timeline=DONE)
    answer = await call(session, server, "GET", f"/_fake/cdn/{video_id}/source.mp4", auth=False)
    assert answer.status == 200
    assert answer.body == sample_file("mp4")


# --- remix -------------------------------------------------------------------------------


async def test_remix(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A remix of a completed video is a new queued video of the same shape, and counts as a create."""
    source = await create(session, server, prompt="a kite", model="sora-2-pro", seconds="8", size="1792x1024")
    server.tasks[source["id"]].timeline = tuple(DONE)
    answer = await call(
        session, server, "POST", f"/v1/videos/{source['id']}/remix", json={"prompt": "at dusk"}
    )
    assert answer.status == 200, answer.body
    remix = answer.json()
    assert remix["id"] != source["id"]
    assert remix["remixed_from_video_id"] == source["id"]
    assert (remix["status"], remix["progress"], remix["prompt"]) == ("queued", 0, "at dusk")
    assert (remix["model"], remix["seconds"], remix["size"]) == ("sora-2-pro", "8", "1792x1024")
    assert server.requests["create"] == 2
    assert (await retrieve(session, server, remix["id"]))["remixed_from_video_id"] == source["id"]


async def test_remix_refusals(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """Remix refuses an unfinished source, an empty prompt and an unknown source."""
    pending = server.add_task(timeline=[("IN_PROGRESS", "50%")])
    answer = await call(session, server, "POST", f"/v1/videos/{pending}/remix", json={"prompt": "k"})
    message = "Task is not completed yet, current status: IN_PROGRESS"
    assert_error(answer, 400, "invalid_request", message)
    done = server.add_task(timeline=DONE)
    for body in ({"prompt": ""}, {}, ["k"]):
        answer = await call(session, server, "POST", f"/v1/videos/{done}/remix", json=body)
        assert_error(answer, 400, "invalid_request")
    answer = await call(session, server, "POST", "/v1/videos/task_nope/remix", json={"prompt": "k"})
    assert answer.status == 400
    assert answer.json() == {"code": "task_not_exist", "message": "task_origin_not_exist", "data": None}
    assert len(server.tasks) == 2
    assert server.requests["create"] == 5


# --- one store, two formats ----------------------------------------------------------------


async def test_both_formats_share_tasks_and_polls(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """Retrieves and reverse-format queries of one task advance the same timeline and poll count."""
    video_id = (await create(session, server, prompt="a kite", size="1280x720", seconds="8"))["id"]
    reverse = await call(session, server, "GET", f"/sora/v1/videos/{video_id}")
    assert reverse.json()["data"]["status"] == "NOT_START"
    assert (await retrieve(session, server, video_id))["status"] == "queued"  # SUBMITTED, the 2nd state
    reverse = await call(session, server, "GET", f"/sora/v1/videos/{video_id}")
    assert reverse.json()["data"]["status"] == "QUEUED"
    assert server.polls(video_id) == 3
    assert server.requests["create"] == 1
    for _ in range(3):
        reverse = await call(session, server, "GET", f"/sora/v1/videos/{video_id}")
    upstream = reverse.json()["data"]["data"]
    assert (upstream["width"], upstream["height"], upstream["n_frames"]) == (1280, 720, 240)
    assert upstream["prompt"] == "a kite"


async def test_reverse_format_task_reads_as_video(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """A task created through /sora/v1/videos reads through /v1/videos, and both count as creates."""
    body = {"prompt": "a boat", "model": "sora-2", "width": 1280, "height": 720, "n_frames": 300}
    created = await call(session, server, "POST", "/sora/v1/videos", json=body)
    video_id = created.json()["data"]
    await create(session, server, prompt="another")
    video = await retrieve(session, server, video_id)
    assert (video["id"], video["prompt"], video["model"]) == (video_id, "a boat", "sora-2")
    assert (video["size"], video["seconds"]) == ("1280x720", "10")
    assert server.requests["create"] == 2
    assert server.polls(video_id) == 1


async def test_add_task_reads_as_video(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A task added directly shows the reverse format's default shape on this surface."""
    video = await retrieve(session, server, server.add_task(timeline=DONE))
    assert (video["model"], video["size"], video["seconds"]) == ("sora-2", "854x480", "5")


# --- faults ------------------------------------------------------------------------------


async def test_fault_on_the_content_route(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A fault injected on "content" for one task hits its downloads only, once."""
    video_id = server.add_task(timeline=DONE)
    server.inject(Fault(500, {"error": {"message": "boom"}}), route="content", task_id=video_id)
    assert (await call(session, server, "GET", f"/v1/videos/{video_id}")).status == 200
    first = await call(session, server, "GET", f"/v1/videos/{video_id}/content")
    second = await call(session, server, "GET", f"/v1/videos/{video_id}/content")
    assert (first.status, second.status) == (500, 200)
    assert server.requests["content"] == 2
    assert server.faults_sent[0][1] == f"/v1/videos/{video_id}/content"


async def test_any_route_faults_cover_this_surface(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """Faults on "any", "create" and "query" hit /v1/videos routes; "query" faults spare content."""
    video_id = server.add_task(timeline=DONE)
    server.inject(Fault.server_error(502), route="query")
    assert (await call(session, server, "GET", f"/v1/videos/{video_id}/content")).status == 200
    assert (await call(session, server, "GET", f"/v1/videos/{video_id}")).status == 502
    server.inject(Fault(503, None), route="create")
    assert (await call(session, server, "POST", "/v1/videos", json={})).status == 503
    server.inject(Fault(504, None), route="any")
    assert (await call(session, server, "GET", f"/v1/videos/{video_id}/content")).status == 504


async def test_transport_fault_on_content(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A transport fault on content drops the download as it does on other routes."""
    video_id = server.add_task(timeline=DONE)
    server.inject(Fault.truncated(), route="content")
    with pytest.raises(aiohttp.ClientPayloadError):
        await call(session, server, "GET", f"/v1/videos/{video_id}/content")


# --- quirks ------------------------------------------------------------------------------


async def test_quirks_are_off_by_default() -> None:
    """A new server has no quirk on."""
    assert FakeSoraServer().video_quirks == VideoQuirks()
    assert not any(
        value
        for name, value in vars(VideoQuirks()).items()
        if name not in ("content_cuts", "content_cut_after")
    )


def test_quirks_check_their_values() -> None:
    """Negative counts are refused; model names become a frozenset."""
    with pytest.raises(ValueError, match="content_cut_after"):
        VideoQuirks(content_cut_after=-1)
    with pytest.raises(ValueError, match="content_cuts"):
        VideoQuirks(content_cuts=-1)
    quirks = VideoQuirks(unavailable_models={"sora-2"})  # type: ignore[arg-type]
    assert quirks.unavailable_models == frozenset({"sora-2"})
    assert hash(quirks)


@pytest.mark.parametrize(("leak", "status"), [(False, "unknown"), (True, "NOT_START")])
async def test_leak_not_start(
    server: FakeSoraServer, session: aiohttp.ClientSession, leak: bool, status: str
) -> None:
    """NOT_START shows as "unknown", or leaks as "NOT_START" with the quirk."""
    server.video_quirks = VideoQuirks(leak_not_start=leak)
    video = await retrieve(session, server, server.add_task(timeline=[("NOT_START", "0%")]))
    assert video["status"] == status


async def test_failure_without_status(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """With the quirk a failed task is the stored upstream error: an id and an error, no status."""
    server.video_quirks = VideoQuirks(failure_without_status=True)
    video_id = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="quota exceeded upstream")
    assert await retrieve(session, server, video_id) == {
        "id": video_id,
        "error": {"code": "video_generation_failed", "message": "quota exceeded upstream"},
    }
    pending = await retrieve(session, server, server.add_task(timeline=[("QUEUED", "20%")]))
    assert pending["status"] == "queued"  # only failures lose their status


async def test_content_cut_after(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """The first `content_cuts` downloads announce the full length and stop after N bytes; then whole."""
    server.video_quirks = VideoQuirks(content_cut_after=1000, content_cuts=2)
    video_id = server.add_task(timeline=DONE)
    full = sample_file("mp4")
    for _ in range(2):
        async with session.get(f"{server.url}/v1/videos/{video_id}/content", headers=AUTH) as response:
            assert response.status == 200
            assert response.content_length == len(full)
            received = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                await read_into(response, received)
            assert received == full[:1000]
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}/content")
    assert answer.body == full
    assert server.requests["content"] == 3


async def test_content_whole_without_cut(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """With content_cuts=0 (or no cut size) nothing is cut."""
    server.video_quirks = VideoQuirks(content_cut_after=10, content_cuts=0)
    video_id = server.add_task(timeline=DONE)
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}/content")
    assert answer.body == sample_file("mp4")


@pytest.mark.parametrize(("ignore", "media_type"), [(False, "image/jpeg"), (True, "video/mp4")])
async def test_ignore_variant(
    server: FakeSoraServer, session: aiohttp.ClientSession, ignore: bool, media_type: str
) -> None:
    """With the quirk a thumbnail (or any variant) request answers the MP4."""
    server.video_quirks = VideoQuirks(ignore_variant=ignore)
    video_id = server.add_task(timeline=DONE)
    answer = await call(session, server, "GET", f"/v1/videos/{video_id}/content?variant=thumbnail")
    assert answer.headers["Content-Type"] == media_type
    if ignore:
        bogus = await call(session, server, "GET", f"/v1/videos/{video_id}/content?variant=poster")
        assert bogus.body == sample_file("mp4")


async def test_unavailable_models(server: FakeSoraServer, session: aiohttp.ClientSession) -> None:
    """A model without a channel answers 503 model_not_found on create and remix; others are served."""
    no_channel = {
        "error": {
            "message": "No available channel for model sora-2 under group default",
            "type": "new_api_error",
            "code": "model_not_found",
        }
    }
    done = (await create(session, server, prompt="k"))["id"]  # created while still served
    server.tasks[done].timeline = tuple(DONE)
    server.video_quirks = VideoQuirks(unavailable_models=frozenset({"sora-2"}))
    answer = await call(session, server, "POST", "/v1/videos", json={"model": "sora-2", "prompt": "k"})
    assert (answer.status, answer.json()) == (503, no_channel)
    remix = await call(session, server, "POST", f"/v1/videos/{done}/remix", json={"prompt": "k"})
    assert (remix.status, remix.json()) == (503, no_channel)
    assert (await create(session, server, prompt="k", model="sora-2-pro"))["model"] == "sora-2-pro"
    missing = await call(session, server, "POST", "/v1/videos", json={"prompt": "k"})
    assert_error(missing, 400, "missing_model")


@pytest.mark.parametrize("chinese", [False, True])
async def test_chinese_429_on_injected_faults(
    server: FakeSoraServer, session: aiohttp.ClientSession, chinese: bool
) -> None:
    """An injected 429 on this surface carries the gateway's message with the quirk, Retry-After kept."""
    server.video_quirks = VideoQuirks(chinese_429=chinese)
    server.inject(Fault.rate_limited(retry_after="2"), route="create")
    answer = await call(session, server, "POST", "/v1/videos", json={"model": "sora-2", "prompt": "k"})
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "2"
    assert (answer.json() == SATURATED) is chinese
    server.inject(Fault.rate_limited(retry_after=None), route="content")
    answer = await call(session, server, "GET", "/v1/videos/task_x/content")
    assert answer.status == 429
    assert "Retry-After" not in answer.headers
    assert (answer.json() == SATURATED) is chinese


async def test_chinese_429_on_the_rate_limit(session: aiohttp.ClientSession) -> None:
    """`rate_limit`'s 429s are rewritten on /v1/videos but not on the reverse format."""
    quirks = VideoQuirks(chinese_429=True)
    async with FakeSoraServer(api_key=KEY, rate_limit=1, video_quirks=quirks) as server:
        video_id = server.add_task()
        await call(session, server, "GET", f"/v1/videos/{video_id}")
        answer = await call(session, server, "GET", f"/v1/videos/{video_id}")
        assert (answer.status, answer.json()) == (429, SATURATED)
        assert int(answer.headers["Retry-After"]) >= 1
        reverse = await call(session, server, "GET", f"/sora/v1/videos/{video_id}")
        assert reverse.status == 429
        assert reverse.json() != SATURATED
        assert server.throttled == 2


@pytest.mark.parametrize("on", [False, True])
async def test_video_url(server: FakeSoraServer, session: aiohttp.ClientSession, on: bool) -> None:
    """With the quirk a completed object links the fake video host under another host name."""
    server.video_quirks = VideoQuirks(video_url=on)
    pending = await retrieve(session, server, server.add_task(timeline=[("IN_PROGRESS", "50%")]))
    assert "video_url" not in pending
    video_id = server.add_task(timeline=DONE)
    video = await retrieve(session, server, video_id)
    assert ("video_url" in video) is on
    if not on:
        return
    assert video["video_url"].startswith(
        f"http://localhost:{server.url.rsplit(':', 1)[1]}/_fake/cdn/{video_id}/"
    )
    async with session.get(video["video_url"]) as response:
        assert await response.read() == sample_file("mp4")
    seen = server.recorded[-1]
    assert seen.path.startswith(f"/_fake/cdn/{video_id}/source.mp4")
    assert seen.headers["Host"].startswith("localhost:")
    assert "Authorization" not in seen.headers


@pytest.mark.parametrize(
    ("variant", "ignore", "name"),
    [
        ("video", False, "source.mp4"),
        ("thumbnail", False, "thumbnail.jpg"),
        ("thumbnail", True, "source.mp4"),
    ],
)
async def test_content_redirect(
    server: FakeSoraServer, session: aiohttp.ClientSession, variant: str, ignore: bool, name: str
) -> None:
    """With the quirk content answers 302 to the file on the other host, which serves it keyless."""
    server.video_quirks = VideoQuirks(content_redirect=True, ignore_variant=ignore)
    video_id = server.add_task(timeline=DONE)
    path = f"/v1/videos/{video_id}/content?variant={variant}"
    answer = await call(session, server, "GET", path, allow_redirects=False)
    assert answer.status == 302
    location = answer.headers["Location"]
    assert location.startswith(f"{other_origin(server.url)}/_fake/cdn/{video_id}/{name}?se=")
    assert answer.headers["Location"].split("//")[1].startswith("localhost:")
    async with session.get(location) as response:
        assert response.status == 200
    assert "Authorization" not in server.recorded[-1].headers
    assert server.recorded[-2].headers["Authorization"] == AUTH["Authorization"]  # content is recorded too


@pytest.mark.parametrize(
    ("url", "other"),
    [
        ("http://127.0.0.1:8080", "http://localhost:8080"),
        ("http://localhost:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://127.0.0.1:8080"),
    ],
)
def test_other_origin(url: str, other: str) -> None:
    """The other host name is localhost for 127.0.0.1, and 127.0.0.1 otherwise."""
    assert other_origin(url) == other


def test_public_names() -> None:
    """sora_async.testing exports the quirks and the recorded upload."""
    assert {"VideoQuirks", "UploadedReference"} <= set(sora_async.testing.__all__)
    assert sora_async.testing.VideoQuirks is VideoQuirks


async def test_new_quirks_count_their_cuts_from_zero(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    video_id = server.add_task(timeline=DONE)
    url = f"{server.url}/v1/videos/{video_id}/content"

    async def whole() -> bool:
        received = bytearray()
        async with session.get(url, headers=AUTH) as response:
            try:
                await read_into(response, received)
            except aiohttp.ClientPayloadError:
                return False
        return len(received) == len(sample_file("mp4"))

    server.video_quirks = VideoQuirks(content_cut_after=10, content_cuts=1)
    assert [await whole(), await whole()] == [False, True]
    server.video_quirks = VideoQuirks(content_cut_after=10, content_cuts=1)  # fresh quirks: one cut again
    assert [await whole(), await whole()] == [False, True]


async def test_a_photo_sized_multipart_create_is_accepted(
    server: FakeSoraServer, session: aiohttp.ClientSession
) -> None:
    """aiohttp's server takes 1 MiB by default; an ordinary photo is bigger."""
    form = aiohttp.FormData()
    form.add_field("prompt", "a kite")
    form.add_field("model", "sora-2")
    photo = b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024)
    form.add_field("input_reference", io.BytesIO(photo), filename="photo.jpg", content_type="image/jpeg")
    async with session.post(f"{server.url}/v1/videos", data=form, headers=AUTH) as response:
        assert response.status == 200
        video_id = (await response.json())["id"]
    reference = server.tasks[video_id].input_reference
    assert reference is not None
    assert reference.size == len(photo)
