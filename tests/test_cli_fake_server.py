"""`sora-async fake-server` as a user runs it: a subprocess, its printed lines, its key, its log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from sora_async import (
    AuthenticationError,
    PollPolicy,
    SoraClient,
    Task,
    TaskFailedError,
    TaskNotFoundError,
)
from sora_async.testing import FakeSoraServer, Fault

README = pathlib.Path(__file__).parent.parent / "README.md"
FAST = PollPolicy(initial_interval=0.05, max_interval=0.1)
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}|-) \d+\.\d ms$")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("COMETAPI_KEY", "COMETAPI_BASE_URL")}


@dataclass
class Running:
    """A started `fake-server` process: what it printed on stdout, and its stderr so far."""

    process: asyncio.subprocess.Process
    header: list[str]
    stderr: list[str] = field(default_factory=list)
    code: int | None = None

    @property
    def exports(self) -> dict[str, str]:
        """The variables of the printed `export` line, unquoted as a shell would."""
        line = next(line for line in self.header if line.strip().startswith("export "))
        return dict(word.split("=", 1) for word in shlex.split(line)[1:])

    @property
    def task_ids(self) -> list[str]:
        line = next(line for line in self.header if line.strip().startswith("sora-async wait "))
        return line.split()[2:]

    def log(self) -> list[re.Match[str]]:
        """The request log lines (everything on stderr but the final "interrupted")."""
        lines = [line for line in self.stderr if line != "interrupted"]
        matches = [LOG_LINE.match(line) for line in lines]
        assert all(matches), lines
        return [m for m in matches if m is not None]


async def start(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sora_async",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=CLEAN_ENV,
    )


@contextlib.asynccontextmanager
async def fake_server(*argv: str) -> AsyncIterator[Running]:
    """Start `sora-async fake-server --port 0 ARGV`, read its header, stop it with SIGINT at the end."""
    process = await start("fake-server", "--port", "0", *argv)
    assert process.stdout is not None
    assert process.stderr is not None
    running = Running(process, [])

    async def drain(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            running.stderr.append(line.decode().rstrip("\n"))

    reader = asyncio.create_task(drain(process.stderr))
    try:
        expected = 4 if "--tasks" in argv else 2
        while len(running.header) < expected:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            assert line, f"the server ended early: {running.header}, {running.stderr}"
            running.header.append(line.decode().rstrip("\n"))
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        running.code = await asyncio.wait_for(process.wait(), timeout=30)
        await asyncio.wait_for(reader, timeout=30)


async def test_port_0_prints_the_real_port_and_the_line_to_paste() -> None:
    """With --port 0 the URL has the port picked; without --api-key any key works, as the line says."""
    async with fake_server() as server:
        exports = server.exports
        url = exports["COMETAPI_BASE_URL"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert not url.endswith(":0")
        assert exports["COMETAPI_KEY"] == "any-key"
        assert "accepting any key" in server.header[0]
        async with SoraClient("whatever-key-at-all", base_url=url) as client:
            task_id = await client.create_video("a red kite")
            assert (await client.get_task(task_id)).task_id == task_id
    assert server.code == 130  # Ctrl-C, as for every command
    assert server.stderr[-1] == "interrupted"
    assert "Traceback" not in "\n".join(server.stderr)


async def test_api_key_is_enforced_and_printed() -> None:
    """With --api-key only that key is accepted: another one gets 401, an AuthenticationError."""
    key = "sk-fake&key;1"  # shell characters, so the printed line must quote it
    async with fake_server("--api-key", key) as server:
        exports = server.exports
        assert exports["COMETAPI_KEY"] == key
        url = exports["COMETAPI_BASE_URL"]
        async with SoraClient(key, base_url=url) as client:
            task_id = await client.create_video("a red kite")
        async with SoraClient("sk-the-wrong-key", base_url=url) as client:
            with pytest.raises(AuthenticationError):
                await client.get_task(task_id)
    assert server.code == 130
    statuses = [(m["method"], m["path"], m["status"]) for m in server.log()]
    assert statuses == [("POST", "/sora/v1/videos", "200"), ("GET", f"/sora/v1/videos/{task_id}", "401")]


async def test_each_request_is_one_log_line_on_stderr() -> None:
    """Every answered request, API or not, is one line: time, method, path, status, milliseconds."""
    async with fake_server("--step-seconds", "0.02") as server:
        url = server.exports["COMETAPI_BASE_URL"]
        async with SoraClient("k", base_url=url) as client:
            task = await client.generate("a red kite", poll=FAST, timeout=30)
            assert await client.download_bytes(task)
            with pytest.raises(TaskNotFoundError):
                await client.get_task("task_unknown")
    assert server.code == 130
    log = server.log()
    assert log[0]["method"] == "POST"
    assert all(m["method"] == "GET" for m in log[1:])
    assert any(
        m["path"].startswith(f"/_fake/cdn/{task.task_id}/source") and m["status"] == "200" for m in log
    )
    assert any(m["path"] == "/sora/v1/videos/task_unknown" and m["status"] == "400" for m in log)
    assert "Traceback" not in "\n".join(server.stderr)


async def test_pre_created_tasks_are_printed_and_end_as_promised() -> None:
    """--tasks N --failure-rate R creates N tasks, says how many will fail, and they do."""
    async with fake_server("--tasks", "6", "--failure-rate", "0.5", "--step-seconds", "0.02") as server:
        ids = server.task_ids
        assert len(ids) == len(set(ids)) == 6
        promised = re.match(
            r"6 tasks created, (\d+) of them to fail, all done within [\d.]+ s:", server.header[2]
        )
        assert promised, server.header
        exports = server.exports
        async with SoraClient(exports["COMETAPI_KEY"], base_url=exports["COMETAPI_BASE_URL"]) as client:
            outcomes = await client.wait_many(ids, poll=FAST, timeout=30)
    assert set(outcomes) == set(ids)
    failed = [o for o in outcomes.values() if isinstance(o, TaskFailedError)]
    assert len(failed) + sum(isinstance(o, Task) for o in outcomes.values()) == 6
    assert len(failed) == int(promised[1]) > 0


async def test_same_tasks_on_every_run_and_seed_changes_them() -> None:
    """The ids are repeatable (the README shows them); --seed gives others."""
    async with fake_server("--tasks", "2") as first, fake_server("--tasks", "2") as second:
        assert first.task_ids == second.task_ids
    async with fake_server("--tasks", "2", "--seed", "7") as other:
        assert other.task_ids != first.task_ids


async def test_readme_fake_server_example_prints_what_it_shows() -> None:
    """The README's fake-server example, on a free port, prints the lines the README shows."""
    text = README.read_text().splitlines()
    start_at = next(i for i, line in enumerate(text) if line.startswith("$ sora-async fake-server "))
    shown = text[start_at + 1 : text.index("```", start_at)]
    argv = shlex.split(text[start_at])[3:]  # after "$ sora-async fake-server"
    async with fake_server(*argv) as server:
        port = server.exports["COMETAPI_BASE_URL"].rsplit(":", 1)[1]
    assert server.header == [line.replace(":8787", f":{port}") for line in shown]


