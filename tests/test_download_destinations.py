"""Download destinations: only regular files are ever replaced; a bad one fails before the transfer."""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import socket
import stat
import time
from collections.abc import AsyncIterator

import pytest

from sora_async import DownloadError, SoraClient, Task, check_destination
from sora_async.testing import FakeSoraServer, sample_file

from .test_download import VideoHost, finished_task, serve_bytes

KEY = "sk-destination-key-42"
VIDEO = sample_file("mp4")


class Fake:
    """A FakeSoraServer, a client of it, and one finished task."""

    def __init__(self, server: FakeSoraServer, client: SoraClient, task: Task) -> None:
        self.server = server
        self.client = client
        self.task = task

    @property
    def cdn_requests(self) -> int:
        """Requests that reached the fake video host."""
        return video_fetches(self.server)


def video_fetches(server: FakeSoraServer) -> int:
    """Requests that reached the fake video host of `server`."""
    return sum(1 for r in server.recorded if r.path.startswith("/_fake/cdn/"))


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url) as client:
        task = await client.get_task(server.add_task("task_dest", timeline=[("SUCCESS", "100%")]))
        yield Fake(server, client, task)


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- things that are not regular files --------------------------------------


async def test_dev_null_is_written_into_never_replaced(fake: Fake) -> None:
    """/dev/null stays the same character device: the video is streamed into it."""
    before = os.stat("/dev/null")
    assert stat.S_ISCHR(before.st_mode)
    path = await fake.client.download(fake.task, "/dev/null")
    after = os.stat("/dev/null")
    assert path == pathlib.Path("/dev/null")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert fake.cdn_requests == 1
    assert not any(name.startswith(".null.") for name in os.listdir("/dev"))


async def test_a_character_device_of_our_own_is_kept(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A null device made in a test folder is written into and is still a device afterwards."""
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no permission to create a device node here")
    await fake.client.download(fake.task, device)
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert leftovers(tmp_path) == ["null"]


async def test_a_write_error_on_a_device_is_a_download_error(fake: Fake) -> None:
    """/dev/full fails every write (ENOSPC, even for root): DownloadError with the OSError as cause."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(DownloadError, match="/dev/full") as caught:
        await fake.client.download(fake.task, "/dev/full")
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def read_all(path: pathlib.Path) -> bytes:
    with open(path, "rb") as pipe:
        return pipe.read()


async def test_fifo_is_written_into_for_its_reader(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A named pipe gets the whole video through it, and stays a named pipe."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reading = asyncio.create_task(asyncio.to_thread(read_all, fifo))
    path = await fake.client.download(fake.task, fifo)
    assert await reading == VIDEO
    assert path == fifo
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == ["pipe"]


async def test_fifo_without_a_reader_times_out_before_the_transfer(
    fake: Fake, tmp_path: pathlib.Path
) -> None:
    """With no reader, the wait for one ends with the timeout, and the video host is never asked."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DownloadError, match="no reader"):
        await fake.client.download(fake.task, fifo, timeout=0.2)
    assert fake.cdn_requests == 0
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


async def test_unix_socket_is_refused(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A socket is refused with DownloadError before the transfer, and left alone."""
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        with pytest.raises(DownloadError, match="socket"):
            await fake.client.download(fake.task, path)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert fake.cdn_requests == 0


async def test_symlink_to_a_file_is_written_through(fake: Fake, tmp_path: pathlib.Path) -> None:
    """The link's target is replaced atomically in its own folder; the link stays the same link."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    (there / "real.mp4").write_bytes(b"old")
    link = here / "clip.mp4"
    link.symlink_to("../there/real.mp4")
    path = await fake.client.download(fake.task, link)
    assert path == link
    assert link.is_symlink()
    assert os.readlink(link) == "../there/real.mp4"
    assert (there / "real.mp4").read_bytes() == VIDEO
    assert leftovers(here) == ["clip.mp4"]
    assert leftovers(there) == ["real.mp4"]


async def test_symlink_to_a_folder_is_that_folder(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A link to a folder is a folder: the file lands inside the target, the link stays."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "videos"
    link.symlink_to(real)
    path = await fake.client.download(fake.task, link)
    assert path == link / "task_dest_source.mp4"
    assert link.is_symlink()
    assert (real / "task_dest_source.mp4").read_bytes() == VIDEO


async def test_dangling_symlink_is_refused(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A link to nothing is refused before the transfer; neither it nor its target is touched."""
    link = tmp_path / "clip.mp4"
    link.symlink_to(tmp_path / "missing" / "real.mp4")
    with pytest.raises(DownloadError, match="dangling"):
        await fake.client.download(fake.task, link)
    assert link.is_symlink()
    assert leftovers(tmp_path) == ["clip.mp4"]
    assert fake.cdn_requests == 0


async def test_folder_under_the_final_name_is_refused_before_the_transfer(
    fake: Fake, tmp_path: pathlib.Path
) -> None:
    """A folder standing where the file would go is DownloadError, with no request to the video host."""
    (tmp_path / "task_dest_source.mp4").mkdir()
    with pytest.raises(DownloadError, match="folder stands at"):
        await fake.client.download(fake.task, tmp_path)
    assert (tmp_path / "task_dest_source.mp4").is_dir()
    assert leftovers(tmp_path) == ["task_dest_source.mp4"]
    assert fake.cdn_requests == 0


# --- places that cannot be written, even by root ---------------------------


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda tmp: tmp / "a-file" / "clip.mp4", id="parent-is-a-file"),
        pytest.param(lambda tmp: tmp / "a-file" / "deeper" / "clip.mp4", id="ancestor-is-a-file"),
        pytest.param(lambda tmp: tmp / "a-file" / "folder/", id="folder-under-a-file"),
        pytest.param(lambda tmp: tmp / ("x" * 300 + ".mp4"), id="name-too-long"),
        pytest.param(lambda tmp: pathlib.Path("/proc/sora-async-test.mp4"), id="proc"),
        pytest.param(lambda tmp: pathlib.Path("/proc/sora-async-test/clip.mp4"), id="folder-in-proc"),
        pytest.param(lambda tmp: pathlib.Path("/sys/sora-async-test.mp4"), id="sys"),
    ],
)
async def test_unwritable_destination_fails_before_the_transfer(
    fake: Fake, tmp_path: pathlib.Path, where: object
) -> None:
    """Each is a DownloadError (never a bare OSError), with no request to the video host and nothing left."""
    (tmp_path / "a-file").write_bytes(b"keep me")
    dest = where(tmp_path)  # type: ignore[operator]
    with pytest.raises(DownloadError):
        await fake.client.download(fake.task, dest)
    assert fake.cdn_requests == 0
    assert leftovers(tmp_path) == ["a-file"]
    assert (tmp_path / "a-file").read_bytes() == b"keep me"


