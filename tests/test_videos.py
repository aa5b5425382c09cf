"""SoraClient.videos, the OpenAI-format surface (/v1/videos), against FakeSoraServer with each quirk on."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import time
from collections.abc import AsyncIterator

import pytest

from sora_async import (
    BadRequestError,
    DownloadError,
    InputReference,
    ModelNotAvailableError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SoraClient,
    SoraError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    VideoNotReadyError,
    WaitTimeoutError,
)
from sora_async.testing import FakeSoraServer, Fault, VideoQuirks, sample_file

from .conftest import eventually

KEY = "sk-videos-key-2026"
FAST = PollPolicy(initial_interval=0.01, max_interval=0.02)
DONE = [("IN_PROGRESS", "50%"), ("SUCCESS", "100%")]
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeSoraServer) -> AsyncIterator[SoraClient]:
    retry = RetryPolicy(initial_delay=0.001, max_delay=0.005)
    async with SoraClient(KEY, base_url=server.url, poll=FAST, retry=retry) as c:
        yield c


def requests_to(server: FakeSoraServer, prefix: str) -> list[dict[str, str]]:
    return [dict(r.headers) for r in server.recorded if r.path.startswith(prefix)]


# --- statuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("quirks", "first"),
    [(VideoQuirks(), "unknown"), (VideoQuirks(leak_not_start=True), "NOT_START")],
)
async def test_unknown_statuses_are_pending_and_each_state_maps(
    server: FakeSoraServer, client: SoraClient, quirks: VideoQuirks, first: str
) -> None:
    server.video_quirks = quirks
    video_id = await client.videos.create("a kite", model="sora-2")
    seen: list[tuple[str, TaskStatus, float | None]] = []
    done = await client.videos.wait_until_done(
        video_id, on_progress=lambda t: seen.append((t.raw_status, t.status, t.percent))
    )
    assert seen[0] == (first, TaskStatus.UNKNOWN, 0.0)
    assert [status for _, status, _ in seen[1:]] == [
        TaskStatus.QUEUED,
        TaskStatus.QUEUED,
        TaskStatus.IN_PROGRESS,
        TaskStatus.IN_PROGRESS,
        TaskStatus.SUCCESS,
    ]
    assert done.format == "openai"
    assert (done.raw_status, done.percent, done.model, done.size) == (
        "completed",
        100.0,
        "sora-2",
        "720x1280",
    )
    assert done.finish_time > 0
    assert done.expires_at > done.finish_time


@pytest.mark.parametrize("without_status", [False, True])
async def test_a_failure_raises_with_the_error_message(
    server: FakeSoraServer, client: SoraClient, without_status: bool
) -> None:
    server.video_quirks = VideoQuirks(failure_without_status=without_status)
    video_id = server.add_task(timeline=[("QUEUED", "20%"), ("FAILURE", "100%")], fail_reason="moderation")
    with pytest.raises(TaskFailedError) as caught:
        await client.videos.wait_until_done(video_id)
    assert caught.value.fail_reason == "moderation"
    task = await client.videos.retrieve(video_id)
    assert task.status is TaskStatus.FAILURE
    assert task.raw_status == ("" if without_status else "failed")


async def test_a_video_stuck_in_progress_ends_at_the_deadline(
    server: FakeSoraServer, client: SoraClient
) -> None:
    video_id = server.add_task(timeline=[("IN_PROGRESS", "50%")])
    with pytest.raises(WaitTimeoutError) as caught:
        await client.videos.wait_until_done(video_id, timeout=0.3)
    assert caught.value.task_id == video_id
    elapsed = caught.value.elapsed
    assert elapsed is not None
    assert 0.25 <= elapsed <= 5.0  # wide: the end comes from the deadline, not from a count


async def test_watch_and_batches_use_the_same_engine(server: FakeSoraServer, client: SoraClient) -> None:
    ok = [server.add_task(timeline=DONE) for _ in range(3)]
    failed = server.add_task(timeline=[("FAILURE", "100%")])
    snapshots = [t.raw_status async for t in client.videos.watch(ok[0])]
    assert snapshots == ["in_progress", "completed"]
    outcomes = await client.videos.wait_many([*ok, failed, "task_missing", "bad id"])
    assert all(isinstance(outcomes[i], Task) for i in ok)
    assert isinstance(outcomes[failed], TaskFailedError)
    assert isinstance(outcomes["task_missing"], TaskNotFoundError)
    assert isinstance(outcomes["bad id"], ValueError)
    seen: list[str] = []
    async with client.videos.as_completed(ok, on_progress=lambda t: seen.append(t.task_id)) as batch:
        assert sorted([task_id async for task_id, _ in batch]) == sorted(ok)
    assert set(seen) == set(ok)


class Recording(PollPolicy):
    """A fast PollPolicy that keeps what each poll of any wait told it."""

    def __init__(self) -> None:
        super().__init__(initial_interval=0.01, max_interval=0.02)
        self.seen: list[bool] = []

    def observe(self, since: float, received_at: float, changed: bool) -> None:
        self.seen.append(changed)


async def test_the_cadence_learner_sees_the_polls_of_both_formats(server: FakeSoraServer) -> None:
    """One policy per client: a CadencePolicy learns the gateway's sweep from both formats' polls."""
    policy = Recording()
    async with SoraClient(KEY, base_url=server.url, poll=policy) as client:
        reverse = server.add_task(timeline=DONE)
        await client.wait_until_done(reverse)
        after_reverse = len(policy.seen)
        video = server.add_task(timeline=DONE)
        await client.videos.wait_until_done(video)
    assert policy.seen[:after_reverse] == [True]  # the second poll saw the change (the first has no before)
    assert policy.seen[after_reverse:] == [True]  # and the video's wait told the same policy about its own


async def test_both_formats_share_one_budget(server: FakeSoraServer) -> None:
    """With max_concurrency=1, a video poll waits for a reverse-format request's turn."""
    video = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(Fault(200, {"code": "success", "data": None}, delay=0.3), route="create")
    async with SoraClient(KEY, base_url=server.url, max_concurrency=1, max_retries=0) as client:
        create = asyncio.create_task(client.create_video("a kite"))
        await eventually(lambda: server.requests["create"] == 1)  # the create holds the one slot now
        started = time.monotonic()
        await client.videos.retrieve(video)
        assert time.monotonic() - started >= 0.2  # it waited for the create's slot
        with pytest.raises(SoraError):
            await create


