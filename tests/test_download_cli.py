"""sora-async download: -o - writes the video to stdout and every line of text to stderr; --generation."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer, sample_file

KEY = "sk-cli-download-key-6"


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


class BinaryStdout(io.TextIOWrapper):
    """A text stdout over bytes, as sys.stdout is; `isatty` says what the test wants."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def written(self) -> bytes:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue()


async def run_cli(*argv: str, out: io.TextIOBase | None = None) -> tuple[int, io.TextIOBase, str]:
    out = out if out is not None else BinaryStdout()
    err = io.StringIO()
    code = await cli.run(list(argv), out=out, err=err)  # type: ignore[arg-type]
    return code, out, err.getvalue()


def against(server: FakeSoraServer) -> list[str]:
    return ["--base-url", server.url, "--api-key", KEY]


def cdn_requests(server: FakeSoraServer) -> int:
    return sum(1 for r in server.recorded if r.path.startswith("/_fake/cdn/"))


async def test_dash_writes_the_video_to_stdout_and_text_to_stderr(server: FakeSoraServer) -> None:
    """download -o - puts exactly the video bytes on stdout; progress and the summary go to stderr."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, out, err = await run_cli("download", task_id, "-o", "-", *against(server))
    assert code == cli.EXIT_OK, err
    assert isinstance(out, BinaryStdout)
    assert out.written() == sample_file("mp4")
    assert "downloaded 2,539 of 2,539 bytes" in err
    assert err.splitlines()[-1] == "wrote 2,539 bytes to standard output"


async def test_dash_with_json_puts_the_document_on_stderr(server: FakeSoraServer) -> None:
    """With --json and -o -, the progress lines and then the summary go to stderr: stdout holds the video."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, out, err = await run_cli(
        "download", task_id, "-o", "-", "--variant", "thumbnail", "--json", *against(server)
    )
    assert code == cli.EXIT_OK
    assert isinstance(out, BinaryStdout)
    assert out.written() == sample_file("jpg")
    *progress, summary = [json.loads(line) for line in err.splitlines()]
    assert summary == {"task_id": task_id, "file": "-", "bytes": len(sample_file("jpg"))}
    assert progress
    assert all(line["event"] == "bytes" for line in progress)


async def test_dash_refuses_a_terminal(server: FakeSoraServer) -> None:
    """A video is not written to a terminal: usage error, nothing sent."""
    code, _, err = await run_cli(
        "download", "task_x", "-o", "-", *against(server), out=BinaryStdout(tty=True)
    )
    assert code == cli.EXIT_USAGE
    assert "terminal" in err
    assert list(server.recorded) == []


async def test_generation_option(
    server: FakeSoraServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--generation picks a generation: past the end exits 1 naming the count; negative is a usage error."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, _, err = await run_cli(
        "download", task_id, "--generation", "1", "-o", f"{tmp_path}/", *against(server)
    )
    assert code == cli.EXIT_FAILED
    assert "has 1 generation " in err
    sent = len(server.recorded)
    code, _, err = await run_cli("download", task_id, "--generation", "-1", *against(server))
    assert code == cli.EXIT_USAGE
    assert "argument --generation: must be 0 or more" in capsys.readouterr().err  # argparse's own
    assert len(server.recorded) == sent
    code, out, err = await run_cli(
        "download", task_id, "--generation", "0", "-o", f"{tmp_path}/", *against(server), out=io.StringIO()
    )
    assert code == cli.EXIT_OK, err
    assert f"{task_id}_source.mp4 (2,539 bytes)" in out.getvalue()  # type: ignore[attr-defined]


async def test_a_file_destination_error_exits_1_before_the_transfer(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    """A destination under a file is reported on stderr (exit 1) and the video host is never asked."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    code, _, err = await run_cli("download", task_id, "-o", f"{blocker}/clip.mp4", *against(server))
    assert code == cli.EXIT_FAILED
    assert "is a file, not a folder" in err
    assert cdn_requests(server) == 0


async def test_dash_through_a_real_pipe(server: FakeSoraServer) -> None:
    """As a subprocess, `download TASK -o -` writes the bytes to its stdout pipe (sys.stdout.buffer)."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    env = {k: v for k, v in os.environ.items() if k != "COMETAPI_KEY"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sora_async",
        "download",
        task_id,
        "-o",
        "-",
        *against(server),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out == sample_file("mp4")
    assert b"wrote 2,539 bytes to standard output" in err
