"""The sora-async command, in-process and as a subprocess: exit codes, --json, plain output."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer, sample_file

KEY = "sk-cli-key-1234"


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in this event loop; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def against(server: FakeSoraServer) -> list[str]:
    return ["--base-url", server.url, "--api-key", KEY]


async def test_generate_plain_output_and_download(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    """generate prints one line per change (not a TTY), the URL, and the saved file; exit 0."""
    server.script_next([("QUEUED", "20%"), ("IN_PROGRESS", "50%"), ("SUCCESS", "100%")])
    code, out, err = await run_cli(
        "generate", "a boat", *against(server), "-o", f"{tmp_path}/", "--timeout", "30"
    )
    assert code == cli.EXIT_OK, err
    lines = out.splitlines()
    assert any("QUEUED 20%" in line for line in lines)
    assert any(line.startswith("video: http") for line in lines)
    (saved,) = tmp_path.iterdir()
    assert saved.read_bytes() == sample_file("mp4")
    assert f"saved: {saved}" in out
    assert KEY not in out + err


async def test_generate_json_is_the_only_stdout(server: FakeSoraServer) -> None:
    """With --json stdout is exactly one JSON document."""
    server.script_next([("SUCCESS", "100%")])
    code, out, _ = await run_cli(
        "generate", "a boat", "--width", "480", "--height", "480", "--json", *against(server)
    )
    assert code == cli.EXIT_OK
    document = json.loads(out)
    assert document["status"] == "SUCCESS"
    assert document["video_url"].startswith(server.url)
    (created,) = server.tasks.values()
    assert (created.request["width"], created.request["height"]) == (480, 480)


async def test_failed_task_exits_1_with_reason(server: FakeSoraServer) -> None:
    """A task that fails exits 1 and prints its fail_reason on stderr, no traceback."""
    server.script_next([("FAILURE", "100%")], fail_reason="prompt rejected by moderation")
    code, _, err = await run_cli("generate", "x", *against(server))
    assert code == cli.EXIT_FAILED
    assert "prompt rejected by moderation" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


async def test_timeout_exits_3(server: FakeSoraServer) -> None:
    """A wait that runs out of time exits 3; with --json the outcome is still JSON."""
    server.script_next([("QUEUED", "20%")])
    code, out, _ = await run_cli("generate", "x", "--timeout", "0.3", "--json", *against(server))
    assert code == cli.EXIT_TIMEOUT
    assert json.loads(out)["error"] == "WaitTimeoutError"


async def test_auth_and_config_errors_exit_4(server: FakeSoraServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong key, a missing key and an insecure URL are configuration errors: exit 4."""
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    code, _, err = await run_cli("status", "task_1", "--base-url", server.url, "--api-key", "wrong")
    assert code == cli.EXIT_CONFIG
    assert "wrong" not in err
    code, _, err = await run_cli("status", "task_1", "--base-url", server.url)
    assert code == cli.EXIT_CONFIG
    assert "COMETAPI_KEY" in err
    code, _, err = await run_cli("status", "task_1", "--api-key", KEY, "--base-url", "http://example.com")
    assert code == cli.EXIT_CONFIG
    assert "clear text" in err


@pytest.mark.parametrize("argv", [[], ["generate"], ["nonsense"], ["wait", "t", "--concurrency", "many"]])
async def test_usage_errors_exit_2(argv: list[str]) -> None:
    """Bad arguments exit 2."""
    code, _, _ = await run_cli(*argv)
    assert code == cli.EXIT_USAGE


async def test_invalid_values_exit_2_not_4(server: FakeSoraServer) -> None:
    """A well-formed command with an impossible value (an empty task id) is a usage error, not config."""
    code, _, err = await run_cli("download", "", *against(server))
    assert code == cli.EXIT_USAGE
    assert "TASK_ID must not be empty" in err
    assert server.arrivals.tolist() == []


async def test_status_lines_and_json(server: FakeSoraServer) -> None:
    """status prints a line per task, or one JSON document; an unknown id makes it exit 5."""
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="nope")
    code, out, _ = await run_cli("status", done, failed, "task_missing", *against(server))
    assert code == cli.EXIT_NOT_FOUND  # outranks the FAILURE
    lines = out.splitlines()
    assert lines[0].startswith(f"{done} SUCCESS 100% http")
    assert lines[1] == f"{failed} FAILURE 100% (nope)"
    assert lines[2].startswith("task_missing not found: ")
    code, out, _ = await run_cli("status", done, "--json", *against(server))
    assert code == cli.EXIT_OK
    assert [t["task_id"] for t in json.loads(out)["tasks"]] == [done]


async def test_wait_many_with_aggregate_output(server: FakeSoraServer) -> None:
    """wait follows many tasks, prints each outcome and a total, and exits 1 if any failed."""
    ids = [server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")]) for _ in range(3)]
    bad = server.add_task(timeline=[("FAILURE", "100%")])
    code, out, _ = await run_cli("wait", *ids, bad, "--concurrency", "2", "--json", *against(server))
    assert code == cli.EXIT_FAILED
    tasks = json.loads(out)["tasks"]
    assert len(tasks) == 4
    assert sum(1 for t in tasks if t.get("status") == "SUCCESS") == 3
    code, out, _ = await run_cli("wait", *ids, *against(server))
    assert code == cli.EXIT_OK
    assert out.splitlines()[-1] == "3 of 3 succeeded"


async def test_download_command(server: FakeSoraServer, tmp_path: pathlib.Path) -> None:
    """download saves the chosen variant and reports the path."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, out, _ = await run_cli(
        "download", task_id, "-o", str(tmp_path / "t.jpg"), "--variant", "thumbnail", *against(server)
    )
    assert code == cli.EXIT_OK
    assert (tmp_path / "t.jpg").read_bytes() == sample_file("jpg")
    assert f"saved: {tmp_path / 't.jpg'} (1,354 bytes)" in out


async def run_subprocess(*argv: str, interrupt_after: str | None = None) -> tuple[int, str, str]:
    """`python -m sora_async` without the caller's COMETAPI_* settings; SIGINT after a line if asked."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMETAPI_KEY", "COMETAPI_BASE_URL")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sora_async",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    if interrupt_after is not None:
        seen = b""
        while interrupt_after.encode() not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            assert line, "the process ended before it was interrupted"
            seen += line
        process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_subprocess_fake_generate_json() -> None:
    """python -m sora_async --fake generate --json prints one JSON document and exits 0."""
    code, out, err = await run_subprocess("--fake", "generate", "a boat", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "SUCCESS"


async def test_subprocess_ctrl_c_exits_130_cleanly() -> None:
    """Ctrl-C during a wait stops with exit code 130 and no traceback."""
    code, _, err = await run_subprocess(
        "fake-server", "--port", "0", interrupt_after="export COMETAPI_BASE_URL"
    )
    assert code == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err
    code, _, err = await run_subprocess("--fake", "generate", "boat", interrupt_after="NOT_START")
    assert code == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err