# --- creating ----------------------------------------------------------------


async def test_create_sends_json_with_the_options(server: FakeSoraServer, client: SoraClient) -> None:
    video_id = await client.videos.create(
        "a kite", model="sora-2-pro", seconds=12, size="1792x1024", extra_body={"style": "anime"}
    )
    (sent,) = [r for r in server.recorded if r.method == "POST" and r.path == "/v1/videos"]
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body) == {
        "prompt": "a kite",
        "model": "sora-2-pro",
        "seconds": "12",
        "size": "1792x1024",
        "style": "anime",
    }
    task = await client.videos.retrieve(video_id)
    assert (task.model, task.seconds, task.size) == ("sora-2-pro", "12", "1792x1024")


@pytest.mark.parametrize("kind", ["path", "bytes", "file"])
async def test_an_input_reference_goes_as_multipart_with_its_sniffed_type(
    server: FakeSoraServer, client: SoraClient, tmp_path: pathlib.Path, kind: str
) -> None:
    image = tmp_path / "start.png"
    image.write_bytes(PNG)
    references: dict[str, InputReference] = {"path": image, "bytes": PNG, "file": io.BytesIO(PNG)}
    reference = references[kind]
    video_id = await client.videos.create("a kite", model="sora-2", input_reference=reference)
    received = server.tasks[video_id].input_reference
    assert received is not None
    assert received.content_type == "image/png"
    assert received.size == len(PNG)
    assert received.filename == ("start.png" if kind == "path" else "input_reference")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"model": ""}, ValueError),
        ({"model": "sora-2", "seconds": 0}, ValueError),
        ({"model": "sora-2", "seconds": "eight"}, ValueError),
        ({"model": "sora-2", "seconds": True}, TypeError),
        ({"model": "sora-2", "size": "big"}, ValueError),
        ({"model": "sora-2", "input_reference": 12}, TypeError),
        ({"model": "sora-2", "input_reference": io.StringIO("text")}, TypeError),
        ({"model": "sora-2", "input_reference": "/no/such/image.png"}, ValueError),
        ({"model": "sora-2", "extra_body": {"model": "x"}}, ValueError),
    ],
)
async def test_bad_arguments_send_nothing(
    server: FakeSoraServer, client: SoraClient, arguments: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await client.videos.create("a kite", **arguments)  # type: ignore[arg-type]
    assert server.requests["create"] == 0


async def test_the_gateways_validation_code_is_kept(server: FakeSoraServer, client: SoraClient) -> None:
    """sora-2 refuses the pro-only sizes with invalid_size (PROTOCOL.md, Part 2)."""
    with pytest.raises(BadRequestError) as caught:
        await client.videos.create("a kite", model="sora-2", size="1792x1024")
    assert caught.value.code == "invalid_size"
    assert server.requests["create"] == 1


async def test_a_model_without_a_channel_is_final(server: FakeSoraServer, client: SoraClient) -> None:
    """new-api's model_not_found comes with a 503, yet nothing is resent or waited for."""
    server.video_quirks = VideoQuirks(unavailable_models=frozenset({"sora-2"}))
    with pytest.raises(ModelNotAvailableError) as caught:
        await client.videos.generate("a kite", model="sora-2")
    assert caught.value.retryable is False
    assert caught.value.code == "model_not_found"
    assert server.requests["create"] == 1


async def test_a_create_that_may_have_arrived_is_never_resent(
    server: FakeSoraServer, client: SoraClient
) -> None:
    server.inject(Fault(status=502), route="create")
    with pytest.raises(ServerError):
        await client.videos.create("a kite", model="sora-2")
    assert server.requests["create"] == 1


async def test_the_rewritten_429_is_a_rate_limit_and_a_poll_goes_on(
    server: FakeSoraServer, client: SoraClient
) -> None:
    server.video_quirks = VideoQuirks(chinese_429=True)
    video_id = server.add_task(timeline=DONE)
    server.inject(Fault.rate_limited(retry_after=None), route="query", times=2)
    done = await client.videos.wait_until_done(video_id)
    assert done.status is TaskStatus.SUCCESS
    server.inject(Fault.rate_limited(retry_after=None), route="query", times=10)
    with pytest.raises(RateLimitError) as caught:
        await client.videos.retrieve(video_id)
    assert "饱和" in caught.value.message


async def test_generate_names_the_video_it_created(server: FakeSoraServer, client: SoraClient) -> None:
    server.script_next([("QUEUED", "20%"), ("FAILURE", "100%")], fail_reason="moderation")
    with pytest.raises(TaskFailedError) as caught:
        await client.videos.generate("a kite", model="sora-2")
    assert caught.value.task_id in server.tasks


async def test_remix_starts_a_new_video_from_a_completed_one(
    server: FakeSoraServer, client: SoraClient
) -> None:
    source = server.add_task(timeline=[("SUCCESS", "100%")])
    remix = await client.videos.remix(source, "make it blue")
    assert remix != source
    task = await client.videos.retrieve(remix)
    assert task.remixed_from_video_id == source
    unfinished = server.add_task(timeline=[("QUEUED", "20%")])
    with pytest.raises(BadRequestError):
        await client.videos.remix(unfinished, "make it blue")


# --- errors of the surface ---------------------------------------------------


async def test_an_unknown_id_is_not_found_on_retrieve_and_on_content(client: SoraClient) -> None:
    with pytest.raises(TaskNotFoundError) as on_retrieve:
        await client.videos.retrieve("task_nope")
    assert on_retrieve.value.status_code == 400
    with pytest.raises(TaskNotFoundError) as on_content:
        await client.videos.download_bytes("task_nope")
    assert on_content.value.status_code == 404


async def test_content_before_completion_is_not_ready(server: FakeSoraServer, client: SoraClient) -> None:
    video_id = server.add_task(timeline=[("QUEUED", "20%")])
    with pytest.raises(VideoNotReadyError) as caught:
        await client.videos.download_bytes(video_id)
    assert "QUEUED" in caught.value.message
    with pytest.raises(DownloadError):  # a snapshot that has not succeeded: nothing is sent
        await client.videos.download_bytes(await client.videos.retrieve(video_id))


# --- files ---------------------------------------------------------------------


async def test_content_carries_the_key_to_the_api_only(
    server: FakeSoraServer, client: SoraClient, tmp_path: pathlib.Path
) -> None:
    video_id = server.add_task(timeline=[("SUCCESS", "100%")])
    path = await client.videos.download(video_id, tmp_path)
    assert path == tmp_path / f"{video_id}_video.mp4"
    assert path.read_bytes() == sample_file("mp4")
    (content,) = requests_to(server, f"/v1/videos/{video_id}/content")
    assert content["Authorization"] == f"Bearer {KEY}"


async def test_a_redirect_to_another_host_is_followed_without_the_key(
    server: FakeSoraServer, client: SoraClient
) -> None:
    server.video_quirks = VideoQuirks(content_redirect=True, video_url=True)
    video_id = server.add_task(timeline=[("SUCCESS", "100%")])
    assert await client.videos.download_bytes(video_id) == sample_file("mp4")
    cdn = requests_to(server, "/_fake/cdn/")
    assert len(cdn) == 1
    assert "Authorization" not in cdn[0]
    assert KEY not in json.dumps(cdn[0])
    task = await client.videos.retrieve(video_id)
    assert task.video_url is not None
    assert "/_fake/cdn/" in task.video_url


async def test_a_cut_body_is_tried_again_a_bounded_number_of_times(
    server: FakeSoraServer, client: SoraClient, tmp_path: pathlib.Path
) -> None:
    video_id = server.add_task(timeline=[("SUCCESS", "100%")])
    server.video_quirks = VideoQuirks(content_cut_after=1000, content_cuts=2)
    assert await client.videos.download_bytes(video_id) == sample_file("mp4")
    assert len(requests_to(server, f"/v1/videos/{video_id}/content")) == 3
    server.video_quirks = VideoQuirks(content_cut_after=1000, content_cuts=10)
    with pytest.raises(DownloadError) as caught:
        await client.videos.download(video_id, tmp_path / "clip.mp4")
    assert caught.value.retryable
    assert len(requests_to(server, f"/v1/videos/{video_id}/content")) == 3 + 3
    assert list(tmp_path.iterdir()) == []  # nothing left under the name, no temporary file


async def test_a_thumbnail_answered_with_a_video_says_the_variant_was_ignored(
    server: FakeSoraServer, client: SoraClient
) -> None:
    video_id = server.add_task(timeline=[("SUCCESS", "100%")])
    assert await client.videos.download_bytes(video_id, variant="thumbnail") == sample_file("jpg")
    server.video_quirks = VideoQuirks(ignore_variant=True)
    with pytest.raises(DownloadError, match="ignored the variant"):
        await client.videos.download_bytes(video_id, variant="thumbnail")


async def test_a_stream_reads_the_content(server: FakeSoraServer, client: SoraClient) -> None:
    video_id = server.add_task(timeline=[("SUCCESS", "100%")])
    async with client.videos.stream_video(video_id) as video:
        body = b"".join([chunk async for chunk in video])
    assert body == sample_file("mp4")
    with pytest.raises(ValueError, match="variant"):
        client.videos.stream_video(video_id, variant="source")  # type: ignore[arg-type]


# --- found by the review ---------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault(status=502), Fault.rate_limited(retry_after=None)])
async def test_a_passing_failure_of_content_is_tried_again(
    server: FakeSoraServer, client: SoraClient, fault: Fault
) -> None:
    video_id = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(fault, route="content", times=2)
    assert await client.videos.download_bytes(video_id) == sample_file("mp4")
    assert server.requests["content"] == 3
    server.inject(fault, route="content", times=3)
    with pytest.raises(SoraError) as caught:
        await client.videos.download_bytes(video_id)
    assert caught.value.retryable
    assert server.requests["content"] == 6


@pytest.mark.parametrize(
    ("reference", "error", "words"),
    [
        (b"", ValueError, "empty"),
        (io.BytesIO(b""), ValueError, "empty"),
        (b"plain text, not an image", ValueError, "not an image"),
        (io.BytesIO(b"x" * (50 * 1024 * 1024 + 1)), ValueError, "over"),
        (io.StringIO("text"), TypeError, "must return bytes"),
    ],
    ids=["empty bytes", "file at its end", "text", "too large", "text file object"],
)
async def test_an_input_reference_that_cannot_be_an_image_sends_nothing(
    server: FakeSoraServer, client: SoraClient, reference: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        await client.videos.create("a kite", model="sora-2", input_reference=reference)  # type: ignore[arg-type]
    assert server.requests["create"] == 0


async def test_reference_names_are_made_safe_and_views_are_accepted(
    server: FakeSoraServer, client: SoraClient
) -> None:
    named = io.BytesIO(PNG)
    named.name = "photos/my\r\nphoto é.png"
    video_id = await client.videos.create("a kite", model="sora-2", input_reference=named)
    received = server.tasks[video_id].input_reference
    assert received is not None
    assert received.filename == "my_photo_.png"
    for view in (bytearray(PNG), memoryview(PNG)):
        assert await client.videos.create("a kite", model="sora-2", input_reference=view)


@pytest.mark.parametrize("seconds", ["²", "٨", "08x", 3601, 0])
async def test_seconds_are_ascii_whole_numbers(
    server: FakeSoraServer, client: SoraClient, seconds: object
) -> None:
    with pytest.raises(ValueError, match="seconds must be a whole number"):
        await client.videos.create("a kite", model="sora-2", seconds=seconds)  # type: ignore[arg-type]
    assert server.requests["create"] == 0


async def test_extra_body_goes_as_json_values_and_cannot_replace_an_argument(
    server: FakeSoraServer, client: SoraClient
) -> None:
    await client.videos.create("a kite", model="sora-2", extra_body={"n": 2, "metadata": {"a": 1}, "x": None})
    (sent,) = [r for r in server.recorded if r.method == "POST" and r.path == "/v1/videos"]
    assert json.loads(sent.body) == {
        "prompt": "a kite",
        "model": "sora-2",
        "n": 2,
        "metadata": {"a": 1},
        "x": None,
    }
    for name in ("seconds", "size"):
        with pytest.raises(ValueError, match="its own argument"):
            await client.videos.create("a kite", model="sora-2", extra_body={name: "12"})


async def test_a_rewritten_429_on_create_is_never_resent(server: FakeSoraServer, client: SoraClient) -> None:
    """This surface rewrites every 429, so one cannot tell a create turned away from one relayed."""
    server.video_quirks = VideoQuirks(chinese_429=True)
    server.inject(Fault.rate_limited(retry_after="0"), route="create")
    with pytest.raises(RateLimitError):
        await client.videos.create("a kite", model="sora-2")
    assert server.requests["create"] == 1


@pytest.mark.parametrize("fault", [Fault.reset(), Fault(status=200, body={"id": "late"}, delay=5)])
@pytest.mark.parametrize("multipart", [False, True])
async def test_a_create_cut_or_too_slow_is_not_resent(
    server: FakeSoraServer, fault: Fault, multipart: bool
) -> None:
    server.inject(fault, route="create")
    async with SoraClient(KEY, base_url=server.url, timeout=0.5, max_retries=3) as client:
        with pytest.raises(SoraError):
            await client.videos.create("a kite", model="sora-2", input_reference=PNG if multipart else None)
    assert server.requests["create"] == 1


async def test_a_task_of_one_format_is_refused_by_the_other(
    server: FakeSoraServer, client: SoraClient
) -> None:
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    reverse, video = await client.get_task(done), await client.videos.retrieve(done)
    with pytest.raises(ValueError, match=r"client\.download, not client\.videos\.download"):
        await client.videos.download_bytes(reverse)
    with pytest.raises(ValueError, match=r"client\.videos\.download, not client\.download"):
        await client.download_bytes(video)
    assert server.requests["content"] == 0


async def test_an_unknown_status_for_ever_ends_at_the_deadline(
    server: FakeSoraServer, client: SoraClient
) -> None:
    video_id = server.add_task(timeline=[("NOT_START", "0%")])
    with pytest.raises(WaitTimeoutError) as caught:
        await client.videos.wait_until_done(video_id, timeout=0.3)
    assert caught.value.last_task is not None
    assert caught.value.last_task.raw_status == "unknown"


async def test_cancelling_a_wait_and_a_download_stops_them(
    server: FakeSoraServer, client: SoraClient, tmp_path: pathlib.Path
) -> None:
    video_id = server.add_task(timeline=[("IN_PROGRESS", "50%")])
    wait = asyncio.create_task(client.videos.wait_until_done(video_id))
    await eventually(lambda: server.polls(video_id) > 1)
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    polls = server.polls(video_id)
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(Fault(status=200, delay=30), route="content")
    download = asyncio.create_task(client.videos.download(done, tmp_path / "clip.mp4"))
    await eventually(lambda: server.requests["content"] == 1)
    download.cancel()
    with pytest.raises(asyncio.CancelledError):
        await download
    assert list(tmp_path.iterdir()) == []
    assert server.polls(video_id) == polls  # nothing more was sent for the cancelled wait


async def test_generate_names_the_videos_method_to_wait_again(
    server: FakeSoraServer, client: SoraClient
) -> None:
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    with pytest.raises(WaitTimeoutError) as caught:
        await client.videos.generate("a kite", model="sora-2", timeout=0.3)
    notes = getattr(caught.value, "__notes__", [])
    assert any(f"client.videos.wait_until_done('{caught.value.task_id}')" in note for note in notes)


@pytest.mark.parametrize("code", ["missing_model", "invalid_request", "invalid_seconds"])
async def test_every_validation_code_is_kept(server: FakeSoraServer, client: SoraClient, code: str) -> None:
    body = {"error": {"message": "refused", "type": "invalid_request_error", "code": code}}
    server.inject(Fault(status=400, body=body), route="create")
    with pytest.raises(BadRequestError) as caught:
        await client.videos.create("a kite", model="sora-2")
    assert caught.value.code == code


async def test_a_content_answer_that_is_a_page_is_not_saved(
    server: FakeSoraServer, client: SoraClient, tmp_path: pathlib.Path
) -> None:
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(Fault(status=200, body="<html>busy</html>", content_type="text/html"), route="content")
    with pytest.raises(DownloadError, match="text/html"):
        await client.videos.download(done, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []
