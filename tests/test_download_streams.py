"""Downloads to memory and to an async stream: a file's checks, and the connection closed on exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

import sora_async._download as download_module
from sora_async import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    ClientClosedError,
    DownloadError,
    SoraClient,
    Task,
    URLExpiredError,
    VideoStream,
)
from sora_async.testing import FakeSoraServer, sample_file

from .test_download import VideoHost, cut_mid_body, finished_task, serve_bytes

KEY = "sk-stream-key-5"


async def drain(client: SoraClient, task: Task) -> bytes:
    """Read a whole stream_video."""
    async with client.stream_video(task) as video:
        return b"".join([chunk async for chunk in video])


@pytest.fixture
async def client() -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url="https://api.cometapi.com") as c:
        yield c


async def test_bytes_and_stream_from_the_fake_server() -> None:
    """By task id: download_bytes and stream_video give the fake's MP4 and JPEG, without the key."""
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url) as client:
        task_id = server.add_task(timeline=[("SUCCESS", "100%")])
        video = await client.download_bytes(task_id)
        async with client.stream_video(task_id, variant="thumbnail") as stream:
            assert isinstance(stream, VideoStream)
            chunks = [chunk async for chunk in stream]
            assert (stream.task_id, stream.variant, stream.generation) == (task_id, "thumbnail", 0)
            assert stream.received == len(sample_file("jpg"))
    assert video == sample_file("mp4")
    assert b"".join(chunks) == sample_file("jpg")
    cdn = [r for r in server.recorded if r.path.startswith("/_fake/cdn/")]
    assert len(cdn) == 2
    assert all("Authorization" not in r.headers for r in cdn)


def test_default_max_bytes_is_256_mib() -> None:
    """The documented default limit of download_bytes."""
    assert DEFAULT_MAX_DOWNLOAD_BYTES == 256 * 1024 * 1024


async def test_chunks_are_at_most_64_kib(client: SoraClient) -> None:
    """A 300 KB body arrives in several chunks of at most 64 KiB, in order, sizes counted."""
    body = bytes(range(256)) * 1200
    async with (
        VideoHost(serve_bytes(body)) as host,
        client.stream_video(finished_task(source=(host.url("v.mp4"), len(body)))) as video,
    ):
        assert video.size == len(body)
        chunks = [chunk async for chunk in video]
    assert b"".join(chunks) == body
    assert max(map(len, chunks)) <= download_module.CHUNK_SIZE == 64 * 1024


@pytest.mark.parametrize(("served", "announced"), [(b"x" * 100, 200), (b"x" * 300, 200)])
async def test_size_mismatch_is_an_error_for_bytes_and_stream(
    client: SoraClient, served: bytes, announced: int
) -> None:
    """A body shorter or longer than the task's size is DownloadError from both, not a short result."""
    async with VideoHost(serve_bytes(served)) as host:
        task = finished_task(source=(host.url("v.mp4"), announced))
        with pytest.raises(DownloadError, match="bytes"):
            await client.download_bytes(task)
        with pytest.raises(DownloadError, match="bytes"):
            await drain(client, task)


async def test_a_short_body_without_a_size_still_fails(client: SoraClient) -> None:
    """A body cut before its Content-Length is a retryable DownloadError from the stream."""
    async with VideoHost(cut_mid_body) as host:
        with pytest.raises(DownloadError) as caught:
            await client.download_bytes(finished_task(source=(host.url("v.mp4"), None)))
    assert caught.value.retryable


async def test_max_bytes_refuses_an_announced_size_before_the_body(client: SoraClient) -> None:
    """A file announced as larger than max_bytes is refused as soon as the answer's headers arrive."""
    async with VideoHost(serve_bytes(b"y" * 5000)) as host:
        with pytest.raises(DownloadError, match="max_bytes=1000"):
            await client.download_bytes(finished_task(source=(host.url("v.mp4"), 5000)), max_bytes=1000)
        with pytest.raises(DownloadError, match="max_bytes=1000"):
            await client.download_bytes(finished_task(source=(host.url("v.mp4"), None)), max_bytes=1000)


