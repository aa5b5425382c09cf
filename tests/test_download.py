"""Downloads: atomic, size-checked, safely named, and never sending the key to the video host."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web

from sora_async import DownloadError, SoraClient, Task, TaskStatus, URLExpiredError
from sora_async.testing import FakeSoraServer, sample_file

from .conftest import FAST_POLL, eventually

KEY = "sk-download-secret-77"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VideoHost:
    """A second loopback server standing in for the CDN; it records request headers."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        return await self.handler(request)

    async def __aenter__(self) -> VideoHost:
        app = web.Application()
        app.router.add_get("/{name:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def url(self, name: str) -> str:
        assert self.runner is not None
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}/{name}"


def finished_task(task_id: str = "task_dl", **encodings: Any) -> Task:
    """A SUCCESS task whose generation has the given encodings ({variant: (url, size)})."""
    generation = {
        "id": "gen_1",
        "url": encodings.pop("url", None),
        "encodings": {name: {"path": url, "size": size} for name, (url, size) in encodings.items()},
    }
    payload = json.dumps({"status": "succeeded", "generations": [generation]}).encode()
    return Task(task_id=task_id, status=TaskStatus.SUCCESS, raw_status="SUCCESS", data=msgspec.Raw(payload))


def serve_bytes(body: bytes, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type="video/mp4")

    return handler