async def test_a_taken_port_is_one_line_naming_it_and_exit_4() -> None:
    """A port in use: exit 4 (configuration) and one line naming the port, no [Errno 98]."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await start("fake-server", "--port", str(port))
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 4
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert str(port) in lines[0]
    assert "already in use" in lines[0]
    assert "Errno" not in lines[0]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["fake-server", "--fake"], "--fake"),
        (["--fake", "fake-server"], "--fake"),
        (["fake-server", "--base-url", "http://127.0.0.1:9"], "--base-url"),
        (["--base-url", "http://127.0.0.1:9", "fake-server"], "--base-url"),
        (["fake-server", "--port", "70000"], "--port"),
        (["fake-server", "--tasks", "-1"], "--tasks"),
        (["fake-server", "--failure-rate", "1.5"], "--failure-rate"),
        (["fake-server", "--step-seconds", "0"], "--step-seconds"),
        (["fake-server", "--retries", "3"], "--retries"),
        (["--request-timeout", "5", "fake-server"], "--request-timeout"),
        (["--allow-insecure-http", "fake-server"], "--allow-insecure-http"),
    ],
)
async def test_options_that_do_not_apply_are_usage_errors(argv: list[str], flag: str) -> None:
    """--fake and --base-url are refused, not ignored, as are out-of-range values: exit 2, no server."""
    process = await start(*argv, "--port", "0") if "--port" not in argv else await start(*argv)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert out == b""  # never started
    line = err.decode().splitlines()[-1]  # after argparse's usage line, when argparse refuses it
    assert line.startswith(("sora-async fake-server: error: ", "sora-async: error: unrecognized arguments: "))
    assert flag in line


async def test_on_request_reports_every_answer() -> None:
    """FakeSoraServer(on_request=...) sees API, video host and unknown paths, and dropped answers as 0."""
    seen: list[tuple[str, str, int]] = []
    async with FakeSoraServer(on_request=lambda m, p, s, _: seen.append((m, p, s))) as server:
        server.inject(Fault.reset(), route="query", task_id="task_reset")
        async with SoraClient("k", base_url=server.url) as client:
            task_id = await client.create_video("a red kite")
            with pytest.raises(TaskNotFoundError):  # the retry after the reset: an unknown id
                await client.get_task("task_reset", timeout=5)
        async with SoraClient("k", base_url=server.url) as client:  # a fresh pool after the reset
            await client.get_task(task_id)
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/nowhere") as response:
            assert response.status == 404
    assert seen[0] == ("POST", "/sora/v1/videos", 200)
    assert ("GET", "/sora/v1/videos/task_reset", 0) in seen
    assert ("GET", f"/sora/v1/videos/{task_id}", 200) in seen
    assert seen[-1] == ("GET", "/nowhere", 404)


async def test_a_failed_start_leaves_nothing_open() -> None:
    """FakeSoraServer.start on a taken port raises OSError and can be retried elsewhere."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = FakeSoraServer(port=taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            await server.start()
    with pytest.raises(RuntimeError):
        _ = server.url


@pytest.mark.parametrize(
    ("count", "rate", "failing"), [(5, 0.2, 1), (10, 0.34, 3), (4, 0.0, 0), (3, 1.0, 3), (0, 0.5, 0)]
)
def test_add_tasks_makes_exactly_the_share_that_fails(count: int, rate: float, failing: int) -> None:
    """A share, not a chance per task: five tasks at 0.2 always include one failure, whatever the seed."""
    for seed in range(5):
        server = FakeSoraServer(advance="clock")
        ids = server.add_tasks(count, failure_rate=rate, seed=seed)
        assert sum(server.tasks[t].timeline[-1][0] == "FAILURE" for t in ids) == failing


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_add_tasks_refuses_a_share_outside_0_to_1(rate: float) -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        FakeSoraServer().add_tasks(3, failure_rate=rate)
