"""What a new user found by trying to break the CLI, each kept as a test of the behaviour now."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import socket
import sys
import time
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.cli._commands import CREATE_MAY_EXIST
from sora_async.cli._display import PlainDisplay, RichDisplay, make_display
from sora_async.testing import FakeSoraServer, Fault, sample_file

from .conftest import eventually
from .test_cli import KEY, against, run_cli, run_subprocess
from .test_cli_errors import TTY, error_and_hint, silent_server  # noqa: F401  (the fixture)
from .test_cli_fake_server import fake_server


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


def refused_url() -> str:
    """A loopback port with nothing listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- wait stops at once when the server is the problem --------------------------


@pytest.mark.parametrize("json_output", [False, True])
async def test_wait_on_a_refusing_server_stops_at_once(json_output: bool) -> None:
    """A batch would retry a refused connection until its deadline (30 min); wait asks once first."""
    started = time.monotonic()
    argv = ["wait", "task_a", "task_b", "--base-url", refused_url(), "--api-key", KEY, "--retries", "1"]
    code, out, err = await run_cli(*argv, *(["--json"] if json_output else []))
    assert time.monotonic() - started < 10
    assert code == cli.EXIT_CONNECTION
    if json_output:  # one document on stdout; the error and its hint as a JSON line on stderr
        assert json.loads(out)["error"] == "APIConnectionError"
        (line,) = err.splitlines()
        hint = json.loads(line)["hint"]
    else:
        _, hint = error_and_hint(err)
    assert "nothing answers at 127.0.0.1" in hint