@pytest.fixture
async def client() -> AsyncIterator[SoraClient]:
    async with SoraClient(KEY, base_url="https://api.cometapi.com") as c:
        yield c


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_download_streams_to_folder_without_the_key(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """The file lands in the folder under a name from task id and variant; the host never sees the key."""
    body = b"\x00\x01video" * 5000
    async with VideoHost(serve_bytes(body)) as host:
        task = finished_task(source=(host.url("a/b/source.mp4?se=2099-01-01T00%3A00%3A00Z&sig=x"), len(body)))
        seen: list[tuple[int, int | None]] = []
        path = await client.download(
            task, tmp_path, on_progress=lambda done, total: seen.append((done, total))
        )
    assert path == tmp_path / "task_dl_source.mp4"
    assert path.read_bytes() == body
    assert leftovers(tmp_path) == ["task_dl_source.mp4"]
    assert all("Authorization" not in headers for headers in host.headers)
    assert all(KEY not in value for headers in host.headers for value in headers.values())
    assert seen[-1] == (len(body), len(body))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


async def test_download_to_a_file_path(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """A file destination is written exactly there, parents created."""
    async with VideoHost(serve_bytes(b"abc")) as host:
        path = await client.download(
            finished_task(source=(host.url("v.mp4"), 3)), tmp_path / "out" / "mine.mp4"
        )
    assert path == tmp_path / "out" / "mine.mp4"
    assert path.read_bytes() == b"abc"


async def test_hostile_task_id_cannot_escape_the_folder(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """A task id full of path syntax still names a file inside the chosen folder."""
    folder = tmp_path / "videos"
    folder.mkdir()
    async with VideoHost(serve_bytes(b"xyz")) as host:
        task = finished_task("../../etc/passwd\x00/..", source=(host.url("../../x.sh"), 3))
        path = await client.download(task, folder)
    assert path.parent == folder
    assert path.resolve().parent == folder.resolve()
    assert leftovers(tmp_path) == ["videos"]
    assert path.name.endswith("_source.mp4")


@pytest.mark.parametrize(("served", "announced"), [(b"x" * 100, 200), (b"x" * 300, 200)])
async def test_size_mismatch_leaves_no_file(
    client: SoraClient, tmp_path: pathlib.Path, served: bytes, announced: int
) -> None:
    """A body shorter or longer than the task's size raises DownloadError and leaves nothing."""
    async with VideoHost(serve_bytes(served)) as host:
        with pytest.raises(DownloadError, match="bytes"):
            await client.download(finished_task(source=(host.url("v.mp4"), announced)), tmp_path)
    assert len(leftovers(tmp_path)) == 0


async def cut_mid_body(request: web.Request) -> web.StreamResponse:
    """A video host that announces 200,000 bytes, sends 70,000 and drops the connection."""
    response = web.StreamResponse(headers={"Content-Length": "200000"})
    await response.prepare(request)
    await response.write(b"x" * 70000)
    assert request.transport is not None
    request.transport.close()
    return response


async def test_connection_cut_mid_body_leaves_no_file(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """A host that drops the connection halfway raises DownloadError; no partial file remains."""
    async with VideoHost(cut_mid_body) as host:
        with pytest.raises(DownloadError) as caught:
            await client.download(finished_task(source=(host.url("v.mp4"), None)), tmp_path)
    assert caught.value.retryable
    assert len(leftovers(tmp_path)) == 0


async def test_cancelled_download_leaves_no_file(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """Cancelling mid-stream removes the temporary file and never creates the final one."""
    stall = asyncio.Event()

    async def half_then_stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "200000"})
        await response.prepare(request)
        await response.write(b"x" * 100000)
        await stall.wait()
        return response

    async with VideoHost(half_then_stall) as host:
        downloading = asyncio.create_task(
            client.download(finished_task(source=(host.url("v.mp4"), 200000)), tmp_path)
        )
        # The temporary file has data (the destination check's probe may come and go meanwhile).
        await eventually(lambda: any(p.stat().st_size > 0 for p in tmp_path.glob("*.part")))
        assert all(name.endswith(".part") for name in leftovers(tmp_path))
        downloading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await downloading
        stall.set()
    assert len(leftovers(tmp_path)) == 0


async def test_expired_url_says_so(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """A 403 from the video host is URLExpiredError, naming the expiry and suggesting get_task."""
    async with VideoHost(serve_bytes(b"AccessDenied", status=403)) as host:
        task = finished_task(source=(host.url("v.mp4?se=2025-01-20T14%3A28%3A09Z&sig=x"), 10))
        with pytest.raises(URLExpiredError) as caught:
            await client.download(task, tmp_path)
    message = str(caught.value)
    assert "expired at 2025-01-20 14:28" in message
    assert "get_task" in message
    assert isinstance(caught.value, DownloadError)
    assert len(leftovers(tmp_path)) == 0


async def test_variant_falls_back_to_nearest(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """Asking for source when only md exists downloads md; an absent image variant is an error."""
    async with VideoHost(serve_bytes(b"md!")) as host:
        task = finished_task(md=(host.url("md.mp4"), 3))
        path = await client.download(task, tmp_path)
        assert path.name == "task_dl_md.mp4"
        with pytest.raises(DownloadError, match="thumbnail"):
            await client.download(task, tmp_path, variant="thumbnail")
        with pytest.raises(ValueError, match="variant"):
            await client.download(task, tmp_path, variant="4k")  # type: ignore[arg-type]  # the typo mypy now catches


async def test_unfinished_task_cannot_be_downloaded(client: SoraClient, tmp_path: pathlib.Path) -> None:
    """A task that has not succeeded raises DownloadError before any request."""
    task = Task(task_id="t", status=TaskStatus.QUEUED, raw_status="QUEUED")
    with pytest.raises(DownloadError, match="no video yet"):
        await client.download(task, tmp_path)


async def test_download_by_id_from_fake_server(tmp_path: pathlib.Path) -> None:
    """By task id against FakeSoraServer: a real MP4 whose size matches the task, even after a wait."""
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url, poll=FAST_POLL) as c:
        task_id = server.add_task()
        done = await c.wait_until_done(task_id)
        path = await c.download(done, tmp_path / "clip.mp4")
        thumb = await c.download(task_id, tmp_path, variant="thumbnail")
    assert path.read_bytes() == sample_file("mp4")
    assert path.read_bytes()[4:8] == b"ftyp"
    assert thumb.name == f"{task_id}_thumbnail.jpg"
    assert thumb.read_bytes()[:2] == b"\xff\xd8"
    cdn = [r for r in server.recorded if r.path.startswith("/_fake/cdn/")]
    assert len(cdn) == 2
    assert all("Authorization" not in r.headers for r in cdn)
