"""Remembering the gateway's refresh cadence: the JSON file of the state folder, and the journal.

Remembering is an optimisation, so what is stored can never fail the caller:
every kind of damaged, foreign or odd file loads as None, and a save that
cannot be written is dropped, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import random
import sqlite3
import stat
import sys
from collections.abc import Iterable
from typing import Any

import platformdirs
import pytest

from sora_async import JournalError, SQLiteJournal, Task, TaskStatus
from sora_async._cadence_store import (
    CadenceFile,
    CadenceStore,
    StoredCadence,
    checked,
    default_cadence_file,
)
from sora_async._journal import ClaimResult, CreateRecord, CreateState, Journal, TaskRecord
from sora_async._journal_sqlite import SCHEMA_VERSION

API = "https://api.cometapi.com"
OTHER = "http://127.0.0.1:8000"


def cadence(**values: float) -> StoredCadence:
    """A valid cadence: a 15 s sweep, refreshes spread over 2 s; its times Unix times."""
    fields = {
        "period": 15.0,
        "phase": 1_795_900_005.5,
        "spread": 2.0,
        "learned_at": 1_795_900_100.0,
        "verified_at": 1_795_900_200.0,
    }
    fields.update(values)
    return StoredCadence(**fields)


def leftovers(folder: pathlib.Path, *expected: str) -> list[str]:
    """The names in `folder` other than `expected`: a temporary file left behind shows here."""
    return sorted(name for name in os.listdir(folder) if name not in expected)


def file_with(entry: str, *, version: str = "1") -> bytes:
    """A cadence file whose entry for API is the JSON text `entry`, written as a user might have."""
    return f'{{"version": {version}, "cadences": {{"{API}": {entry}}}}}'.encode()


GOOD = (
    '{"period": 15, "phase": 1795900005.5, "spread": 2, "learned_at": 1795900100, "verified_at": 1795900200}'
)


def entry(**values: str) -> str:
    """GOOD with some values replaced by raw JSON text."""
    fields = json.loads(GOOD)
    text = {name: json.dumps(value) for name, value in fields.items()}
    text.update(values)
    return "{" + ", ".join(f'"{name}": {value}' for name, value in text.items()) + "}"


# --- the file: what a save leaves, and reading it back --------------------------------


async def test_a_saved_cadence_loads_back_in_another_store_on_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    await CadenceFile(path).save_cadence(API, cadence())
    assert await CadenceFile(path).load_cadence(API) == cadence()
    assert json.loads(path.read_bytes()) == {
        "version": 1,
        "cadences": {
            API: {
                "period": 15.0,
                "phase": 1_795_900_005.5,
                "spread": 2.0,
                "learned_at": 1_795_900_100.0,
                "verified_at": 1_795_900_200.0,
            }
        },
    }
    assert leftovers(tmp_path, "cadence.json") == []


async def test_the_file_a_user_might_write_by_hand_loads(tmp_path: pathlib.Path) -> None:
    """The format as documented, integers for floats and fields this version does not know."""
    path = tmp_path / "cadence.json"
    path.write_bytes(file_with(entry(comment='"by hand"')))
    assert await CadenceFile(path).load_cadence(API) == cadence()


async def test_each_api_root_has_its_own_cadence(tmp_path: pathlib.Path) -> None:
    store = CadenceFile(tmp_path / "cadence.json")
    await store.save_cadence(API, cadence())
    await store.save_cadence(OTHER, cadence(period=7.0, spread=0.0))
    assert await store.load_cadence(API) == cadence()
    assert await store.load_cadence(OTHER) == cadence(period=7.0, spread=0.0)
    assert await store.load_cadence("https://elsewhere.example") is None


async def test_a_second_save_replaces_the_first(tmp_path: pathlib.Path) -> None:
    store = CadenceFile(tmp_path / "cadence.json")
    await store.save_cadence(API, cadence())
    await store.save_cadence(API, cadence(phase=1_795_900_011.0, verified_at=1_795_900_900.0))
    assert await store.load_cadence(API) == cadence(phase=1_795_900_011.0, verified_at=1_795_900_900.0)
    assert list(json.loads((tmp_path / "cadence.json").read_bytes())["cadences"]) == [API]


async def test_of_33_api_roots_the_32_most_recently_verified_are_kept(tmp_path: pathlib.Path) -> None:
    """Whatever the order they were saved in."""
    store = CadenceFile(tmp_path / "cadence.json")
    roots = [f"https://gateway-{n}.example" for n in range(33)]
    order = list(range(33))
    random.Random(7).shuffle(order)
    for n in order:
        await store.save_cadence(roots[n], cadence(verified_at=1_795_900_200.0 + n))
    assert await store.load_cadence(roots[0]) is None  # the least recently verified
    for n in range(1, 33):
        assert await store.load_cadence(roots[n]) == cadence(verified_at=1_795_900_200.0 + n)


async def test_the_file_stays_small_enough_to_be_read_back(tmp_path: pathlib.Path) -> None:
    """Long API roots: the least recently verified go until the file fits in 64 KiB; a root too
    long to fit alone is not saved, and the others stay."""
    path = tmp_path / "cadence.json"
    store = CadenceFile(path)
    roots = [f"https://gateway-{n}.example/" + "x" * 3000 for n in range(32)]
    for n, root in enumerate(roots):
        await store.save_cadence(root, cadence(verified_at=1_795_900_200.0 + n))
    assert path.stat().st_size <= 64 * 1024
    assert await store.load_cadence(roots[-1]) == cadence(verified_at=1_795_900_200.0 + 31)
    assert await store.load_cadence(roots[0]) is None
    await store.save_cadence("https://" + "y" * 70_000, cadence(verified_at=1_795_999_999.0))
    assert await store.load_cadence(roots[-1]) == cadence(verified_at=1_795_900_200.0 + 31)
    assert leftovers(tmp_path, "cadence.json") == []


async def test_a_save_creates_the_missing_folders_private_to_the_user(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state" / "sora-async" / "cadence.json"
    await CadenceFile(path).save_cadence(API, cadence())
    assert await CadenceFile(path).load_cadence(API) == cadence()
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


async def test_an_invalid_cadence_is_not_saved(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    await CadenceFile(path).save_cadence(API, cadence(period=float("nan")))
    await CadenceFile(path).save_cadence(API, cadence(spread=15.0))
    assert not path.exists()


async def test_a_damaged_file_is_replaced_by_the_next_save(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    path.write_bytes(b'{"version": 1, "cadences": {"http')
    await CadenceFile(path).save_cadence(API, cadence())
    assert await CadenceFile(path).load_cadence(API) == cadence()


# --- what loads as nothing remembered -------------------------------------------------

DAMAGED = {
    "empty": b"",
    "truncated": file_with(GOOD)[:-7],
    "a JSON list": b"[" + GOOD.encode() + b"]",
    "not UTF-8": b"\xff\xfe" + file_with(GOOD),
    "no version": f'{{"cadences": {{"{API}": {GOOD}}}}}'.encode(),
    "a newer version": file_with(GOOD, version="2"),
    "the version as text": file_with(GOOD, version='"1"'),
    "cadences a list": b'{"version": 1, "cadences": [' + GOOD.encode() + b"]}",
    "an entry of null": file_with("null"),
    "an entry of text": file_with('"15 seconds"'),
    "an entry of a list": file_with("[15, 1795900005.5, 2, 1795900100, 1795900200]"),
    "a missing field": file_with(GOOD.replace('"spread": 2, ', "")),
    "NaN": file_with(entry(period="NaN")),
    "Infinity": file_with(entry(phase="Infinity")),
    "beyond any float": file_with(entry(verified_at="1e400")),
    "a negative period": file_with(entry(period="-15")),
    "a zero period": file_with(entry(period="0")),
    "a period under a second": file_with(entry(period="0.5", spread="0.1")),
    "a period over ten minutes": file_with(entry(period="601")),
    "a period as text": file_with(entry(period='"15"')),
    "a period of true": file_with(entry(period="true")),
    "a spread of the period": file_with(entry(spread="15")),
    "a spread over the period": file_with(entry(spread="20")),
    "a negative spread": file_with(entry(spread="-1")),
    "learned at zero": file_with(entry(learned_at="0")),
    "verified before the epoch": file_with(entry(verified_at="-5")),
    "nested too deep": b'{"version": 1, "cadences": {"u": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
    "over 64 KiB": file_with(GOOD) + b" " * (64 * 1024),
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
async def test_a_damaged_or_foreign_file_loads_as_nothing_remembered(
    tmp_path: pathlib.Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cadence.json"
    path.write_bytes(content)
    with caplog.at_level(logging.DEBUG, logger="sora_async"):
        assert await CadenceFile(path).load_cadence(API) is None
    assert caplog.records, "nothing was logged"
    assert {record.levelno for record in caplog.records} == {logging.DEBUG}


async def test_a_file_of_64_kib_exactly_is_read(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    content = file_with(GOOD)
    path.write_bytes(content + b" " * (64 * 1024 - len(content)))
    assert await CadenceFile(path).load_cadence(API) == cadence()


async def test_a_bad_entry_spoils_only_itself(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    path.write_bytes(f'{{"version": 1, "cadences": {{"{OTHER}": null, "{API}": {GOOD}}}}}'.encode())
    assert await CadenceFile(path).load_cadence(OTHER) is None
    assert await CadenceFile(path).load_cadence(API) == cadence()


async def test_a_missing_file_or_folder_loads_as_nothing_remembered(tmp_path: pathlib.Path) -> None:
    assert await CadenceFile(tmp_path / "cadence.json").load_cadence(API) is None
    assert await CadenceFile(tmp_path / "no such folder" / "cadence.json").load_cadence(API) is None
    (tmp_path / "a file").write_bytes(b"")
    assert await CadenceFile(tmp_path / "a file" / "cadence.json").load_cadence(API) is None


# --- what a save leaves alone -----------------------------------------------------------


async def test_a_folder_at_the_path_is_neither_read_nor_replaced(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    path.mkdir()
    (path / "inside").write_bytes(b"kept")
    store = CadenceFile(path)
    assert await store.load_cadence(API) is None
    await store.save_cadence(API, cadence())
    assert (path / "inside").read_bytes() == b"kept"
    assert leftovers(tmp_path, "cadence.json") == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
async def test_a_fifo_at_the_path_is_neither_waited_on_nor_replaced(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cadence.json"
    os.mkfifo(path)
    store = CadenceFile(path)
    assert await asyncio.wait_for(store.load_cadence(API), 5) is None  # opening it would wait for a writer
    await asyncio.wait_for(store.save_cadence(API, cadence()), 5)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert leftovers(tmp_path, "cadence.json") == []


async def test_a_symlink_at_the_path_is_not_replaced_nor_written_through(tmp_path: pathlib.Path) -> None:
    """Writing through it would write outside the folder; replacing it would break the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "theirs.json"
    target.write_bytes(file_with(GOOD))
    folder = tmp_path / "state"
    folder.mkdir()
    path = folder / "cadence.json"
    path.symlink_to(target)
    store = CadenceFile(path)
    assert await store.load_cadence(API) == cadence()  # read through it
    await store.save_cadence(OTHER, cadence())
    assert path.is_symlink()
    assert target.read_bytes() == file_with(GOOD)
    assert leftovers(folder, "cadence.json") == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
