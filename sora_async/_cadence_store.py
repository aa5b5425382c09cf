"""Remembering the gateway's refresh cadence across processes.

The gateway refreshes unfinished tasks in sweeps (see `_cadence`): one
every `period` seconds, starting at Unix times `phase + k * period`, each
reaching its tasks within `spread` seconds of its start. A process that
learned this polls just after each sweep; one that starts later can begin
from what an earlier one learned instead of learning it again. The
cadence is kept with the task journal (`Journal.load_cadence`,
`Journal.save_cadence`), or, without a journal, in a small JSON file of
the state folder (`CadenceFile`, `default_cadence_file`).

Remembering is an optimisation: a process that finds nothing remembered
learns the cadence as if it were the first. So the stores here never fail
their caller: what cannot be read is nothing remembered, and what cannot be
written is logged (at DEBUG, on the "sora_async" logger) and dropped.
Everything read goes through `StoredCadence.valid`: a damaged or foreign
value is nothing remembered, never an exception. Each cadence carries its
age (`learned_at`, `verified_at`), so that its user can judge whether it
still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import pathlib
import stat
import tempfile
import threading
from typing import Protocol

import msgspec

__all__ = [
    "CADENCE_FILE",
    "MAX_ENTRIES",
    "MAX_FILE_BYTES",
    "MAX_PERIOD",
    "MIN_PERIOD",
    "STATE_DIR_ENV",
    "CadenceFile",
    "CadenceStore",
    "StoredCadence",
    "checked",
    "default_cadence_file",
]

logger = logging.getLogger("sora_async")

MIN_PERIOD = 1.0
"""The shortest sweep period, in seconds, a stored cadence may have."""

MAX_PERIOD = 600.0
"""The longest sweep period, in seconds, a stored cadence may have."""

MAX_ENTRIES = 32
"""How many API roots a `CadenceFile` remembers; the least recently verified go first."""

MAX_FILE_BYTES = 64 * 1024
"""The largest `CadenceFile` read, in bytes; a larger file counts as unreadable."""

STATE_DIR_ENV = "SORA_ASYNC_STATE_DIR"
"""The environment variable naming the state folder, instead of the user's (platformdirs)."""

CADENCE_FILE = "cadence.json"
"""The cadence file's name in the state folder."""

_APP = "sora-async"  # platformdirs' name for our folders, as the CLI's journal uses
_FILE_VERSION = 1


class StoredCadence(msgspec.Struct, frozen=True, kw_only=True):
    """A refresh cadence as it is remembered; every value is in seconds.

    Attributes:
        period: Seconds between the starts of two sweeps, from `MIN_PERIOD`
            to `MAX_PERIOD`.
        phase: Unix time (seconds since the epoch) at which one sweep
            started; the others start a whole number of periods before or after.
        spread: Seconds after a sweep's start within which it has refreshed
            every task; at least 0 and less than `period`.
        learned_at: Unix time the cadence was first learned.
        verified_at: Unix time observations last confirmed it. It is not
            required to follow `learned_at`: the wall clock may step back.
    """

    period: float
    phase: float
    spread: float
    learned_at: float
    verified_at: float

    def valid(self) -> bool:
        """Whether every value is a finite number in its range (see the attributes)."""
        values = (self.period, self.phase, self.spread, self.learned_at, self.verified_at)
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            return False
        try:
            period, phase, spread, learned_at, verified_at = (float(value) for value in values)
        except OverflowError:  # an integer beyond any float
            return False
        return (
            all(math.isfinite(value) for value in (period, phase, spread, learned_at, verified_at))
            and MIN_PERIOD <= period <= MAX_PERIOD
            and 0.0 <= spread < period
            and learned_at > 0.0
            and verified_at > 0.0
        )


