"""The CLI never loses a created task: on every failure after the create it names it and how to resume."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer, Fault

from .conftest import eventually
from .test_cli import KEY, against, run_cli


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


def created(server: FakeSoraServer) -> str:
    (task_id,) = server.tasks
    return task_id


async def test_a_poll_that_fails_for_good_names_the_task_and_the_resume_command(
    server: FakeSoraServer,
) -> None:
    server.inject(Fault(401, {"error": {"message": "key revoked"}}), route="query")
    code, _, err = await run_cli("generate", "a boat", *against(server), "--timeout", "30")
    task_id = created(server)
    assert code == cli.EXIT_CONFIG
    assert f"task {task_id} was created and is billed" in err
    assert f"sora-async wait {task_id}" in err


async def test_a_timeout_with_json_puts_the_task_and_resume_in_the_error_object(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    code, out, _ = await run_cli(
        "generate", "a boat", *against(server), "--timeout", "0.5", "--json", "-o", str(tmp_path / "v.mp4")
    )
    task_id = created(server)
    assert code == cli.EXIT_TIMEOUT
    document = json.loads(out)
    assert document["task_id"] == task_id
    assert document["error"] == "WaitTimeoutError"
    flags = f"--base-url {server.url}"  # given as a flag, so the resume commands reach the same API
    assert document["resume"] == [
        f"sora-async wait {task_id} {flags}",
        f"sora-async download {task_id} -o {tmp_path / 'v.mp4'} {flags}",
    ]


async def test_a_download_failure_after_success_says_how_to_download_again(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    server.script_next([("SUCCESS", "100%")])
    server.inject(Fault(500, "CDN down", content_type="text/plain"), route="cdn")
    code, _, err = await run_cli("generate", "a boat", *against(server), "-o", str(tmp_path))
    task_id = created(server)
    assert code == cli.EXIT_CONNECTION  # the video host's 5xx is a server error
    assert f"sora-async download {task_id} -o {tmp_path}" in err
    assert "sora-async wait" not in err  # the task is done; only the file is missing


async def test_a_failed_task_names_itself_and_offers_no_resume(server: FakeSoraServer) -> None:
    server.script_next([("FAILURE", "0%")], fail_reason="moderation")
    code, out, err = await run_cli("generate", "a boat", *against(server), "--json")
    assert code == cli.EXIT_FAILED
    document = json.loads(out)
    assert document["task_id"] == created(server)
    assert "resume" not in document
    assert "to resume" not in err


@pytest.mark.parametrize("kind", ["parent is a file", "a file given as a folder", "in /proc", "empty"])
async def test_an_unwritable_output_fails_before_any_task_is_created(
    server: FakeSoraServer, tmp_path: pathlib.Path, kind: str
) -> None:
    """generate -o DEST checks DEST first: nothing is created, so nothing is billed."""
    (tmp_path / "file").write_text("x")
    dest = {
        "parent is a file": str(tmp_path / "file" / "v.mp4"),
        "a file given as a folder": str(tmp_path / "file") + "/",
        "in /proc": "/proc/v.mp4",
        "empty": "",
    }[kind]
    code, _, err = await run_cli("generate", "a boat", *against(server), "-o", dest)
    assert code == cli.EXIT_FAILED
    assert err.startswith("error: ")
    assert not server.tasks
    assert server.requests["create"] == 0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
@pytest.mark.parametrize("command", ["generate", "wait"])
async def test_timeout_takes_what_every_timeout_takes(
    server: FakeSoraServer, capsys: pytest.CaptureFixture[str], command: str, value: str
) -> None:
    """Seconds > 0 and finite, as every timeout= of the SDK; argparse's usage error otherwise."""
    target = "a boat" if command == "generate" else "task_1"
    code, _, _ = await run_cli(command, target, *against(server), "--timeout", value)
    assert code == cli.EXIT_USAGE
    assert "argument --timeout" in capsys.readouterr().err
    assert not server.arrivals


async def test_ctrl_c_with_json_still_names_the_task_on_stdout(server: FakeSoraServer) -> None:
    """Ctrl-C (a cancellation, under asyncio.run) after the create: the JSON error object names the task."""
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    out, err = io.StringIO(), io.StringIO()
    call = asyncio.create_task(cli.run(["generate", "a boat", *against(server), "--json"], out=out, err=err))
    await eventually(lambda: bool(server.tasks) and server.polls(next(iter(server.tasks))) > 0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    task_id = created(server)
    document = json.loads(out.getvalue())
    assert document["task_id"] == task_id
    assert document["error"] == "Interrupted"
    assert document["resume"] == [f"sora-async wait {task_id} --base-url {server.url}"]
    assert "was created" not in err.getvalue()  # with --json the JSON says it, and nothing else does


async def test_ids_given_to_the_cli_are_stripped(server: FakeSoraServer) -> None:
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, out, _ = await run_cli("status", f" {task_id} ", *against(server), "--json")
    assert code == cli.EXIT_OK
    assert json.loads(out)["tasks"][0]["task_id"] == task_id
