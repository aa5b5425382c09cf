"""The CLI's progress under --json (JSON lines on stderr) and what `wait` says after Ctrl-C."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer

from .conftest import eventually
from .test_cli import KEY, against, run_cli


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) and "event" in line for line in lines)
    return lines


async def test_generate_json_puts_one_progress_object_per_change_on_stderr(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    """stdout stays one document; stderr has a "task" line per change and "bytes" lines for the file."""
    server.script_next([("IN_PROGRESS", "50%"), ("SUCCESS", "100%")])
    code, out, err = await run_cli("generate", "a boat", *against(server), "--json", "-o", str(tmp_path))
    assert code == cli.EXIT_OK, err
    document = json.loads(out)
    events = json_lines(err)
    statuses = [e["status"] for e in events if e["event"] == "task"]
    assert statuses == ["IN_PROGRESS", "SUCCESS"]
    assert all(e["task_id"] == document["task_id"] for e in events if e["event"] == "task")
    sizes = [(e["done"], e["total"]) for e in events if e["event"] == "bytes"]
    assert sizes[-1] == (document["bytes"], document["bytes"])


async def test_wait_json_puts_an_outcome_line_per_task_on_stderr(server: FakeSoraServer) -> None:
    ids = [server.add_task(timeline=[("SUCCESS", "100%")]) for _ in range(3)]
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    code, out, err = await run_cli("wait", *ids, failed, *against(server), "--json", "--timeout", "20")
    assert code == cli.EXIT_FAILED
    outcomes = [e for e in json_lines(err) if e["event"] == "outcome"]
    assert sorted(e["task_id"] for e in outcomes) == sorted([*ids, failed])
    assert sorted(e["done"] for e in outcomes) == [1, 2, 3, 4]
    assert {e["total"] for e in outcomes} == {4}
    assert [e["error"] for e in outcomes if e["task_id"] == failed] == ["TaskFailedError"]
    assert len(json.loads(out)["tasks"]) == 4


async def test_wait_json_has_a_task_line_per_change_of_each_task_in_flight(server: FakeSoraServer) -> None:
    steps = [("QUEUED", "20%"), ("IN_PROGRESS", "60%"), ("SUCCESS", "100%")]
    ids = [server.add_task(timeline=steps) for _ in range(5)]
    code, _, err = await run_cli("wait", *ids, *against(server), "--json", "--timeout", "20")
    assert code == cli.EXIT_OK
    events = json_lines(err)
    for task_id in ids:
        changes = [
            (e["status"], e["percent"]) for e in events if e["event"] == "task" and e["task_id"] == task_id
        ]
        assert changes == [("QUEUED", 20.0), ("IN_PROGRESS", 60.0), ("SUCCESS", 100.0)]
        last_change = max(n for n, e in enumerate(events) if e["event"] == "task" and e["task_id"] == task_id)
        outcome = next(n for n, e in enumerate(events) if e["event"] == "outcome" and e["task_id"] == task_id)
        assert last_change < outcome


async def test_ctrl_c_during_wait_names_the_tasks_still_running_and_the_resume_command(
    server: FakeSoraServer,
) -> None:
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    running = [server.add_task(timeline=[("IN_PROGRESS", "10%")] * 1000) for _ in range(2)]
    out, err = io.StringIO(), io.StringIO()
    argv = ["wait", done, *running, *against(server), "--timeout", "60"]
    call = asyncio.create_task(cli.run(argv, out=out, err=err))
    # The finished task's outcome line (plain display, on stdout: "1/3 <id> SUCCESS") shows it
    # reached the loop body; its snapshot line comes before that.
    await eventually(lambda: all(server.polls(t) > 0 for t in running) and f"1/3 {done}" in out.getvalue())
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    text = err.getvalue()
    assert "2 task(s) still running upstream" in text
    assert f"sora-async wait {running[0]} {running[1]}" in text
    assert done not in text.split("sora-async wait", 1)[1]


def test_byte_progress_reports_the_first_chunk_each_tenth_and_the_end() -> None:
    """A line at the first chunk, each new tenth and the end; the first chunk of an unknown total too."""
    tenths = cli.Tenths()
    due = [done for done in range(0, 1001, 25) if tenths.due(done, 1000)]
    assert due == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    unknown = cli.Tenths()
    assert [unknown.due(done, None) for done in (10, 20, 30)] == [True, False, False]
