"""The README's examples run as written."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import socket
import sys

from sora_async import CreateRecord, SoraClient
from sora_async.testing import FakeSoraServer, sample_file

README = pathlib.Path(__file__).parent.parent / "README.md"


def python_blocks(heading: str | None = None) -> list[str]:
    """The README's python blocks, or those of the `## heading` section, in order."""
    text = README.read_text()
    if heading is not None:
        start = text.index(f"\n## {heading}\n")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


VIDEOS = "Sora 2 and the other video models: `client.videos`"

EXAMPLES = {
    "Quickstart": 1,
    "Many tasks at once": 1,
    "Saving the video": 2,
    "Testing your own code: `sora_async.testing`": 1,
    VIDEOS: 3,
    "First five minutes": 3,  # run by test_readme_first_minutes.py
    "Crashes, restarts and Ctrl-C": 2,
}
"""How many python blocks each section has; every one is run by a test."""


async def run_python(code: str, env: dict[str, str], *args: str, cwd: str | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


def test_readme_has_the_examples() -> None:
    """The README shows a quickstart, a batch, a download, bytes and a stream, a testing example and
    the first five minutes' scripts, and no python block outside those sections (each is run below)."""
    assert {heading: len(python_blocks(heading)) for heading in EXAMPLES} == EXAMPLES
    assert len(python_blocks()) == sum(EXAMPLES.values())


async def test_quickstart_runs_against_fake_server() -> None:
    """The quickstart, unchanged, generates a video when COMETAPI_* point at a fake server."""
    quickstart = python_blocks("Quickstart")[0]
    assert len(quickstart.strip().splitlines()) <= 20
    async with FakeSoraServer(api_key="readme-key") as server:
        server.script_next([("IN_PROGRESS", "30%"), ("SUCCESS", "100%")])
        url = server.url
        env = {**os.environ, "COMETAPI_KEY": "readme-key", "COMETAPI_BASE_URL": url}
        code, output = await run_python(quickstart, env)
    assert code == 0, output
    assert "IN_PROGRESS 30%" in output
    assert f"{url}/_fake/cdn/" in output


async def test_batch_example_runs_against_fake_server() -> None:
    """The batch example reports a success, a failure and an unknown id, each once."""
    async with FakeSoraServer() as server:
        good = server.add_task(timeline=[("SUCCESS", "100%")])
        bad = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
        env = {**os.environ, "COMETAPI_KEY": "readme-key", "COMETAPI_BASE_URL": server.url}
        code, output = await run_python(
            python_blocks("Many tasks at once")[0], env, good, bad, "task_unknown"
        )
    assert code == 0, output
    lines = output.splitlines()
    assert len(lines) == 3
    assert any(line.startswith(f"{good} done: http") for line in lines)
    assert any(line.startswith(f"{bad} did not succeed: TaskFailedError") for line in lines)
    assert any(line.startswith("task_unknown did not succeed: TaskNotFoundError") for line in lines)


async def test_testing_example_runs() -> None:
    """The sora_async.testing example runs on its own and prints what it promises."""
    code, output = await run_python(
        python_blocks("Testing your own code: `sora_async.testing`")[0], dict(os.environ)
    )
    assert code == 0, output
    assert "failed as scripted: moderation" in output
    assert "polls: 2 creates: 2" in output


async def test_download_example_runs(tmp_path: pathlib.Path) -> None:
    """The download example saves the video under ./videos/, named from the task id."""
    async with FakeSoraServer() as server:
        task_id = server.add_task(timeline=[("SUCCESS", "100%")])
        env = {**os.environ, "COMETAPI_KEY": "readme-key", "COMETAPI_BASE_URL": server.url}
        code, output = await run_python(python_blocks("Saving the video")[0], env, task_id, cwd=str(tmp_path))
    assert code == 0, output
    assert output.strip() == f"saved videos/{task_id}_source.mp4 {len(sample_file('mp4'))} bytes"


async def test_bytes_and_stream_example_runs() -> None:
    """The bytes-and-stream example prints the thumbnail's size, then the whole video's."""
    code, output = await run_python(python_blocks("Saving the video")[1], dict(os.environ))
    assert code == 0, output
    video = len(sample_file("mp4"))
    assert output.split() == [str(len(sample_file("jpg"))), "source", str(video), str(video)]


async def test_cli_example_runs(tmp_path: pathlib.Path) -> None:
    """The CLI example in the README runs as shown and prints the lines it shows."""
    text = README.read_text()
    command = next(line[2:] for line in text.splitlines() if line.startswith("$ sora-async "))
    process = await asyncio.create_subprocess_shell(
        command.replace("sora-async", f"{sys.executable} -m sora_async", 1),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "COMETAPI_KEY"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = output.decode().splitlines()
    assert process.returncode == 0, lines
    assert lines[0] == "Using an embedded fake server (--fake)."
    assert any(line.endswith("SUCCESS 100%") for line in lines)
    assert lines[-1].startswith("saved: demo-output/task_")
    (saved,) = (tmp_path / "demo-output").iterdir()
    assert saved.read_bytes()[4:8] == b"ftyp"


async def test_videos_quickstart_runs_against_fake_server(tmp_path: pathlib.Path) -> None:
    """The client.videos quickstart prints each change, then the video's fields and the saved file."""
    async with FakeSoraServer(api_key="readme-key") as server:
        server.script_next([("IN_PROGRESS", "30%"), ("SUCCESS", "100%")])
        env = {**os.environ, "COMETAPI_KEY": "readme-key", "COMETAPI_BASE_URL": server.url}
        code, output = await run_python(python_blocks(VIDEOS)[0], env, cwd=str(tmp_path))
    assert code == 0, output
    *changes, last = output.strip().splitlines()
    assert changes == ["IN_PROGRESS 30%", "SUCCESS 100%"]
    (saved,) = (tmp_path / "videos").iterdir()
    assert last == f"{saved.name.removesuffix('_video.mp4')} sora-2 8 1280x720 -> videos/{saved.name}"
    assert saved.read_bytes() == sample_file("mp4")


async def test_the_migration_example_runs_both_ways(tmp_path: pathlib.Path) -> None:
    """The same job with openai (create_and_poll + download_content) and with this SDK, against the fake.

    The openai one needs tasks that start as queued: its poll returns at the first status it does
    not know, and the gateway (and the fake by default) says `unknown` before a task starts.
    """
    with_openai, with_us = python_blocks(VIDEOS)[1:]
    steps = [("QUEUED", "20%"), ("IN_PROGRESS", "60%"), ("SUCCESS", "100%")]
    for name, code_text in (("openai", with_openai), ("sora_async", with_us)):
        folder = tmp_path / name
        folder.mkdir()
        async with FakeSoraServer(api_key="readme-key", timeline=steps) as server:
            env = {**os.environ, "COMETAPI_KEY": "readme-key", "COMETAPI_BASE_URL": server.url}
            code, output = await run_python(code_text, env, cwd=str(folder))
            video_id = next(iter(server.tasks))
        assert code == 0, output
        assert output.strip().splitlines()[-1] == (
            f"{video_id} completed" if name == "openai" else f"{video_id} SUCCESS"
        )
        assert (folder / "kite.mp4").read_bytes() == sample_file("mp4")
        assert server.requests["create"] == 1


CRASHES = "Crashes, restarts and Ctrl-C"


async def test_crash_examples_run_and_the_second_picks_up_what_the_first_left(tmp_path: pathlib.Path) -> None:
    """The first example generates and saves; after a crash (tasks created and never waited
    for, one create in doubt), the second reports the doubt, waits and saves the rest."""
    first, second = python_blocks(CRASHES)
    quick = [("IN_PROGRESS", "50%"), ("SUCCESS", "100%")]  # two polls per task
    async with FakeSoraServer(api_key="readme-key", timeline=quick) as server:
        env = {**os.environ, "COMETAPI_KEY": "readme-key", "COMETAPI_BASE_URL": server.url}
        code, output = await run_python(first, env, "a red kite", "a blue kite", cwd=str(tmp_path))
        assert code == 0, output
        assert output.splitlines() == ["a red kite -> SUCCESS", "a blue kite -> SUCCESS", "2 files saved"]
        # A crash: two creates answered, never waited for; one sent and never answered.
        async with SoraClient(
            "readme-key", base_url=server.url, journal=tmp_path / "jobs.sqlite3"
        ) as crashed:
            left = [await crashed.create_video(f"a kite {n}") for n in range(2)]
            assert crashed.journal is not None
            await crashed.journal.record_create(
                CreateRecord(
                    ref="f" * 32,
                    format="reverse",
                    prompt="a lost kite",
                    sent_at=0.0,
                    owner=f"{socket.gethostname()}:999999999:",
                )
            )
        code, output = await run_python(second, env, cwd=str(tmp_path))
    assert code == 0, output
    warning = "1 create(s) in the journal are in doubt: sent, never answered, possibly billed"
    lines = [line for line in output.splitlines() if not line.startswith(warning)]  # the log's, on stderr
    assert len(lines) == len(output.splitlines()) - 1
    assert lines[0].startswith("in doubt, look for it on the dashboard: a lost kite ")
    assert lines[1] == "2 tasks to wait for"
    assert sorted(lines[2:4]) == sorted(f"{task_id} done" for task_id in left)
    assert sorted(lines[4:]) == sorted(f"{task_id} saved to videos/{task_id}_source.mp4" for task_id in left)