async def test_max_bytes_stops_an_unannounced_body_as_it_passes(client: SoraClient) -> None:
    """With no size from the task nor Content-Length, reading stops at the limit, not at the end."""
    sent_all = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length
        await response.prepare(request)
        for _ in range(1000):  # 64 MB if nobody stopped reading
            await response.write(b"z" * 65536)
        sent_all.set()
        return response

    async with VideoHost(endless) as host:
        with pytest.raises(DownloadError, match="max_bytes=100000"):
            await client.download_bytes(finished_task(source=(host.url("v.mp4"), None)), max_bytes=100_000)
    assert not sent_all.is_set()


async def test_leaving_the_block_closes_the_connection(client: SoraClient) -> None:
    """Leaving stream_video's block after one chunk closes the connection at once, and the stream."""
    stall = asyncio.Event()
    hung_up = asyncio.Event()

    async def half_then_stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "200000"})
        await response.prepare(request)
        await response.write(b"x" * 100000)
        try:
            await stall.wait()
        finally:
            hung_up.set()  # the server cancels this handler when the client hangs up
        return response

    async with VideoHost(half_then_stall) as host:
        async with client.stream_video(finished_task(source=(host.url("v.mp4"), 200000))) as video:
            first = await video.__anext__()
        await asyncio.wait_for(hung_up.wait(), timeout=5)
        assert not stall.is_set()
        with pytest.raises(RuntimeError, match="closed"):
            await video.__anext__()
    assert first


async def test_an_error_in_the_block_closes_the_connection_and_propagates(client: SoraClient) -> None:
    """The caller's own exception leaves the block unchanged, and the connection is closed."""
    hung_up = asyncio.Event()

    async def stall_forever(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "10"})
        await response.prepare(request)
        try:
            await asyncio.Event().wait()
        finally:
            hung_up.set()
        return response

    async with VideoHost(stall_forever) as host:
        with pytest.raises(KeyError):
            async with client.stream_video(finished_task(source=(host.url("v.mp4"), 10))):
                raise KeyError("the caller's own")
        await asyncio.wait_for(hung_up.wait(), timeout=5)


async def test_expired_url_on_entering_the_stream(client: SoraClient) -> None:
    """A 403 from the video host is URLExpiredError when the block is entered."""
    async with VideoHost(serve_bytes(b"AccessDenied", status=403)) as host:
        with pytest.raises(URLExpiredError):
            async with client.stream_video(finished_task(source=(host.url("v.mp4"), 10))):
                pytest.fail("the block must not run")
        with pytest.raises(URLExpiredError):
            await client.download_bytes(finished_task(source=(host.url("v.mp4"), 10)))


async def test_server_error_from_the_video_host_is_retryable(client: SoraClient) -> None:
    """A 5xx from the video host is a retryable DownloadError; a 404 is not retryable."""
    async with VideoHost(serve_bytes(b"oops", status=503)) as bad, VideoHost(serve_bytes(b"", 404)) as gone:
        with pytest.raises(DownloadError, match="HTTP 503") as unavailable:
            await client.download_bytes(finished_task(source=(bad.url("v.mp4"), 10)))
        with pytest.raises(DownloadError, match="HTTP 404") as missing:
            await client.download_bytes(finished_task(source=(gone.url("v.mp4"), 10)))
    assert unavailable.value.retryable
    assert not missing.value.retryable


async def test_closing_the_client_ends_a_stream_with_client_closed_error() -> None:
    """aclose() during a stream makes the next read raise ClientClosedError, not a network error."""
    stall = asyncio.Event()

    async def half_then_stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "200000"})
        await response.prepare(request)
        await response.write(b"x" * 100000)
        await stall.wait()
        return response

    client = SoraClient(KEY, base_url="https://api.cometapi.com")
    async with VideoHost(half_then_stall) as host:
        stream = client.stream_video(finished_task(source=(host.url("v.mp4"), 200000)))
        async with stream as video:
            await video.__anext__()
            await client.aclose()
            with pytest.raises(ClientClosedError):
                await video.__anext__()
        stall.set()
