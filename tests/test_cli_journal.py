"""The CLI's task journal: where it lives, `jobs`, `jobs forget`, `resume`, and what the next run says.

Every test runs against a `FakeSoraServer` on loopback. The autouse fixture
of conftest.py points $SORA_ASYNC_JOURNAL at a file of the test's own; the
tests of the default location remove it and point XDG_STATE_HOME at tmp_path.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import platformdirs
import pytest

from sora_async import SoraClient, cli
from sora_async._journal import CreateRecord
from sora_async._journal_sqlite import SQLiteJournal
from sora_async.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE
from sora_async.cli._args import default_journal_path, since_time
from sora_async.cli._jobs import local_time
from sora_async.testing import FakeSoraServer, Fault, sample_file

from .conftest import eventually
from .test_cli import KEY, against, run_cli

DEAD = f"{socket.gethostname()}:999999999:"
"""A create's owner that is a process of this host that no longer exists."""

QUICK = [("IN_PROGRESS", "50%"), ("SUCCESS", "100%")]


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def journal_file() -> pathlib.Path:
    """The journal every command of the test uses by default ($SORA_ASYNC_JOURNAL, set by conftest)."""
    return pathlib.Path(os.environ["SORA_ASYNC_JOURNAL"])


async def earlier_run(
    path: pathlib.Path,
    *,
    tasks: Sequence[str] = (),
    doubt: str | None = None,
    doubt_at: float | None = None,
) -> str:
    """Record what a run that died left: creates of `tasks` answered and never waited for, and a create
    of the prompt `doubt` sent at `doubt_at` and never answered. Returns that create's reference."""
    journal = SQLiteJournal(path)
    for task_id in tasks:
        ref = uuid.uuid4().hex
        create = CreateRecord(
            ref=ref, format="reverse", prompt=f"prompt of {task_id}", sent_at=time.time(), owner=DEAD
        )
        await journal.record_create(create)
        await journal.record_answer(ref, "created", task_id=task_id)
    ref = uuid.uuid4().hex
    if doubt is not None:
        sent_at = doubt_at if doubt_at is not None else time.time()
        await journal.record_create(
            CreateRecord(ref=ref, format="reverse", prompt=doubt, sent_at=sent_at, owner=DEAD)
        )
    await journal.aclose()
    return ref


async def pending_ids(path: pathlib.Path) -> list[str]:
    journal = SQLiteJournal(path)
    try:
        return [task.task_id for task in await journal.tasks(pending=True)]
    finally:
        await journal.aclose()