async def test_a_long_name_that_fits_is_written(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A 254-byte file name works: the temporary name is cut to fit the file system's limit."""
    name = "a" * 250 + ".mp4"
    path = await fake.client.download(fake.task, tmp_path / name)
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == [name]


async def test_a_folder_appearing_under_the_name_during_the_transfer(
    fake: Fake, tmp_path: pathlib.Path
) -> None:
    """A folder made at the final name mid-transfer is not replaced: DownloadError, no temporary file left."""
    target = tmp_path / "clip.mp4"

    def make_folder(done: int, total: int | None) -> None:
        target.mkdir(exist_ok=True)

    with pytest.raises(DownloadError, match=r"clip\.mp4"):
        await fake.client.download(fake.task, target, on_progress=make_folder)
    assert target.is_dir()
    assert leftovers(tmp_path) == ["clip.mp4"]


# --- check_destination, before any task exists -----------------------------


def test_check_destination_before_the_name_is_known(tmp_path: pathlib.Path) -> None:
    """With no file name, a folder (existing, or to be created) is checked, and nothing is left behind."""
    existing = check_destination(tmp_path)
    assert (existing.kind, existing.path) == ("folder", tmp_path)
    later = check_destination(f"{tmp_path}/new/deeper/")
    assert later.kind == "folder"
    assert check_destination(tmp_path / "clip.mp4").kind == "file"
    assert check_destination("/dev/null").kind == "device"
    assert leftovers(tmp_path) == []


def test_check_destination_names_the_file_in_a_folder(tmp_path: pathlib.Path) -> None:
    """With a file name, a folder destination is resolved to the file inside it, symlinks resolved."""
    (tmp_path / "real.mp4").write_bytes(b"")
    (tmp_path / "link.mp4").symlink_to("real.mp4")
    inside = check_destination(tmp_path, "clip.mp4")
    assert (inside.kind, inside.path, inside.target) == ("file", tmp_path / "clip.mp4", tmp_path / "clip.mp4")
    linked = check_destination(tmp_path, "link.mp4")
    assert (linked.path, linked.target) == (tmp_path / "link.mp4", (tmp_path / "real.mp4").resolve())


@pytest.mark.parametrize(
    ("dest", "message"),
    [
        ("{tmp}/a-file/", "is a file, not a folder"),
        ("{tmp}/a-file/clip.mp4", "is a file, not a folder"),
        ("/proc/sora-async-check/", "cannot"),
        ("/proc/", "cannot create a file"),
    ],
)
def test_check_destination_refuses(tmp_path: pathlib.Path, dest: str, message: str) -> None:
    """Destinations that cannot be written raise DownloadError from the check itself."""
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(DownloadError, match=message):
        check_destination(dest.format(tmp=tmp_path))


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_fifo_whose_reader_stops_reading_ends_at_the_timeout_or_a_cancel(
    tmp_path: pathlib.Path, how: str
) -> None:
    """A reader that opens the FIFO and never reads cannot hold the download past its deadline."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, and never read
    try:
        async with VideoHost(serve_bytes(bytes(4 * 1024 * 1024))) as host, SoraClient(KEY) as client:
            task = finished_task(source=(host.url("v.mp4"), 4 * 1024 * 1024))
            started = time.monotonic()
            if how == "timeout":
                with pytest.raises(DownloadError, match="took no more bytes"):
                    await client.download(task, fifo, timeout=1)
            else:
                call = asyncio.create_task(client.download(task, fifo))
                await asyncio.sleep(0.5)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            assert time.monotonic() - started < 3.0
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("dest", ["", "   ", "a\0b.mp4", "x\0/"], ids=["empty", "blank", "nul", "nul-folder"])
async def test_a_destination_no_path_can_be_is_refused(fake: Fake, dest: str) -> None:
    """An empty path (it used to mean this folder) or a NUL byte: DownloadError, nothing fetched."""
    with pytest.raises(DownloadError, match="destination"):
        await fake.client.download(fake.task, dest)
    with pytest.raises(DownloadError, match="destination"):
        check_destination(dest)
    assert fake.cdn_requests == 0