async def test_a_save_into_a_read_only_folder_leaves_the_file_and_no_temporary_file(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "cadence.json"
    await CadenceFile(path).save_cadence(API, cadence())
    before = path.read_bytes()
    tmp_path.chmod(0o500)
    try:
        await CadenceFile(path).save_cadence(OTHER, cadence())
        assert path.read_bytes() == before
        assert leftovers(tmp_path, "cadence.json") == []
    finally:
        tmp_path.chmod(0o700)


async def test_a_save_whose_folder_cannot_be_made_does_not_raise(tmp_path: pathlib.Path) -> None:
    """(The read-only folder test runs only without root; this one fails to write as root too.)"""
    (tmp_path / "a file").write_bytes(b"not a folder")
    await CadenceFile(tmp_path / "a file" / "state" / "cadence.json").save_cadence(API, cadence())
    assert (tmp_path / "a file").read_bytes() == b"not a folder"
    assert leftovers(tmp_path, "a file") == []


# --- several writers ----------------------------------------------------------------------


async def test_concurrent_saves_in_one_process_take_turns(tmp_path: pathlib.Path) -> None:
    """Two stores on one file, a few dozen saves at once, and a reader meanwhile: the reader
    always finds the file whole, and (saves of one process taking turns) nothing is lost."""
    path = tmp_path / "cadence.json"
    first, second = CadenceFile(path), CadenceFile(path)
    seed = cadence(verified_at=1_796_000_000.0)  # the most recently verified: never dropped
    await first.save_cadence(API, seed)
    done = False

    async def read() -> int:
        reads = 0
        while not done:
            assert await second.load_cadence(API) == seed
            reads += 1
        return reads

    reader = asyncio.create_task(read())
    roots = [f"https://gateway-{n}.example" for n in range(30)]
    await asyncio.gather(
        *(
            (first if n % 2 else second).save_cadence(root, cadence(verified_at=1_795_900_200.0 + n))
            for n, root in enumerate(roots)
        )
    )
    done = True
    assert await reader > 0
    content = json.loads(path.read_bytes())
    assert set(content["cadences"]) == {API, *roots}
    for n, root in enumerate(roots):
        assert await first.load_cadence(root) == cadence(verified_at=1_795_900_200.0 + n)
    assert leftovers(tmp_path, "cadence.json") == []


CHILD = """
import asyncio, sys
from sora_async._cadence_store import CadenceFile, StoredCadence

async def main() -> None:
    store = CadenceFile(sys.argv[1])
    for n in range(10):
        value = StoredCadence(period=15.0, phase=1.0, spread=1.0, learned_at=1.0, verified_at=100.0 + n)
        await store.save_cadence(f"https://{sys.argv[2]}-{n}.example", value)

asyncio.run(main())
"""


async def test_concurrent_saves_of_several_processes_leave_a_whole_file(tmp_path: pathlib.Path) -> None:
    """Processes may lose each other's entries (the last writer wins), but a reader always finds
    the file whole: an entry every writer keeps is never lost."""
    path = tmp_path / "cadence.json"
    store = CadenceFile(path)
    seed = cadence(verified_at=1_796_000_000.0)
    await store.save_cadence(API, seed)
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(path), f"child{n}")
        for n in range(3)
    ]
    reads = 0
    while any(child.returncode is None for child in children):
        assert await store.load_cadence(API) == seed
        reads += 1
        await asyncio.sleep(0)
    assert [await child.wait() for child in children] == [0, 0, 0]
    assert reads > 0
    content = json.loads(path.read_bytes())
    assert API in content["cadences"]
    assert len(content["cadences"]) > 1
    assert await store.load_cadence(API) == seed
    assert leftovers(tmp_path, "cadence.json") == []


