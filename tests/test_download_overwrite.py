"""download(overwrite=False): an existing file is refused before the transfer, never clobbered after it."""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import pickle
import stat

import pytest

from sora_async import DestinationExistsError, DownloadError, check_destination
from sora_async.testing import sample_file

from .test_download_destinations import Fake, leftovers
from .test_download_destinations import fake as fake  # the fixture: one finished task "task_dest"

VIDEO = sample_file("mp4")
NAME = "task_dest_source.mp4"  # the file name a folder destination gets for the task below


def no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make os.link fail as it does on a file system without hard links (EPERM on Linux's vfat)."""

    def refuse(src: object, dst: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


# --- refused before the transfer --------------------------------------------


async def test_an_existing_file_is_refused_before_the_transfer(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A file at dest: DestinationExistsError naming it, no request to the video host, the file untouched."""
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"mine")
    refused = r"clip\.mp4 already exists; pass overwrite=True"
    with pytest.raises(DestinationExistsError, match=refused) as caught:
        await fake.client.download(fake.task, target, overwrite=False)
    assert caught.value.path == target
    assert fake.cdn_requests == 0
    assert target.read_bytes() == b"mine"
    assert leftovers(tmp_path) == ["clip.mp4"]


async def test_the_computed_name_in_a_folder_is_refused(fake: Fake, tmp_path: pathlib.Path) -> None:
    """With a folder dest, the file named from the task is the one checked: it exists, so it is refused."""
    (tmp_path / NAME).write_bytes(b"mine")
    with pytest.raises(DestinationExistsError) as caught:
        await fake.client.download(fake.task, tmp_path, overwrite=False)
    assert caught.value.path == tmp_path / NAME
    assert fake.cdn_requests == 0
    assert (tmp_path / NAME).read_bytes() == b"mine"
    assert leftovers(tmp_path) == [NAME]


async def test_a_symlink_to_a_file_is_refused(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A link to an existing file counts as existing: refused, the link and its target untouched."""
    (tmp_path / "real.mp4").write_bytes(b"mine")
    link = tmp_path / "clip.mp4"
    link.symlink_to("real.mp4")
    with pytest.raises(DestinationExistsError) as caught:
        await fake.client.download(fake.task, link, overwrite=False)
    assert caught.value.path == link
    assert fake.cdn_requests == 0
    assert os.readlink(link) == "real.mp4"
    assert (tmp_path / "real.mp4").read_bytes() == b"mine"
    assert leftovers(tmp_path) == ["clip.mp4", "real.mp4"]


# --- written when the name is free -------------------------------------------


async def test_an_absent_file_is_written(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A free name, in a folder still to be created, gets the whole video and no temporary file is left."""
    target = tmp_path / "new" / "clip.mp4"
    path = await fake.client.download(fake.task, target, overwrite=False)
    assert path == target
    assert target.read_bytes() == VIDEO
    assert target.stat().st_nlink == 1  # the temporary name was dropped, not left as a second link
    assert leftovers(target.parent) == ["clip.mp4"]


async def test_a_free_name_in_a_folder_is_written(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A folder dest without the computed file in it: the file is written there."""
    path = await fake.client.download(fake.task, tmp_path, overwrite=False)
    assert path == tmp_path / NAME
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == [NAME]


async def test_without_hard_links_an_absent_file_is_still_written(
    fake: Fake, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where link() is not supported, the commit falls back to a check and a rename."""
    no_hard_links(monkeypatch)
    target = tmp_path / "clip.mp4"
    await fake.client.download(fake.task, target, overwrite=False)
    assert target.read_bytes() == VIDEO
    assert leftovers(tmp_path) == ["clip.mp4"]


# --- a file that appears during the transfer ---------------------------------


async def test_a_file_appearing_during_the_transfer_is_kept(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A file made under the name mid-transfer is not replaced: DestinationExistsError, no temporary left."""
    target = tmp_path / "clip.mp4"

    def make_file(done: int, total: int | None) -> None:
        if not target.exists():
            target.write_bytes(b"theirs")

    with pytest.raises(DestinationExistsError, match="appeared during the download") as caught:
        await fake.client.download(fake.task, target, on_progress=make_file, overwrite=False)
    assert caught.value.path == target
    assert fake.cdn_requests == 1
    assert target.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == ["clip.mp4"]


async def test_without_hard_links_a_file_appearing_is_kept(
    fake: Fake, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check-then-rename fallback also keeps a file that appeared, and removes the temporary file."""
    no_hard_links(monkeypatch)
    target = tmp_path / "clip.mp4"

    def make_file(done: int, total: int | None) -> None:
        if not target.exists():
            target.write_bytes(b"theirs")

    with pytest.raises(DestinationExistsError, match="appeared"):
        await fake.client.download(fake.task, target, on_progress=make_file, overwrite=False)
    assert target.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == ["clip.mp4"]


async def test_another_link_failure_is_a_download_error_and_leaves_nothing(
    fake: Fake, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link() failure that is not "no hard links here" is a DownloadError; the temporary file is removed."""

    def broken(src: object, dst: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "link", broken)
    with pytest.raises(DownloadError, match="Input/output error") as caught:
        await fake.client.download(fake.task, tmp_path / "clip.mp4", overwrite=False)
    assert not isinstance(caught.value, DestinationExistsError)
    assert leftovers(tmp_path) == []


# --- what overwrite does not change ------------------------------------------


async def test_overwrite_true_is_the_default_and_replaces(fake: Fake, tmp_path: pathlib.Path) -> None:
    """Without the keyword, and with overwrite=True, an existing file is replaced as before."""
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    await fake.client.download(fake.task, target)
    assert target.read_bytes() == VIDEO
    target.write_bytes(b"old again")
    await fake.client.download(fake.task, target, overwrite=True)
    assert target.read_bytes() == VIDEO
    assert leftovers(tmp_path) == ["clip.mp4"]


async def test_dev_null_is_written_into_with_overwrite_false(fake: Fake) -> None:
    """A character device exists, but is written into, not replaced: overwrite=False does not refuse it."""
    path = await fake.client.download(fake.task, "/dev/null", overwrite=False)
    assert path == pathlib.Path("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert fake.cdn_requests == 1


def read_all(path: pathlib.Path) -> bytes:
    with open(path, "rb") as pipe:
        return pipe.read()


async def test_a_fifo_is_written_into_with_overwrite_false(fake: Fake, tmp_path: pathlib.Path) -> None:
    """A named pipe gets the whole video with overwrite=False, and stays a named pipe."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reading = asyncio.create_task(asyncio.to_thread(read_all, fifo))
    await fake.client.download(fake.task, fifo, overwrite=False)
    assert await reading == VIDEO
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# --- check_destination, before a task is created -----------------------------


def test_check_destination_refuses_an_existing_file(tmp_path: pathlib.Path) -> None:
    """check_destination(..., overwrite=False) refuses a file or a link to one, and accepts it by default."""
    (tmp_path / "clip.mp4").write_bytes(b"mine")
    (tmp_path / "link.mp4").symlink_to("clip.mp4")
    for name in ["clip.mp4", "link.mp4"]:
        with pytest.raises(DestinationExistsError) as caught:
            check_destination(tmp_path / name, overwrite=False)
        assert caught.value.path == tmp_path / name
        assert check_destination(tmp_path / name).kind == "file"
    with pytest.raises(DestinationExistsError):
        check_destination(tmp_path, "clip.mp4", overwrite=False)
    assert leftovers(tmp_path) == ["clip.mp4", "link.mp4"]


def test_check_destination_accepts_what_is_not_an_existing_file(tmp_path: pathlib.Path) -> None:
    """A free name, a folder whose file name is not known yet, and a device all pass with overwrite=False."""
    (tmp_path / NAME).write_bytes(b"mine")
    assert check_destination(tmp_path / "free.mp4", overwrite=False).kind == "file"
    assert check_destination(tmp_path, "free.mp4", overwrite=False).kind == "file"
    assert check_destination(tmp_path, overwrite=False).kind == "folder"  # nothing to check yet
    assert check_destination(f"{tmp_path}/", overwrite=False).kind == "folder"
    assert check_destination("/dev/null", overwrite=False).kind == "device"
    assert leftovers(tmp_path) == [NAME]


# --- the error ---------------------------------------------------------------


def test_the_error_is_a_download_error_and_a_file_exists_error() -> None:
    """One `except` for either family catches it; it carries the path, EEXIST and the filename."""
    error = DestinationExistsError(pathlib.Path("videos/clip.mp4"))
    assert isinstance(error, DownloadError)
    assert isinstance(error, FileExistsError)
    assert error.path == pathlib.Path("videos/clip.mp4")
    assert (error.errno, error.filename) == (errno.EEXIST, "videos/clip.mp4")
    assert str(error) == "videos/clip.mp4 already exists; pass overwrite=True to replace it"
    assert error.args == (str(error),)
    assert not error.retryable


def test_the_error_pickles_with_its_attributes() -> None:
    """Through pickle: same class, message, path, task id, and the OSError fields errno and filename."""
    error = DestinationExistsError("videos/clip.mp4", message="custom words")
    error.task_id = "task_keep"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own objects)
    assert type(copy) is DestinationExistsError
    assert (str(copy), copy.args, copy.path, copy.task_id) == (
        "custom words",
        ("custom words",),
        pathlib.Path("videos/clip.mp4"),
        "task_keep",
    )
    assert (copy.errno, copy.strerror, copy.filename) == (error.errno, error.strerror, "videos/clip.mp4")
