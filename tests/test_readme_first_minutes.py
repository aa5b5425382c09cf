"""The README's "First five minutes" runs top to bottom: the fake server, each command, each example.

The section is read as a reader follows it: its install lines are replaced
by a PATH on which `python` and `sora-async` are this interpreter; its
`sora-async fake-server` line starts the server (on a free port, with a
compressed clock); the lines that set variables are pasted with the values
that server printed; every other `sh` line runs with bash, and the `python`
blocks are saved under the names on their first lines for the lines that
run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sora_async import SoraClient
from sora_async.testing import sample_file

from .test_cli_fake_server import CLEAN_ENV, Running, fake_server
from .test_readme import CRASHES, README, python_blocks

HEADING = "## First five minutes"
STEP_SECONDS = "0.2"
"""Seconds per task state for the test's server; the README shows the default (2 s)."""

REPLACED_BY_PATH = (
    "python3 -m venv .venv && . .venv/bin/activate",
    "pip install '.[cli]'",
    ". .venv/bin/activate",
)
"""The section's set-up lines; the test puts this interpreter first on PATH instead."""

SETTING = re.compile(r"^(export )?[A-Za-z_][A-Za-z0-9_]*=")


def section() -> str:
    """The text of the section, up to the next heading of its level."""
    text = README.read_text()
    start = text.index(f"\n{HEADING}\n")
    return text[start : text.index("\n## ", start + 1)]