# --- the default file ---------------------------------------------------------------------


def test_the_default_file_is_in_the_state_folder_the_environment_names() -> None:
    """(The suite's autouse fixture names a temporary folder of the test's own.)"""
    folder = pathlib.Path(os.environ["SORA_ASYNC_STATE_DIR"])
    assert folder.is_dir()
    assert default_cadence_file() == folder / "cadence.json"
    assert pathlib.Path.home() not in folder.parents


def test_without_the_variable_the_default_file_is_in_the_users_state_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SORA_ASYNC_STATE_DIR", "  ")
    assert default_cadence_file() == platformdirs.user_state_path("sora-async") / "cadence.json"
    monkeypatch.delenv("SORA_ASYNC_STATE_DIR")
    assert default_cadence_file() == platformdirs.user_state_path("sora-async") / "cadence.json"
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # `import platformdirs` raises ImportError
    assert default_cadence_file() is None
    monkeypatch.setenv("SORA_ASYNC_STATE_DIR", "~/sora-state")
    assert default_cadence_file() == pathlib.Path.home() / "sora-state" / "cadence.json"


# --- the values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "valid"),
    [
        ({}, True),
        ({"period": 1.0, "spread": 0.0}, True),
        ({"period": 600.0, "spread": 599.9}, True),
        ({"period": 0.999, "spread": 0.0}, False),
        ({"period": 600.001}, False),
        ({"spread": 14.999}, True),
        ({"spread": 15.0}, False),
        ({"spread": -0.001}, False),
        ({"phase": -1.0}, True),  # a sweep's start, any time
        ({"learned_at": 1_795_900_300.0}, True),  # after verified_at: the wall clock may step back
        ({"learned_at": 0.0}, False),
        ({"verified_at": float("inf")}, False),
        ({"phase": float("nan")}, False),
    ],
)
def test_what_a_valid_cadence_is(values: dict[str, float], valid: bool) -> None:
    value = cadence(**values)
    assert value.valid() is valid
    assert checked(value) == (value if valid else None)