def checked(value: object) -> StoredCadence | None:
    """`value` as a valid `StoredCadence`, or None.

    Args:
        value: A `StoredCadence`, or what storage gave back: a mapping of
            its fields (integers are taken as floats; unknown fields are
            ignored) or its JSON text as bytes.

    Returns:
        None when `value` has the wrong shape or any value is out of range
        (`StoredCadence.valid`). Never raises.
    """
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            cadence = msgspec.json.decode(value, type=StoredCadence)
        elif isinstance(value, StoredCadence):
            cadence = msgspec.convert(msgspec.structs.asdict(value), StoredCadence)  # floats, not ints
        else:
            cadence = msgspec.convert(value, StoredCadence)
    except (ValueError, RecursionError):  # msgspec's errors are ValueErrors
        return None
    return cadence if cadence.valid() else None


class CadenceStore(Protocol):
    """Where learned cadences are remembered, one per API root (`base_url`).

    Neither method raises for what is stored or for the storage itself: a
    cadence that cannot be read is None, one that cannot be written is
    dropped (remembering is an optimisation, never a reason to fail the
    caller's work). `SQLiteJournal` is the exception, documented there: it
    raises `JournalError` as its other methods do.
    """

    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        """The valid cadence last saved for `base_url`, or None."""
        ...

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:
        """Remember `cadence` for `base_url`, replacing what was saved for it before."""
        ...


class _File(msgspec.Struct):
    """The file's shape; each entry is checked on its own, so one bad entry spoils only itself."""

    version: int
    cadences: dict[str, msgspec.Raw]


_save_lock = threading.Lock()
"""Serialises the read-modify-write of saves within this process (on any file)."""


