"""Choosing what to download: generation, variant, timeout and max_bytes, checked before any request."""

from __future__ import annotations

import json
import math
import pathlib
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from sora_async import DownloadError, ResponseDecodeError, SoraClient, Task, TaskStatus, Variant
from sora_async._models import VIDEO_VARIANTS
from sora_async.testing import FakeSoraServer

from .test_download import VideoHost, serve_bytes

KEY = "sk-choices-key-9"


def task_with(payload: Any, task_id: str = "task_gen") -> Task:
    """A SUCCESS task whose nested upstream object is `payload`."""
    return Task(
        task_id=task_id,
        status=TaskStatus.SUCCESS,
        raw_status="SUCCESS",
        data=msgspec.Raw(json.dumps(payload).encode()),
    )


def generation(url: str, size: int) -> dict[str, Any]:
    return {"id": "gen", "encodings": {"source": {"path": url, "size": size}}}


@pytest.fixture
async def client() -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url="https://api.cometapi.com") as c:
        yield c


# --- generation --------------------------------------------------------------


async def test_generation_picks_among_the_videos(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """generation=1 fetches the second video; its file name differs, generation 0 keeps today's name."""
    async with VideoHost(serve_bytes(b"first")) as first, VideoHost(serve_bytes(b"second!")) as second:
        task = task_with(
            {"generations": [generation(first.url("a.mp4"), 5), generation(second.url("b.mp4"), 7)]}
        )
        zero = await client.download(task, tmp_path)
        one = await client.download(task, tmp_path, generation=1)
        assert await client.download_bytes(task, generation=1) == b"second!"
        async with client.stream_video(task, generation=1) as video:
            assert (video.generation, video.size) == (1, 7)
            assert b"".join([chunk async for chunk in video]) == b"second!"
    assert zero.name == "task_gen_source.mp4"
    assert one.name == "task_gen_1_source.mp4"
    assert (zero.read_bytes(), one.read_bytes()) == (b"first", b"second!")


async def test_generation_out_of_range_names_the_count(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """An index past the end is DownloadError saying how many generations there are; nothing is fetched."""
    async with VideoHost(serve_bytes(b"x")) as host:
        task = task_with({"generations": [generation(host.url("a.mp4"), 1), generation(host.url("b"), 1)]})
        with pytest.raises(DownloadError, match="has 2 generations") as caught:
            await client.download(task, tmp_path, generation=2)
        with pytest.raises(DownloadError, match="has 2 generations"):
            await client.download_bytes(task, generation=5)
        with pytest.raises(DownloadError, match="has 2 generations"):
            async with client.stream_video(task, generation=2):
                pass
    assert "indexes 0 to 1" in str(caught.value)
    assert host.headers == []
    assert list(tmp_path.iterdir()) == []


# --- what a succeeded task may hold ----------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"generations": None}, id="generations-null"),
        pytest.param({"generations": []}, id="generations-empty"),
        pytest.param({"status": "succeeded"}, id="generations-missing"),
        pytest.param({"generations": [None]}, id="generation-null"),
    ],
)
async def test_a_success_without_videos_is_a_download_error(
    client: SoraClient, tmp_path: pathlib.Path, payload: Any
) -> None:
    """A SUCCESS task listing no video is DownloadError from every method, not ResponseDecodeError."""
    task = task_with(payload)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.download(task, tmp_path),
        lambda: client.download_bytes(task),
    ]
    for call in calls:
        with pytest.raises(DownloadError, match="lists no generated video"):
            await call()
    with pytest.raises(DownloadError, match="lists no generated video"):
        async with client.stream_video(task):
            pass


@pytest.mark.parametrize(
    "payload",
    [
        {"generations": [{"encodings": "not an object"}]},
        {"generations": "not a list"},
        {"generations": [{"encodings": {"source": {"size": "many"}}}]},
    ],
)
async def test_a_video_object_of_the_wrong_shape(
    client: SoraClient, tmp_path: pathlib.Path, payload: Any
) -> None:
    """A nested object that does not decode is DownloadError, with the ResponseDecodeError as its cause."""
    with pytest.raises(DownloadError) as caught:
        await client.download(task_with(payload), tmp_path)
    assert isinstance(caught.value.__cause__, ResponseDecodeError)


# --- arguments refused before anything is sent ------------------------------


def test_variant_type_matches_the_runtime_names() -> None:
    """The Variant type alias lists exactly the variants accepted at run time."""
    assert typing.get_args(Variant) == VIDEO_VARIANTS


Call = Callable[[SoraClient, pathlib.Path, dict[str, Any]], Awaitable[object]]


async def stream(client: SoraClient, tmp_path: pathlib.Path, options: dict[str, Any]) -> object:
    async with client.stream_video("task_x", **options) as video:
        return [chunk async for chunk in video]


METHODS: dict[str, Call] = {
    "download": lambda client, tmp_path, options: client.download("task_x", tmp_path, **options),
    "download_bytes": lambda client, tmp_path, options: client.download_bytes("task_x", **options),
    "stream_video": stream,
}

BAD_ARGUMENTS = [
    pytest.param({"timeout": 0}, ValueError, id="timeout-0"),
    pytest.param({"timeout": -1}, ValueError, id="timeout-negative"),
    pytest.param({"timeout": math.nan}, ValueError, id="timeout-nan"),
    pytest.param({"timeout": math.inf}, ValueError, id="timeout-inf"),
    pytest.param({"timeout": True}, TypeError, id="timeout-bool"),
    pytest.param({"timeout": "5"}, TypeError, id="timeout-str"),
    pytest.param({"variant": "4k"}, ValueError, id="variant-typo"),
    pytest.param({"variant": None}, ValueError, id="variant-none"),
    pytest.param({"generation": -1}, ValueError, id="generation-negative"),
    pytest.param({"generation": True}, ValueError, id="generation-bool"),
    pytest.param({"generation": 1.0}, TypeError, id="generation-float"),
    pytest.param({"generation": "1"}, TypeError, id="generation-str"),
]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("options", "error"), BAD_ARGUMENTS)
async def test_bad_arguments_are_refused_before_any_request(
    tmp_path: pathlib.Path, method: str, options: dict[str, Any], error: type[Exception]
) -> None:
    """Every download method refuses a bad timeout, variant or generation at the call, sending nothing."""
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url) as client:
        server.add_task("task_x", timeline=[("SUCCESS", "100%")])
        with pytest.raises(error):
            await METHODS[method](client, tmp_path, options)
    assert list(server.recorded) == []
    assert list(tmp_path.iterdir()) == []


def test_stream_video_checks_its_arguments_at_the_call() -> None:
    """stream_video raises at once, before the block is entered (no event loop needed)."""
    client = SoraClient(KEY)
    with pytest.raises(ValueError, match="timeout"):
        client.stream_video("task_x", timeout=0)
    with pytest.raises(ValueError, match="generation"):
        client.stream_video("task_x", generation=-1)


@pytest.mark.parametrize(
    ("max_bytes", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError)]
)
async def test_bad_max_bytes_is_refused(max_bytes: Any, error: type[Exception]) -> None:
    """max_bytes must be a whole number >= 1; nothing is sent otherwise."""
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url) as client:
        with pytest.raises(error, match="max_bytes"):
            await client.download_bytes("task_x", max_bytes=max_bytes)
    assert list(server.recorded) == []