# --- where the journal lives ---------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_STATE_HOME is the state folder on Linux")
async def test_the_default_journal_is_in_the_user_state_folder(
    server: FakeSoraServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SORA_ASYNC_JOURNAL")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    expected = tmp_path / "state" / "sora-async" / "journal.sqlite3"
    assert (
        default_journal_path() == platformdirs.user_state_path("sora-async") / "journal.sqlite3" == expected
    )
    server.script_next([("SUCCESS", "100%")])
    code, _, err = await run_cli("generate", "a boat", *against(server))
    assert code == EXIT_OK, err
    (task_id,) = server.tasks
    journal = SQLiteJournal(expected)  # the folder was created, the task recorded
    try:
        (record,) = await journal.tasks()
    finally:
        await journal.aclose()
    assert (record.task_id, record.status, record.prompt) == (task_id, "SUCCESS", "a boat")


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_STATE_HOME is the state folder on Linux")
async def test_without_platformdirs_the_default_journal_is_a_config_error_that_says_what_to_do(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SORA_ASYNC_JOURNAL")
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # `import platformdirs` raises ImportError
    assert default_journal_path() is None
    code, _, err = await run_cli("jobs")
    assert code == EXIT_CONFIG, err
    assert "pip install platformdirs" in err
    assert "--journal PATH" in err
    assert "--no-journal" in err


async def test_journal_flag_comes_before_the_environment(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    server.script_next([("SUCCESS", "100%")])
    chosen = tmp_path / "new" / "folder" / "mine.sqlite3"
    code, _, err = await run_cli("generate", "a boat", *against(server), "--journal", str(chosen))
    assert code == EXIT_OK, err
    assert chosen.exists()
    assert not journal_file.exists()
    code, out, _ = await run_cli("jobs", "--journal", str(chosen), "--json")
    assert [task["task_id"] for task in json.loads(out)["tasks"]] == list(server.tasks)


async def test_no_journal_records_nothing(
    server: FakeSoraServer,
    tmp_path: pathlib.Path,
    journal_file: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    server.script_next([("SUCCESS", "100%")])
    code, _, err = await run_cli("--no-journal", "generate", "a boat", *against(server))
    assert code == EXIT_OK, err
    task_id = next(iter(server.tasks))
    for argv in (["wait", task_id], ["status", task_id], ["download", task_id, "-o", f"{tmp_path}/"]):
        code, _, err = await run_cli(*argv, *against(server), "--no-journal")
        assert code == EXIT_OK, err
    assert not journal_file.exists()
    assert not (tmp_path / "state").exists()


async def test_fake_never_records(journal_file: pathlib.Path) -> None:
    """--fake's tasks end with the command: nothing to resume, so nothing in the journal."""
    code, _, err = await run_cli("--fake", "generate", "a boat")
    assert code == EXIT_OK, err
    assert not journal_file.exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--journal", "j.sqlite3", "--no-journal", "status", "task_1"], "cannot be used together"),
        (["--fake", "--journal", "j.sqlite3", "generate", "x"], "drop --journal"),
        (["--no-journal", "jobs"], "jobs reads the task journal, which --no-journal turns off"),
        (["--no-journal", "resume"], "resume reads the task journal"),
        (["--fake", "resume"], "which --fake turns off"),
        (["jobs", "forget", "x", "--no-journal"], "jobs forget reads the task journal"),
    ],
)
async def test_contradicting_journal_options_are_usage_errors(argv: list[str], words: str) -> None:
    code, _, err = await run_cli(*argv, "--api-key", KEY)
    assert code == EXIT_USAGE
    assert words in err


async def test_fake_server_refuses_the_journal_options() -> None:
    for flag in ("--journal=j.sqlite3", "--no-journal"):
        code, _, err = await run_cli(flag, "fake-server", "--port", "0")
        assert code == EXIT_USAGE
        assert f"{flag.split('=')[0]} cannot be used here" in err


async def test_a_journal_that_cannot_be_opened_exits_4_before_any_create(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all, but long enough to be read as one" * 100)
    code, _, err = await run_cli("generate", "a boat", *against(server), "--journal", str(garbage))
    assert code == EXIT_CONFIG
    assert "error: cannot open journal" in err
    assert "hint: choose another file with --journal PATH" in err
    assert "--no-journal" in err
    assert not server.tasks  # nothing was created that the journal does not know of
    under_a_file = garbage / "journal.sqlite3"
    code, _, err = await run_cli("status", "task_1", *against(server), "--journal", str(under_a_file))
    assert code == EXIT_CONFIG
    assert "cannot create the journal's folder" in err


# --- jobs --------------------------------------------------------------------------------


async def test_jobs_lists_tasks_and_creates_in_doubt(
    server: FakeSoraServer, journal_file: pathlib.Path
) -> None:
    server.script_next([("IN_PROGRESS", "30%")] * 1000)
    code, _, _ = await run_cli("generate", "a paper boat " * 10, *against(server), "--timeout", "0.3")
    assert code == 3
    server.script_next([("SUCCESS", "100%")])
    code, _, _ = await run_cli("generate", "a red kite", *against(server))
    assert code == EXIT_OK
    sent_at = time.time() - 7200
    ref = await earlier_run(journal_file, doubt="a lost kite", doubt_at=sent_at)
    slow, done = server.tasks
    code, out, err = await run_cli("jobs")  # no key needed
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PERCENT", "AGE", "PROMPT"]
    ages = [line.split()[3] for line in lines[1:3]]
    assert all(age[:-1].isdigit() and age.endswith("s") for age in ages)  # seconds old
    assert [
        line.replace(f" {age} ", " AGE ").split() for line, age in zip(lines[1:3], ages, strict=True)
    ] == [
        [
            slow,
            "IN_PROGRESS",
            "30%",
            "AGE",
            *["a", "paper", "boat", "a", "paper", "boat", "a", "paper", "boat…"],
        ],
        [done, "SUCCESS", "100%", "AGE", "a", "red", "kite"],
    ]
    assert lines[3].split() == [ref, "IN", "DOUBT", "-", "2h", "a", "lost", "kite"]
    assert f'in doubt: create {ref}, sent {local_time(sent_at)}, prompt "a lost kite"' in lines
    assert "CometAPI's dashboard" in out
    assert "sora-async jobs forget REF" in out


async def test_jobs_json(server: FakeSoraServer, journal_file: pathlib.Path) -> None:
    server.script_next([("SUCCESS", "100%")])
    code, _, _ = await run_cli("generate", "a red kite", *against(server))
    assert code == EXIT_OK
    ref = await earlier_run(journal_file, doubt="a lost kite", doubt_at=1000.0)
    code, out, _ = await run_cli("jobs", "--json")
    assert code == EXIT_OK
    document = json.loads(out)
    assert document["journal"] == str(journal_file)
    (task,) = document["tasks"]
    assert (task["task_id"], task["status"], task["percent"], task["prompt"]) == (
        next(iter(server.tasks)),
        "SUCCESS",
        100.0,
        "a red kite",
    )
    assert task["files"] == []
    (create,) = document["in_doubt"]
    assert (create["ref"], create["prompt"], create["sent_at"], create["state"]) == (
        ref,
        "a lost kite",
        1000.0,
        "in_doubt",
    )
    assert "owner" not in create


async def test_jobs_filters(server: FakeSoraServer, journal_file: pathlib.Path) -> None:
    server.script_next([("SUCCESS", "100%")])
    await run_cli("generate", "it works", *against(server))
    server.script_next([("FAILURE", "100%")], fail_reason="moderation")
    await run_cli("generate", "it fails", *against(server))
    succeeded, failed_task = server.tasks
    unfinished = server.add_task(timeline=QUICK)
    ref = await earlier_run(
        journal_file, tasks=[unfinished], doubt="a lost kite", doubt_at=time.time() - 86400 * 3
    )

    async def listed(*argv: str) -> list[str]:
        code, out, err = await run_cli("jobs", "--json", *argv)
        assert code == EXIT_OK, err
        document = json.loads(out)
        return [t["task_id"] for t in document["tasks"]] + [c["ref"] for c in document["in_doubt"]]

    assert await listed() == [succeeded, failed_task, unfinished, ref]
    assert await listed("--pending") == [unfinished, ref]
    assert await listed("--failed") == [failed_task]
    assert await listed("--pending", "--failed") == [failed_task, unfinished, ref]
    assert await listed("--since", "1h") == [succeeded, failed_task, unfinished]
    assert await listed("--since", "4d") == [succeeded, failed_task, unfinished, ref]
    assert await listed("--since", "2099-01-01") == []
    assert await listed("--pending", "--since", "2000-01-01T00:00Z") == [unfinished, ref]
    code, out, _ = await run_cli("jobs", "--since", "2099-01-01")
    assert (code, out) == (EXIT_OK, f"no job matches in the journal {journal_file}\n")


@pytest.mark.parametrize("value", ["yesterday", "2h ago", "-1h", "5", "2025-13-01", ""])
async def test_a_bad_since_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = await run_cli("jobs", f"--since={value}")
    assert code == EXIT_USAGE
    err = capsys.readouterr().err  # argparse's own message, on the process's stderr
    assert "argument --since: expected a duration such as 30m, 2h or 1d, or an ISO date or time" in err


def test_since_reads_durations_and_iso_times() -> None:
    now = time.time()
    for text, back in (
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
    ):
        assert since_time(text) == pytest.approx(now - back, abs=5), text
    assert since_time("2025-01-14T15:30:00+00:00") == 1736868600.0
    assert since_time("2025-01-14T15:30:00Z") == 1736868600.0
    assert since_time("2025-01-14") == time.mktime((2025, 1, 14, 0, 0, 0, 0, 0, -1))  # local midnight


async def test_jobs_on_a_journal_that_does_not_exist_says_so_and_creates_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    path = tmp_path / "nothing" / "here.sqlite3"
    code, out, _ = await run_cli("jobs", "--journal", str(path))
    assert (code, out) == (EXIT_OK, f"no jobs in the journal {path}\n")
    code, _, err = await run_cli("jobs", "forget", "task_1", "--journal", str(path))
    assert code == EXIT_NOT_FOUND
    assert f"not in the journal {path}: task_1" in err
    assert not (tmp_path / "nothing").exists()


async def test_jobs_forget(server: FakeSoraServer, journal_file: pathlib.Path) -> None:
    kept, gone = server.add_task(timeline=QUICK), server.add_task(timeline=QUICK)
    ref = await earlier_run(journal_file, tasks=[kept, gone], doubt="a lost kite")
    code, out, err = await run_cli("jobs", "forget", gone, ref)
    assert (code, out, err) == (EXIT_OK, f"forgot {gone}\nforgot {ref}\n", "")
    assert await pending_ids(journal_file) == [kept]
    code, out, err = await run_cli("jobs", "forget", kept, "task_nope", "--json")
    assert code == EXIT_NOT_FOUND
    assert json.loads(out) == {"journal": str(journal_file), "forgotten": [kept], "not_found": ["task_nope"]}
    code, _, err = await run_cli("jobs", "--journal", str(journal_file), "forget", "task_nope")
    assert code == EXIT_NOT_FOUND
    assert err == f"not in the journal {journal_file}: task_nope\n"
    code, out, _ = await run_cli("jobs")
    assert "IN DOUBT" not in out
    assert out == f"no jobs in the journal {journal_file}\n"


# --- resume ------------------------------------------------------------------------------


async def test_resume_waits_for_and_saves_what_an_earlier_run_left(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    for _ in range(3):
        server.script_next(QUICK)
    async with SoraClient(KEY, base_url=server.url, journal=journal_file) as client:
        left = [await client.create_video(f"a kite {n}") for n in range(3)]  # never waited for
    folder = tmp_path / "videos"
    code, out, err = await run_cli("resume", "-o", str(folder), *against(server), "--timeout", "30")
    assert code == EXIT_OK, err
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{t}_source.mp4" for t in left)
    assert all(path.read_bytes() == sample_file("mp4") for path in folder.iterdir())
    for task_id in left:
        assert f"saved: {folder / f'{task_id}_source.mp4'}" in out.splitlines()
    assert out.splitlines()[-1] == "3 finished, 3 saved, 0 failed, 0 not found, 0 still pending, 0 in doubt"
    assert await pending_ids(journal_file) == []
    polls = sum(server.polls(t) for t in left)
    code, out, _ = await run_cli("resume", "-o", str(folder), *against(server))
    assert (code, out) == (
        EXIT_OK,
        f"nothing to resume: no unfinished task and no video left to save in the journal {journal_file}\n",
    )
    assert sum(server.polls(t) for t in left) == polls


async def test_resume_reports_failures_still_pending_and_creates_in_doubt(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    fine = server.add_task(timeline=QUICK)
    failing = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="moderation")
    unknown = "task_01unknownunknownunknownunk"
    sent_at = time.time() - 600
    ref = await earlier_run(
        journal_file, tasks=[fine, failing, unknown], doubt="a lost kite", doubt_at=sent_at
    )
    code, out, err = await run_cli("resume", "-o", str(tmp_path), *against(server), "--timeout", "30")
    assert code == EXIT_NOT_FOUND, err  # 5 outranks 1, as for wait
    lines = out.splitlines()
    assert any(line.endswith(f"{failing} FAILURE (moderation)") for line in lines)
    assert f"saved: {tmp_path / f'{fine}_source.mp4'}" in lines
    assert "1 finished, 1 saved, 1 failed, 1 not found, 0 still pending, 1 in doubt" in lines
    assert any(line.startswith(f"not found: {unknown}: the gateway does not know them") for line in lines)
    assert any(line.endswith(f"{unknown} not found: task_not_exist (HTTP 400)") for line in lines)
    assert f'in doubt: create {ref}, sent {local_time(sent_at)}, prompt "a lost kite"' in lines
    assert "CometAPI's dashboard" in out


async def test_resume_names_what_is_still_pending_when_its_timeout_passes(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    [slow] = server.add_tasks(1, never_finish=True)
    await earlier_run(journal_file, tasks=[slow])
    started = time.monotonic()
    code, out, err = await run_cli("resume", "-o", str(tmp_path), *against(server), "--timeout", "0.5")
    assert time.monotonic() - started < 10
    assert code == EXIT_TIMEOUT, err
    lines = out.splitlines()
    assert "0 finished, 0 saved, 0 failed, 0 not found, 1 still pending, 0 in doubt" in lines
    assert any(line.startswith(f"still pending: {slow}; run sora-async resume -o ") for line in lines)
    assert await pending_ids(journal_file) == [slow]


async def test_resume_names_unfinished_tasks_of_another_api(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    async with FakeSoraServer(api_key=KEY) as other:
        async with SoraClient(KEY, base_url=other.url, journal=journal_file) as client:
            await client.create_video("a kite of the other API")
        elsewhere = other.url
    code, out, err = await run_cli("resume", "-o", str(tmp_path), *against(server))
    assert code == EXIT_OK, err
    assert out.splitlines()[-1] == (
        f"1 unfinished task of another API: sora-async resume --base-url {elsewhere} picks it up"
    )


async def test_resume_json(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    fine = server.add_task(timeline=QUICK)
    ref = await earlier_run(journal_file, tasks=[fine], doubt="a lost kite")
    code, out, err = await run_cli("resume", "-o", str(tmp_path), *against(server), "--json")
    assert code == EXIT_OK
    document = json.loads(out)
    assert [task["task_id"] for task in document["tasks"]] == [fine]
    assert document["files"] == [{"task_id": fine, "file": str(tmp_path / f"{fine}_source.mp4")}]
    assert [create["ref"] for create in document["in_doubt"]] == [ref]
    assert document["summary"] == {
        "finished": 1,
        "saved": 1,
        "failed": 0,
        "not_found": 0,
        "still_pending": 0,
        "in_doubt": 1,
    }
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert "outcome" in events
    assert "download" in events


async def test_resume_needs_a_key_and_a_folder(
    server: FakeSoraServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    code, _, err = await run_cli("resume", "--base-url", server.url)
    assert code == EXIT_CONFIG
    assert "no API key" in err
    afile = tmp_path / "file.mp4"
    afile.write_bytes(b"x")
    code, _, err = await run_cli("resume", "-o", str(afile), *against(server))
    assert code == EXIT_USAGE
    assert "resume saves each video into a folder" in err


async def test_ctrl_c_during_resume_says_how_to_go_on(
    server: FakeSoraServer, tmp_path: pathlib.Path, journal_file: pathlib.Path
) -> None:
    slow = server.add_task(timeline=[("IN_PROGRESS", "10%")] * 1000)
    await earlier_run(journal_file, tasks=[slow])
    out, err = io.StringIO(), io.StringIO()
    argv = ["resume", "-o", str(tmp_path), *against(server)]
    call = asyncio.create_task(cli.run(argv, out=out, err=err))
    await eventually(lambda: server.polls(slow) > 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert (
        f"interrupted: what is not done stays in the journal; to go on: sora-async resume -o {tmp_path}"
        in (err.getvalue())
    )
    assert await pending_ids(journal_file) == [slow]


# --- what the next run says ----------------------------------------------------------------


async def test_generate_says_what_earlier_runs_left(
    server: FakeSoraServer, journal_file: pathlib.Path
) -> None:
    left = server.add_task(timeline=QUICK)
    await earlier_run(journal_file, tasks=[left], doubt="a lost kite")
    server.script_next([("SUCCESS", "100%")])
    code, _, err = await run_cli("generate", "a boat", *against(server))
    assert code == EXIT_OK
    assert err.splitlines()[0] == (
        f"1 task from earlier runs is unfinished and 1 create is in doubt: sora-async resume --base-url "
        f"{server.url} waits for and downloads them; sora-async jobs --pending lists them"
    )
    server.script_next([("SUCCESS", "100%")])
    code, out, err = await run_cli("generate", "a boat", *against(server), "--json")
    assert code == EXIT_OK
    json.loads(out)  # stdout stays one document
    (event,) = [json.loads(line) for line in err.splitlines() if '"pending"' in line]
    assert event["event"] == "pending"
    assert (event["tasks"], event["in_doubt"]) == (1, 1)


async def test_only_creates_in_doubt_are_named_as_such(
    server: FakeSoraServer, journal_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    await earlier_run(journal_file, doubt="a lost kite")
    server.script_next([("SUCCESS", "100%")])
    code, _, err = await run_cli("generate", "a boat", *against(server), "--journal", str(journal_file))
    assert code == EXIT_OK
    assert err.splitlines()[0] == (
        "1 create from earlier runs is in doubt (a task may exist and be billed): "
        f"sora-async jobs --pending --journal {journal_file} lists it"
    )


async def test_wait_leaves_out_the_tasks_it_waits_for(
    server: FakeSoraServer, journal_file: pathlib.Path
) -> None:
    one, two = server.add_task(timeline=QUICK), server.add_task(timeline=QUICK)
    await earlier_run(journal_file, tasks=[one, two])
    code, _, err = await run_cli("wait", one, *against(server))
    assert code == EXIT_OK
    assert err.splitlines()[0].startswith("1 task from earlier runs is unfinished: sora-async resume")
    code, _, err = await run_cli("wait", two, *against(server))
    assert code == EXIT_OK
    assert "earlier runs" not in err


async def test_tasks_of_a_process_that_still_runs_are_not_from_earlier_runs(
    server: FakeSoraServer, journal_file: pathlib.Path
) -> None:
    """Another process sharing the journal (here, this one) is still waiting for its tasks: no notice."""
    async with SoraClient(KEY, base_url=server.url, journal=journal_file) as client:
        await client.create_video("in flight elsewhere")
    server.script_next([("SUCCESS", "100%")])
    code, _, err = await run_cli("generate", "a boat", *against(server))
    assert code == EXIT_OK
    assert "earlier runs" not in err


async def test_ctrl_c_after_the_create_also_names_resume(
    server: FakeSoraServer, tmp_path: pathlib.Path
) -> None:
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    out, err = io.StringIO(), io.StringIO()
    argv = ["generate", "a boat", *against(server), "-o", f"{tmp_path}/"]
    call = asyncio.create_task(cli.run(argv, out=out, err=err))
    await eventually(lambda: bool(server.tasks) and server.polls(next(iter(server.tasks))) > 0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (task_id,) = server.tasks
    assert f"task {task_id} was created and is billed; to resume:" in err.getvalue()
    everything = f"sora-async resume -o {tmp_path}/ --base-url {server.url}"
    assert f"or, with every unfinished task of the journal: {everything}" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    server.script_next([("IN_PROGRESS", "10%")] * 1000)
    call = asyncio.create_task(cli.run([*argv, "--json"], out=out, err=err))
    await eventually(lambda: len(server.tasks) == 2 and server.polls(list(server.tasks)[1]) > 0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    document = json.loads(out.getvalue())
    assert document["resume_all"] == everything


async def test_ctrl_c_before_the_create_is_answered_points_at_jobs(server: FakeSoraServer) -> None:
    server.inject(Fault(200, {"code": "success", "data": "task_late"}, delay=60), route="create")
    out, err = io.StringIO(), io.StringIO()
    call = asyncio.create_task(cli.run(["generate", "a lost kite", *against(server)], out=out, err=err))
    await eventually(lambda: server.requests["create"] == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert "the journal kept the create: sora-async jobs --pending shows it" in err.getvalue()
    code, listed, _ = await run_cli("jobs", "--pending")
    assert code == EXIT_OK
    assert "IN DOUBT" in listed
    assert '"a lost kite"' in listed


async def test_a_failed_task_is_not_pending(server: FakeSoraServer, journal_file: pathlib.Path) -> None:
    server.script_next([("FAILURE", "100%")], fail_reason="moderation")
    code, _, _ = await run_cli("generate", "x", *against(server))
    assert code == EXIT_FAILED
    assert await pending_ids(journal_file) == []