class CadenceFile:
    """A `CadenceStore` in a small JSON file, for when there is no task journal.

    The file holds `{"version": 1, "cadences": {"<base_url>": {"period": ...,
    "phase": ..., "spread": ..., "learned_at": ..., "verified_at": ...}}}`
    for at most `MAX_ENTRIES` API roots (the least recently verified are
    dropped). The disk is touched on a worker thread, never on the event loop.

    Nothing is raised, whatever the file holds or the disk does: remembering
    is an optimisation. A file that is missing, unreadable, larger than
    `MAX_FILE_BYTES`, not JSON, of another shape or version, or not a
    regular file loads as nothing remembered (logged at DEBUG); so does an
    entry that is not a valid `StoredCadence`. A save that cannot be
    written is logged at DEBUG and dropped.

    Saving reads the file, sets one entry and writes the whole file to a
    temporary file in the same folder, then renames it over the old one:
    a reader sees the old file or the new one, never a part. The folder is
    created if missing (mode 0o700). Nothing is written outside the file's
    folder: a path that is a folder, a FIFO, a device or a symlink (even to a
    regular file elsewhere) is left as it is and the cadence is not saved.
    Saves in one process take turns; several processes saving at once may
    lose each other's entries (the last writer of the file wins), which
    costs only a cadence learned again.

    Args:
        path: The JSON file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"CadenceFile({str(self.path)!r})"

    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        """The valid cadence last saved for the API at `base_url`, or None when there is none
        or it cannot be read (logged at DEBUG). Never raises."""
        entries = await asyncio.to_thread(self._read)
        return None if entries is None else entries.get(base_url)

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:
        """Remember `cadence` for the API at `base_url`, replacing what was saved for it.

        An invalid cadence (`StoredCadence.valid`) is not saved. Never
        raises: a failure to write (a read-only folder, a full disk, a path
        that is not a regular file) is logged at DEBUG and the file left as
        it was, without a temporary file.
        """
        valid = checked(cadence)
        if valid is None:
            logger.debug("cadence for %s not saved in %s: invalid values %r", base_url, self.path, cadence)
            return
        await asyncio.to_thread(self._save, base_url, valid)

    # --- the worker thread --------------------------------------------------------

    def _read(self) -> dict[str, StoredCadence] | None:
        """The file's valid entries; None when it cannot be read (missing, damaged, foreign)."""
        try:
            data = self._read_bytes()
            if data is None:
                return None
            content = msgspec.json.decode(data, type=_File)
        except (OSError, ValueError, RecursionError) as exc:  # msgspec's errors are ValueErrors
            logger.debug("cadence file %s not read: %s", self.path, exc)
            return None
        if content.version != _FILE_VERSION:
            logger.debug(
                "cadence file %s not read: version %r is not %d", self.path, content.version, _FILE_VERSION
            )
            return None
        entries = {}
        for base_url, raw in content.cadences.items():
            cadence = checked(bytes(raw))
            if cadence is None:
                logger.debug("cadence file %s: the entry for %s is not valid", self.path, base_url)
            else:
                entries[base_url] = cadence
        return entries

    def _read_bytes(self) -> bytes | None:
        """At most `MAX_FILE_BYTES` of a regular file; None (logged) for anything else.

        Raises:
            OSError: It cannot be opened or read (FileNotFoundError when missing).
        """
        if not stat.S_ISREG(os.stat(self.path).st_mode):
            # Not even opened: opening a FIFO waits for a writer, a device may do anything.
            logger.debug("cadence file %s not read: not a regular file", self.path)
            return None
        # O_NONBLOCK: should the path become a FIFO meanwhile, opening it does not wait.
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                logger.debug("cadence file %s not read: not a regular file", self.path)
                return None
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            logger.debug("cadence file %s not read: larger than %d bytes", self.path, MAX_FILE_BYTES)
            return None
        return data

    def _save(self, base_url: str, cadence: StoredCadence) -> None:
        with _save_lock:
            try:
                self._write(base_url, cadence)
            except (OSError, ValueError) as exc:  # ValueError: a path holding a NUL character
                logger.debug("cadence for %s not saved in %s: %s", base_url, self.path, exc)

    def _write(self, base_url: str, cadence: StoredCadence) -> None:
        if not self._replaceable():
            return
        entries = self._read() or {}
        entries[base_url] = cadence
        # The most recently verified first; on a tie the one saved now.
        kept = sorted(
            entries.items(), key=lambda item: (item[1].verified_at, item[0] == base_url), reverse=True
        )
        del kept[MAX_ENTRIES:]
        while True:
            data = msgspec.json.encode({"version": _FILE_VERSION, "cadences": dict(kept)})
            if len(data) <= MAX_FILE_BYTES:
                break
            if len(kept) == 1:
                logger.debug(
                    "cadence for %s not saved in %s: its entry alone is too large", base_url, self.path
                )
                return
            kept.pop()  # (very long base URLs) the file must stay small enough to be read back
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        replaced = False
        try:
            with open(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())  # after a power cut: the old file or the whole new one
            if self._replaceable():  # it may have become something else meanwhile
                os.replace(temporary, self.path)
                replaced = True
        finally:
            if not replaced:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    def _replaceable(self) -> bool:
        """Whether the path is missing or a regular file (not a symlink): what a save may replace."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return True
        if stat.S_ISREG(mode):
            return True
        logger.debug("cadence not saved in %s: it is not a regular file, left as it is", self.path)
        return False


def default_cadence_file() -> pathlib.Path | None:
    """Where a client without a task journal remembers cadences by default.

    Returns:
        `cadence.json` in `$SORA_ASYNC_STATE_DIR` when that variable is set
        and not blank; else in the user's state folder as
        `platformdirs.user_state_path("sora-async")` names it (such as
        `~/.local/state/sora-async/` on Linux, beside the CLI's journal);
        None when platformdirs cannot be imported. Nothing is created.
    """
    folder = os.environ.get(STATE_DIR_ENV, "").strip()
    if folder:
        return pathlib.Path(folder).expanduser() / CADENCE_FILE
    try:
        import platformdirs
    except ImportError:
        return None
    return platformdirs.user_state_path(_APP) / CADENCE_FILE