async def test_wait_on_a_silent_server_stops_after_the_tries_of_one_request(silent_server: str) -> None:  # noqa: F811
    started = time.monotonic()
    code, _, err = await run_cli(
        "wait", "task_a", "--base-url", silent_server, "--api-key", KEY, "--request-timeout", "0.3",
        "--retries", "1", "--timeout", "600",
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert code == cli.EXIT_TIMEOUT
    _, hint = error_and_hint(err)
    assert "accepted the connection but sent no answer: 2 tries of 0.3 s each" in hint


async def test_wait_with_a_wrong_key_stops_at_once(server: FakeSoraServer) -> None:
    task_id = server.add_task(timeline=[("IN_PROGRESS", "10%")] * 1000)
    code, _, _ = await run_cli("wait", task_id, "--base-url", server.url, "--api-key", "sk-wrong-key-123")
    assert code == cli.EXIT_CONFIG
    assert server.polls(task_id) == 1  # the one query, no batch


# --- --json: one document on stdout, whatever ends the command ------------------------


@pytest.mark.parametrize("output", ["exists", ""])
async def test_generate_json_checks_before_the_create_print_one_document(
    server: FakeSoraServer, tmp_path: pathlib.Path, output: str
) -> None:
    target = tmp_path / "e.mp4"
    target.write_bytes(b"mine")
    destination = str(target) if output == "exists" else ""
    code, out, _ = await run_cli("generate", "x", "-o", destination, "--json", *against(server))
    assert code != cli.EXIT_OK
    document = json.loads(out)
    assert document["task_id"] is None
    assert document["error"] == ("DestinationExistsError" if output else "DownloadError")
    assert server.requests["create"] == 0


async def test_ctrl_c_during_wait_with_json_prints_the_running_tasks_on_stdout(
    server: FakeSoraServer,
) -> None:
    running = server.add_task(timeline=[("IN_PROGRESS", "10%")] * 1000)
    out, err = io.StringIO(), io.StringIO()
    call = asyncio.create_task(cli.run(["wait", running, *against(server), "--json"], out=out, err=err))
    await eventually(lambda: server.polls(running) > 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    document = json.loads(out.getvalue())
    assert document["error"] == "Interrupted"
    assert document["running"] == [running]
    assert document["resume"] == [f"sora-async wait {running} --base-url {server.url}"]
    assert all(json.loads(line)["event"] for line in err.getvalue().splitlines())  # stderr: JSON lines only


# --- messages and hints ---------------------------------------------------------------


async def test_an_unparsable_base_url_is_one_line_and_exit_4() -> None:
    code, out, err = await run_subprocess("--base-url", "http://[::1", "--api-key", KEY, "status", "t")
    assert code == cli.EXIT_CONFIG
    assert out == ""
    assert err.splitlines() == ["error: Invalid IPv6 URL"]


async def test_an_empty_api_key_flag_is_refused_not_replaced(
    server: FakeSoraServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", KEY)
    code, _, err = await run_cli("status", "t", "--base-url", server.url, "--api-key", "")
    assert code == cli.EXIT_CONFIG
    assert "--api-key is empty" in err
    assert server.requests == {}


async def test_when_the_own_timeout_runs_out_the_hint_says_so(server: FakeSoraServer) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, _, err = await run_cli(
        "download", task_id, "-o", "/dev/null", "--timeout", "0.001", *against(server)
    )
    assert code == cli.EXIT_TIMEOUT
    _, hint = error_and_hint(err)
    assert hint == "hint: the --timeout of 0.001 s ran out first; raise --timeout to wait longer"


async def test_download_of_an_unfinished_task_says_to_wait_first(server: FakeSoraServer) -> None:
    task_id = server.add_task(timeline=[("QUEUED", "20%")])
    code, _, err = await run_cli("download", task_id, *against(server))
    assert code == cli.EXIT_FAILED
    _, hint = error_and_hint(err)
    assert hint == f"hint: wait for it first: sora-async wait {task_id}"
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    code, _, err = await run_cli("download", failed, *against(server))
    assert code == cli.EXIT_FAILED
    assert f"error: task {failed} failed: moderation; it has no video" in err


async def test_lines_about_one_task_use_words_not_class_names(server: FakeSoraServer) -> None:
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    code, out, _ = await run_cli("wait", failed, "task_missing", "", *against(server))
    assert code == cli.EXIT_USAGE  # the empty id outranks the rest
    text = out
    assert f"{failed} FAILURE (moderation)" in text
    assert "task_missing not found: task_not_exist (HTTP 400)" in text
    assert "TASK_ID must not be empty" in text
    assert "Error" not in text


async def test_a_value_the_api_refuses_is_a_usage_error(server: FakeSoraServer) -> None:
    server.inject(Fault(400, {"code": "invalid_request", "message": "prompt too long"}), route="create")
    code, _, err = await run_cli("generate", "x", *against(server))
    assert code == cli.EXIT_USAGE
    assert "prompt too long" in err


@pytest.mark.parametrize("frames", ["7", "151", "0"])
async def test_frames_takes_only_the_two_lengths(frames: str, server: FakeSoraServer) -> None:
    code, _, _ = await run_cli("generate", "x", "--frames", frames, *against(server))
    assert code == cli.EXIT_USAGE
    assert server.requests["create"] == 0


# --- output -----------------------------------------------------------------------------


async def test_generate_to_dev_null_reports_the_bytes_written(server: FakeSoraServer) -> None:
    server.script_next([("SUCCESS", "100%")])
    code, out, _ = await run_cli("generate", "x", "-o", "/dev/null", "--json", *against(server))
    assert code == cli.EXIT_OK
    assert json.loads(out)["bytes"] == len(sample_file("mp4"))


async def test_a_closed_stdout_ends_quietly_with_141(server: FakeSoraServer) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    err = io.StringIO()
    code = await cli.run(["status", task_id, task_id, *against(server)], out=Closed(), err=err)
    assert code == cli.EXIT_PIPE == 141
    assert err.getvalue() == ""


async def test_a_closed_pipe_as_a_subprocess_prints_nothing(server: FakeSoraServer) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    env = {k: v for k, v in os.environ.items() if k not in ("COMETAPI_KEY", "COMETAPI_BASE_URL")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sora_async", "status", task_id, *against(server),
        stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 141
    assert err == b""


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_display(False, TTY()), PlainDisplay)
    monkeypatch.setenv("TERM", "xterm-256color")
    display = make_display(False, TTY())
    try:
        assert isinstance(display, RichDisplay)
    finally:
        display.close()


# --- generate: Ctrl-C before the create is answered; --fake has nothing to resume --------


async def test_ctrl_c_before_the_create_is_answered_says_a_task_may_exist(server: FakeSoraServer) -> None:
    server.inject(Fault(200, {"code": "success", "data": "task_late"}, delay=60), route="create")
    out, err = io.StringIO(), io.StringIO()
    call = asyncio.create_task(cli.run(["generate", "x", *against(server)], out=out, err=err))
    await eventually(lambda: server.requests["create"] == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert CREATE_MAY_EXIST in err.getvalue()


async def test_fake_has_nothing_to_resume(tmp_path: pathlib.Path) -> None:
    """The embedded server is gone with the command: no 'billed', no resume command."""
    code, _, err = await run_cli("--fake", "generate", "x", "-o", str(tmp_path), "--timeout", "0.3")
    assert code == cli.EXIT_TIMEOUT
    assert "billed" not in err
    assert "sora-async wait" not in err


# --- fake-server ---------------------------------------------------------------------------


async def test_fake_server_on_every_address_prints_a_usable_export_line() -> None:
    every_address = "0.0.0.0"  # noqa: S104  (the point of the test; the server stops at its end)
    async with fake_server("--host", every_address, "--port", "0", "--tasks", "1") as running:
        url = running.exports["COMETAPI_BASE_URL"]
        assert url.startswith("http://127.0.0.1:")
        assert running.header[2].startswith("1 task created, 0 of them to fail")
        code, out, _ = await run_subprocess(
            "status", running.task_ids[0], "--base-url", url, "--api-key", "k"
        )
        assert code == cli.EXIT_OK, out
