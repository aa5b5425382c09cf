"""Shared fixtures: the recorded sample and fast poll policies."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from sora_async import PollPolicy

# Fuzzing: a bounded run in `make test`, a long one with `make fuzz`.
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SAMPLES = pathlib.Path(__file__).parent / "samples"

FAST_POLL = PollPolicy(initial_interval=0.01, max_interval=0.02, jitter=0.0)
"""Polls every 10-20 ms: fast enough that an end-to-end test takes milliseconds."""


@pytest.fixture(scope="session")
def success_body() -> bytes:
    """The real 18 KB answer to a task query, as recorded from the API."""
    return (SAMPLES / "sora_task_success.json").read_bytes()


def envelope(**task: Any) -> bytes:
    """A task answer in the gateway's envelope, with sensible defaults."""
    data: dict[str, Any] = {
        "task_id": "task_01abc",
        "action": "sora-video",
        "status": "IN_PROGRESS",
        "fail_reason": "",
        "submit_time": 1736867805,
        "start_time": 0,
        "finish_time": 0,
        "progress": "30%",
        "notify_hook": "",
        "data": None,
    }
    data.update(task)
    return json.dumps({"code": "success", "message": "", "data": data}).encode()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition` holds, checking every few ms; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def _policy_loop() -> asyncio.AbstractEventLoop | None:
    loop = getattr(getattr(asyncio.get_event_loop_policy(), "_local", None), "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


_STRAY_LOOPS: list[asyncio.AbstractEventLoop] = []


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Keep, and close at the end of the session, the event loop looptime's plugin makes for a plain test.

    looptime calls `asyncio.get_event_loop()` for every test function, which
    sets a new loop on the policy for a test that is not async and never
    closes it. The next async test replaces that loop, and whenever the
    garbage collector then finds it, its ResourceWarning (an error under
    filterwarnings) fails whichever test is running. Holding a reference
    until the session ends moves that to a clean close. Where no loop is set
    at all, one is set here first: `get_event_loop()` creating it would warn
    on Python 3.12 (an error here too).
    """
    before = _policy_loop()
    if before is None:  # what looptime's get_event_loop() would create, with a warning on 3.12
        before = asyncio.new_event_loop()
        asyncio.set_event_loop(before)
        _STRAY_LOOPS.append(before)
    try:
        return (yield)
    finally:
        after = _policy_loop()
        if after is not None and after is not before and after not in _STRAY_LOOPS:
            _STRAY_LOOPS.append(after)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for loop in _STRAY_LOOPS:
        if not loop.is_running() and not loop.is_closed():
            loop.close()


@pytest.fixture(autouse=True)
def _journal_in_tmp_path(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's CLI journals to a file of its own temporary folder, never to the user's state
    folder ($SORA_ASYNC_JOURNAL). Not in tmp_path itself, whose files some tests count.

    The environment of the CLI's subprocesses too: those that take a copy of
    the environment made when their module was imported (`CLEAN_ENV`) get it there.
    """
    path = str(tmp_path_factory.mktemp("journal") / "journal.sqlite3")
    monkeypatch.setenv("SORA_ASYNC_JOURNAL", path)
    import sys

    module = sys.modules.get("tests.test_cli_fake_server")
    clean_env = getattr(module, "CLEAN_ENV", None)
    if isinstance(clean_env, dict):
        monkeypatch.setitem(clean_env, "SORA_ASYNC_JOURNAL", path)


@pytest.fixture(autouse=True)
def _state_in_tmp_path(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's state folder ($SORA_ASYNC_STATE_DIR, where a client without a journal
    remembers the gateway's refresh cadence) is a fresh temporary folder of its own: no test
    writes to the user's home folder or sees a cadence another test remembered. Not tmp_path
    itself, whose files some tests count; the CLI's subprocesses get it too (`CLEAN_ENV`)."""
    path = str(tmp_path_factory.mktemp("state"))
    monkeypatch.setenv("SORA_ASYNC_STATE_DIR", path)
    import sys

    module = sys.modules.get("tests.test_cli_fake_server")
    clean_env = getattr(module, "CLEAN_ENV", None)
    if isinstance(clean_env, dict):
        monkeypatch.setitem(clean_env, "SORA_ASYNC_STATE_DIR", path)
