"""The CLI on the OpenAI-format surface (/v1/videos): chosen by --openai, or by generate's own options."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer, VideoQuirks, sample_file

from .test_cli import KEY, against, run_cli
from .test_cli_errors import error_and_hint

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


def creates(server: FakeSoraServer) -> list[bytes]:
    return [r.body for r in server.recorded if r.method == "POST" and r.path == "/v1/videos"]


async def test_generate_with_the_formats_options_uses_it(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    server.script_next([("IN_PROGRESS", "50%"), ("SUCCESS", "100%")])
    code, out, err = await run_cli(
        "generate", "a kite", "--model", "sora-2", "--seconds", "8", "--size", "1280x720",
        "-o", str(tmp_path), "--json", *against(server),
    )  # fmt: skip
    assert code == cli.EXIT_OK, err
    document = json.loads(out)
    assert (document["format"], document["model"], document["seconds"], document["size"]) == (
        "openai", "sora-2", "8", "1280x720",
    )  # fmt: skip
    (body,) = creates(server)
    assert json.loads(body) == {"prompt": "a kite", "model": "sora-2", "seconds": "8", "size": "1280x720"}
    saved = pathlib.Path(document["file"])
    assert saved == tmp_path / f"{document['task_id']}_video.mp4"
    assert saved.read_bytes() == sample_file("mp4")
    assert server.requests["content"] == 1


async def test_openai_without_a_model_asks_for_sora_2_and_an_image_goes_as_multipart(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    image = tmp_path / "start.png"
    image.write_bytes(PNG)
    server.script_next([("SUCCESS", "100%")])
    code, out, err = await run_cli(
        "generate", "a kite", "--input-reference", str(image), "--json", *against(server)
    )
    assert code == cli.EXIT_OK, err
    video_id = json.loads(out)["task_id"]
    reference = server.tasks[video_id].input_reference
    assert reference is not None
    assert (reference.filename, reference.content_type, reference.size) == (
        "start.png",
        "image/png",
        len(PNG),
    )
    assert server.tasks[video_id].request["model"] == "sora-2"


@pytest.mark.parametrize("flags", [["--width", "100"], ["--frames", "300", "--style", "anime"]])
async def test_the_reverse_formats_options_are_refused_with_it(
    server: FakeSoraServer, flags: list[str]
) -> None:
    code, _, err = await run_cli("generate", "a kite", "--openai", *flags, *against(server))
    assert code == cli.EXIT_USAGE
    assert "to the reverse format" in err
    assert server.requests["create"] == 0


async def test_status_wait_and_download_with_openai(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    code, out, _ = await run_cli("status", done, failed, "--openai", *against(server))
    assert code == cli.EXIT_FAILED
    assert out.splitlines() == [f"{done} completed 100%", f"{failed} failed 100% (moderation)"]
    code, out, _ = await run_cli("wait", done, failed, "--openai", *against(server))
    assert code == cli.EXIT_FAILED
    assert f"{failed} FAILURE (moderation)" in out
    assert server.requests[done] >= 2  # queried through /v1/videos (the reverse format counts alike)
    assert all(r.path.startswith(("/v1/videos", "/_fake")) for r in server.recorded)
    code, out, err = await run_cli(
        "download", done, "--openai", "--variant", "thumbnail", "-o", str(tmp_path), *against(server)
    )
    assert code == cli.EXIT_OK, err
    assert (tmp_path / f"{done}_thumbnail.webp").read_bytes() == sample_file("jpg")


async def test_a_generation_is_refused_with_openai(server: FakeSoraServer) -> None:
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    code, _, err = await run_cli("download", done, "--openai", "--generation", "1", *against(server))
    assert code == cli.EXIT_USAGE
    assert "--generation applies to the reverse format only" in err
    assert server.requests["content"] == 0


async def test_a_model_without_a_channel_is_exit_4_with_a_hint(server: FakeSoraServer) -> None:
    server.video_quirks = VideoQuirks(unavailable_models=frozenset({"sora-2"}))
    code, _, err = await run_cli("generate", "a kite", "--model", "sora-2", *against(server))
    assert code == cli.EXIT_CONFIG
    _, hint = error_and_hint(err)
    assert "no channel for this model" in hint
    assert server.requests["create"] == 1


async def test_not_found_and_not_ready_on_the_openai_surface(server: FakeSoraServer) -> None:
    assert (await run_cli("status", "task_nope", "--openai", *against(server)))[0] == cli.EXIT_NOT_FOUND
    code, _, err = await run_cli("download", "task_nope", "--openai", *against(server))
    assert code == cli.EXIT_NOT_FOUND  # the content route's 404 is a missing task, not a wrong --base-url
    queued = server.add_task(timeline=[("QUEUED", "20%")])
    code, _, err = await run_cli("download", queued, "--openai", "-o", "/dev/null", *against(server))
    assert code == cli.EXIT_FAILED
    _, hint = error_and_hint(err)
    assert hint == f"hint: wait for it first: sora-async wait --openai {queued}"


async def test_resume_commands_keep_openai(server: FakeSoraServer) -> None:
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    code, out, _ = await run_cli(
        "generate", "a kite", "--openai", "--timeout", "0.5", "--json", *against(server)
    )
    assert code == cli.EXIT_TIMEOUT
    document = json.loads(out)
    assert document["resume"] == [f"sora-async wait {document['task_id']} --base-url {server.url} --openai"]


async def test_a_failure_without_a_status_reads_as_failure(server: FakeSoraServer) -> None:
    """The stored error body has no status: every line and document says FAILURE, never a blank."""
    server.video_quirks = VideoQuirks(failure_without_status=True)
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    code, out, _ = await run_cli("status", failed, "--openai", *against(server))
    assert code == cli.EXIT_FAILED
    assert out.splitlines() == [f"{failed} FAILURE - (moderation)"]
    code, out, _ = await run_cli("status", failed, "--openai", "--json", *against(server))
    assert json.loads(out)["tasks"][0]["status"] == "FAILURE"


@pytest.mark.parametrize("variant", ["md", "ld"])
async def test_a_reverse_rendition_is_refused_with_openai(server: FakeSoraServer, variant: str) -> None:
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    code, _, err = await run_cli("download", done, "--openai", "--variant", variant, *against(server))
    assert code == cli.EXIT_USAGE
    assert "video, thumbnail or spritesheet" in err
    assert server.requests["content"] == 0