def test_checked_takes_what_storage_gives_back() -> None:
    fields: dict[str, Any] = json.loads(GOOD)
    assert checked(fields) == cadence()
    assert checked(GOOD.encode()) == cadence()
    assert checked(StoredCadence(**fields)) == cadence()  # integers become floats
    assert type(checked(StoredCadence(**fields)).period) is float  # type: ignore[union-attr]
    assert checked({**fields, "period": True}) is None
    assert checked({**fields, "period": 10**400}) is None
    assert checked(StoredCadence(**{**fields, "period": 10**400})) is None
    assert checked(None) is None
    assert checked(b"{") is None


# --- the journal ------------------------------------------------------------------------


async def test_the_journal_keeps_a_cadence_per_api_root_across_reopening(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = SQLiteJournal(path)
    assert await journal.load_cadence(API) is None
    await journal.save_cadence(API, cadence())
    await journal.save_cadence(OTHER, cadence(period=7.0))
    # Durable: another connection (another process) reads it as soon as the save returns.
    assert rows(path, "SELECT base_url, period FROM cadence ORDER BY base_url") == [(OTHER, 7.0), (API, 15.0)]
    await journal.save_cadence(API, cadence(phase=1_795_900_011.0, verified_at=1_795_900_900.0))
    assert await journal.load_cadence(API) == cadence(phase=1_795_900_011.0, verified_at=1_795_900_900.0)
    await journal.aclose()
    again = SQLiteJournal(path)
    assert await again.load_cadence(API) == cadence(phase=1_795_900_011.0, verified_at=1_795_900_900.0)
    assert await again.load_cadence(OTHER) == cadence(period=7.0)
    assert await again.load_cadence("https://elsewhere.example") is None
    await again.aclose()


def rows(path: pathlib.Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def write(path: pathlib.Path, sql: str, *params: object) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(sql, params)
        db.commit()


@pytest.mark.parametrize(
    ("column", "value"),
    [("period", -1.0), ("period", 0.0), ("spread", 99.0), ("phase", "soon"), ("learned_at", b"\x00")],
)
async def test_a_corrupt_row_in_the_journal_loads_as_nothing_remembered(
    tmp_path: pathlib.Path, column: str, value: object
) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = SQLiteJournal(path)
    await journal.save_cadence(API, cadence())
    await journal.save_cadence(OTHER, cadence())
    write(path, f"UPDATE cadence SET {column} = ? WHERE base_url = ?", value, API)  # noqa: S608
    assert await journal.load_cadence(API) is None
    assert await journal.load_cadence(OTHER) == cadence()
    await journal.aclose()


async def test_the_journal_does_not_save_an_invalid_cadence(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = SQLiteJournal(path)
    await journal.save_cadence(API, cadence())
    await journal.save_cadence(API, cadence(period=float("nan")))
    assert await journal.load_cadence(API) == cadence()
    await journal.aclose()


async def test_saves_and_loads_share_the_journals_batches(tmp_path: pathlib.Path) -> None:
    """Many at once, with snapshots and creates: each caller gets its own answer."""
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    roots = [f"https://gateway-{n}.example" for n in range(20)]
    journal.record_snapshot(Task(task_id="task_1", status=TaskStatus.QUEUED, progress=""), API)
    await asyncio.gather(
        *(
            journal.save_cadence(root, cadence(verified_at=1_795_900_200.0 + n))
            for n, root in enumerate(roots)
        ),
        journal.record_create(CreateRecord(ref="a" * 32, format="reverse", prompt="a kite", sent_at=1.0)),
    )
    loaded = await asyncio.gather(*(journal.load_cadence(root) for root in roots))
    assert loaded == [cadence(verified_at=1_795_900_200.0 + n) for n in range(20)]
    assert [task.task_id for task in await journal.tasks()] == ["task_1"]
    await journal.aclose()


async def test_a_closed_journal_raises_its_journal_error(tmp_path: pathlib.Path) -> None:
    journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    await journal.save_cadence(API, cadence())
    await journal.aclose()
    with pytest.raises(JournalError, match="closed"):
        await journal.load_cadence(API)
    with pytest.raises(JournalError, match="closed"):
        await journal.save_cadence(API, cadence())


async def test_a_journal_of_a_newer_schema_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = SQLiteJournal(path)
    await journal.save_cadence(API, cadence())
    await journal.aclose()
    assert SCHEMA_VERSION == 3
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    newer = SQLiteJournal(path)
    with pytest.raises(JournalError, match="newer"):
        await newer.load_cadence(API)
    with pytest.raises(JournalError, match="newer"):
        await newer.save_cadence(API, cadence(period=7.0))
    await newer.aclose()
    assert path.read_bytes() == before
    assert rows(path, "SELECT period FROM cadence") == [(15.0,)]


class _KeepsNothing(Journal):
    """A journal written before cadences were kept: only the abstract methods."""

    async def record_create(self, create: CreateRecord) -> None:
        pass

    async def record_answer(
        self, ref: str, state: CreateState, *, task_id: str | None = None, error: str = ""
    ) -> None:
        pass

    def record_snapshot(self, task: Task, base_url: str) -> None:
        pass

    async def record_not_found(self, task_id: str, reason: str, *, base_url: str) -> None:
        pass

    async def claim_download(self, task_id: str, variant: str, path: str, *, base_url: str) -> ClaimResult:
        return "claimed"

    async def release_download(self, task_id: str, variant: str, *, base_url: str) -> None:
        pass

    async def record_download(
        self, task_id: str, variant: str, path: str, size: int | None, *, base_url: str
    ) -> None:
        pass

    async def tasks(
        self,
        *,
        pending: bool = False,
        failed: bool = False,
        since: float | None = None,
        base_url: str | None = None,
    ) -> list[TaskRecord]:
        return []

    async def creates(self, *, in_doubt: bool = False, base_url: str | None = None) -> list[CreateRecord]:
        return []

    async def forget(self, ids: Iterable[str]) -> list[str]:
        return []

    async def flush(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_a_journal_that_keeps_no_cadence_still_works_and_remembers_nothing() -> None:
    journal = _KeepsNothing()  # instantiable: the cadence methods are not abstract
    await journal.save_cadence(API, cadence())
    assert await journal.load_cadence(API) is None


@pytest.mark.parametrize("kind", ["file", "journal"])
async def test_both_stores_remember_through_the_cadence_store_interface(
    tmp_path: pathlib.Path, kind: str
) -> None:
    """What a client holding either sees (mypy checks that both fit the protocol)."""
    store: CadenceStore
    if kind == "file":
        store = CadenceFile(tmp_path / "cadence.json")
    else:
        store = journal = SQLiteJournal(tmp_path / "jobs.sqlite3")
    assert await store.load_cadence(API) is None
    await store.save_cadence(API, cadence())
    assert await store.load_cadence(API) == cadence()
    if kind == "journal":
        await journal.aclose()