def fenced(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of `text` in order, as (info string, content)."""
    found: list[tuple[str, str]] = []
    info: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if info is None and line.startswith("```"):
            info, lines = line[3:].strip(), []
        elif info is not None and line == "```":
            found.append((info, "\n".join(lines) + "\n"))
            info = None
        elif info is not None:
            lines.append(line)
    assert info is None, "a block of the section is not closed"
    return found


@dataclass
class Walkthrough:
    """The section, sorted into what the test does with each part."""

    setup: list[str] = field(default_factory=list)
    server: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)
    scripts: dict[str, str] = field(default_factory=dict)

    @property
    def commands(self) -> list[str]:
        return [line for kind, line in self.steps if kind == "run"]


def walkthrough() -> Walkthrough:
    """Sort the section's blocks: set-up, the server and its shown output, settings, commands, scripts."""
    walk = Walkthrough()
    for info, content in fenced(section()):
        if info == "python":
            name = re.fullmatch(r"# (\w+\.py)", content.splitlines()[0])
            assert name, f"a py block must start with '# NAME.py': {content[:40]!r}"
            walk.scripts[name[1]] = content
        elif info == "":
            assert not walk.shown, "one block of output is expected: the server's"
            walk.shown = content.splitlines()
        else:
            assert info == "sh", info
            for line in filter(None, (line.strip() for line in content.splitlines())):
                if line in REPLACED_BY_PATH:
                    walk.setup.append(line)
                elif line.startswith("sora-async fake-server"):
                    walk.server = shlex.split(line)[2:]
                else:
                    walk.steps.append(("set" if SETTING.match(line) else "run", line))
    return walk


def pasted(shown: list[str], printed: list[str]) -> dict[str, str]:
    """What the reader changes when pasting: each value of the export and each id, shown -> printed."""

    def exports(lines: list[str]) -> dict[str, str]:
        line = next(line for line in lines if line.strip().startswith("export "))
        return dict(word.split("=", 1) for word in shlex.split(line)[1:])

    def task_ids(lines: list[str]) -> list[str]:
        return next(line.split()[2:] for line in lines if line.strip().startswith("sora-async wait "))

    before, after = exports(shown), exports(printed)
    assert before.keys() == after.keys()
    pairs = [
        *((before[name], after[name]) for name in before),
        *zip(task_ids(shown), task_ids(printed), strict=True),
    ]
    return {old: new for old, new in pairs if old != new}


def substitute(text: str, replace: dict[str, str]) -> str:
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def command_path(folder: pathlib.Path) -> str:
    """A PATH on which `python` and `sora-async` run this interpreter, as an activated venv would."""
    folder.mkdir()
    python = shlex.quote(sys.executable)
    for name, run in (("python", python), ("sora-async", f"{python} -m sora_async")):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec {run} "$@"\n')
        script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


async def run_bash(script: str, cwd: pathlib.Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run `script` with bash, no terminal and no input; return (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def started(argv: list[str]) -> AsyncIterator[Running]:
    """`fake_server(argv)`, killed if it outlives its Ctrl-C."""
    process: asyncio.subprocess.Process | None = None
    try:
        async with fake_server(*argv) as server:
            process = server.process
            yield server
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


def expected_exit(line: str) -> int:
    """The exit code a command's comment promises ("... exits 1"), else 0."""
    comment = line.partition("#")[2]
    found = re.search(r"\bexits (\d+)", comment)
    return int(found.group(1)) if found else 0


def without_duration(lines: list[str]) -> list[str]:
    """The header with its "all done within N s", which follows --step-seconds, made neutral."""
    return [re.sub(r"within [\d.]+ s:", "within N s:", line) for line in lines]


def test_section_shows_every_command_and_method() -> None:
    """The section runs each command with and without --json, and calls every public method."""
    walk = walkthrough()
    assert walk.setup == [*REPLACED_BY_PATH], "the set-up lines are the Install section's"
    for name in ("generate", "status", "wait", "download"):
        forms = [
            shlex.split(line, comments=True)
            for line in walk.commands
            if line.startswith(f"sora-async {name} ")
        ]
        assert any("--json" not in argv for argv in forms), name
        assert any("--json" in argv for argv in forms), name
    # The journal's methods need a crash to show what they are for: their own section shows
    # them, in examples test_readme.py runs.
    code = "".join(walk.scripts.values()) + "".join(python_blocks(CRASHES))
    methods = {name for name, value in vars(SoraClient).items() if callable(value) and name[0] != "_"}
    methods.discard("aclose")  # `async with SoraClient()` calls it
    assert {name for name in methods if f"client.{name}(" not in code} == set()
    assert [line.split()[1] for line in walk.commands if line.startswith("python ")] == [*walk.scripts]


async def test_first_five_minutes_top_to_bottom(tmp_path: pathlib.Path) -> None:
    """Against the server the section starts, every command exits as its comment says (0 unless it
    says otherwise) and makes the files it promises."""
    walk = walkthrough()
    work = tmp_path / "clone"
    work.mkdir()
    for name, source in walk.scripts.items():
        (work / name).write_text(source)
    env = {**CLEAN_ENV, "PATH": command_path(tmp_path / "bin")}
    ran: list[tuple[str, str]] = []
    async with started([*walk.server, "--step-seconds", STEP_SECONDS]) as server:
        replace = pasted(walk.shown, server.header)
        shown = [substitute(line, replace) for line in walk.shown]
        assert without_duration(server.header) == without_duration(shown)
        settings: list[str] = []
        for kind, line in walk.steps:
            line = substitute(line, replace)
            if kind == "set":
                settings.append(line)
                continue
            code, out, err = await run_bash("\n".join([*settings, line]), work, env)
            assert code == expected_exit(line), (line, out, err, server.stderr[-5:])
            if "--json" in shlex.split(line, comments=True):
                document = json.loads(out)
                errors = {task["error"] for task in document.get("tasks", []) if "error" in task}
                assert errors <= {"TaskFailedError"}, document  # the one task made to fail, no other error
                events = [json.loads(progress)["event"] for progress in err.splitlines()]
                assert set(events) <= {"task", "bytes", "outcome"}, err
            ran.append((line, out))
    assert server.header[1].strip() in settings  # the export line, pasted as printed

    first, count = server.task_ids[0], len(server.task_ids)
    mp4, jpg = sample_file("mp4"), sample_file("jpg")
    videos = {path.name: path.read_bytes() for path in (work / "videos").iterdir()}
    assert videos.pop(f"{first}_source.mp4") == mp4
    assert videos.pop(f"{first}_thumbnail.jpg") == jpg
    assert list(videos.values()) == [mp4]  # the one `generate` made
    in_json = {path.name: path.read_bytes() for path in (work / "json").iterdir()}
    assert in_json.pop(f"{first}_source.mp4") == mp4
    assert list(in_json.values()) == [mp4]
    (saved,) = (work / "py-videos").iterdir()
    assert saved.read_bytes() == mp4

    def output(command: str) -> list[str]:
        return next(out for line, out in ran if line.split("#")[0].split() == command.split()).splitlines()

    failing = int(re.findall(r"(\d+) of them to fail", server.header[2])[0])
    assert failing == 1
    assert output("sora-async wait $ids")[-1] == f"{count - failing} of {count} succeeded"
    assert output("python one.py")[-1] == (
        f"saved py-videos/{saved.name} | thumbnail: {len(jpg)} bytes | streamed: {len(mp4)} bytes"
    )
    assert output("python many.py $ids")[-1] == f"{count - failing} of {count} succeeded"
