"""The CLI never replaces a file without --force, and warns when --variant and the file name disagree."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer, Fault, sample_file

from .test_cli import KEY, against, run_cli
from .test_download_destinations import video_fetches


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


async def test_download_refuses_an_existing_file_without_force(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"my own video")
    code, _out, err = await run_cli("download", task_id, "-o", str(target), *against(server))
    assert code == cli.EXIT_FAILED
    assert target.read_bytes() == b"my own video"
    assert video_fetches(server) == 0  # refused before the video host is asked
    # The CLI's words, not Python's, and the flag said once: no hint line repeats it.
    assert err.splitlines() == [f"error: {target} already exists; use --force to replace it"]


@pytest.mark.parametrize("flag", ["--force", "--overwrite", "-f"])
async def test_force_replaces_the_file(server: FakeSoraServer, tmp_path: pathlib.Path, flag: str) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"my own video")
    code, _, err = await run_cli("download", task_id, "-o", str(target), flag, *against(server))
    assert code == cli.EXIT_OK, err
    assert target.read_bytes() == sample_file("mp4")


async def test_download_into_a_folder_refuses_the_file_already_there(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    first, _, _ = await run_cli("download", task_id, "-o", str(tmp_path), *against(server))
    assert first == cli.EXIT_OK
    saved = tmp_path / f"{task_id}_source.mp4"
    saved.write_bytes(b"edited")
    again, _, err = await run_cli("download", task_id, "-o", str(tmp_path), *against(server))
    assert again == cli.EXIT_FAILED
    assert saved.read_bytes() == b"edited"
    assert "--force" in err


async def test_generate_refuses_an_existing_file_before_creating_a_task(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    """A billed create must not happen for a download that would be refused."""
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"my own video")
    code, _, err = await run_cli("generate", "a boat", "-o", str(target), *against(server))
    assert code == cli.EXIT_FAILED
    assert server.requests["create"] == 0
    assert target.read_bytes() == b"my own video"
    assert "--force" in err
    server.script_next([("SUCCESS", "100%")])
    forced, _, err = await run_cli("generate", "a boat", "-o", str(target), "--force", *against(server))
    assert forced == cli.EXIT_OK, err
    assert target.read_bytes() == sample_file("mp4")


async def test_a_generate_whose_download_fails_resumes_with_force(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    """The resume command keeps --force, so it does not fail on the same file."""
    server.script_next([("SUCCESS", "100%")])
    server.inject(Fault(status=500), route="cdn", times=100)
    target = tmp_path / "clip.mp4"
    code, _, err = await run_cli("generate", "a boat", "-o", str(target), "--force", *against(server))
    assert code == cli.EXIT_CONNECTION  # the video host failed after the retries
    assert f"-o {target} --force" in err


@pytest.mark.parametrize(
    ("variant", "name", "warned"),
    [
        ("thumbnail", "clip.mp4", "--variant thumbnail is an image, but {path} is named as a video (.mp4)"),
        (
            "spritesheet",
            "sheet.MOV",
            "--variant spritesheet is an image, but {path} is named as a video (.mov)",
        ),
        ("source", "clip.jpg", "--variant source is a video, but {path} is named as an image (.jpg)"),
        ("md", "clip.webp", "--variant md is a video, but {path} is named as an image (.webp)"),
        ("thumbnail", "thumb.webp", None),
        ("source", "clip.mp4", None),
        ("ld", "clip.bin", None),
        ("thumbnail", "", None),  # the folder itself: the file is named for its variant
    ],
)
async def test_a_variant_that_does_not_match_the_file_name_warns(
    server: FakeSoraServer, tmp_path: pathlib.Path, variant: str, name: str, warned: str | None
) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    path = tmp_path / name if name else tmp_path
    code, _, err = await run_cli("download", task_id, "-o", str(path), "--variant", variant, *against(server))
    assert code == cli.EXIT_OK, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ([f"warning: {warned.format(path=path)}"] if warned else [])


async def test_the_warning_is_a_json_line_with_json(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    path = tmp_path / "clip.mp4"
    code, out, err = await run_cli(
        "download", task_id, "-o", str(path), "--variant", "thumbnail", "--json", *against(server)
    )
    assert code == cli.EXIT_OK
    events = [json.loads(line) for line in err.splitlines()]
    assert events[0] == {
        "event": "warning",
        "message": f"--variant thumbnail is an image, but {path} is named as a video (.mp4)",
    }
    assert json.loads(out)["file"] == str(path)


async def test_a_failed_download_with_json_still_prints_one_document(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"mine")
    code, out, _ = await run_cli("download", task_id, "-o", str(target), "--json", *against(server))
    assert code == cli.EXIT_FAILED
    assert json.loads(out) == {
        "task_id": task_id,
        "error": "DestinationExistsError",
        "message": f"{target} already exists; use --force to replace it",
    }
