"""A cadence store that hangs or fails never holds a poll past its bound or a close for ever."""

from __future__ import annotations

import asyncio
import time

import pytest

import sora_async._cadence_memory as memory
from sora_async import CadencePolicy, SoraClient, StoredCadence
from sora_async.testing import FakeSoraServer

DONE = [("SUCCESS", "100%")]


class HangingStore:
    """A store whose reads and writes never finish (a hung network disk, a locked file)."""

    def __init__(self) -> None:
        self.loads = 0
        self.saves = 0

    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        self.loads += 1
        await asyncio.Event().wait()
        return None

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:
        self.saves += 1
        await asyncio.Event().wait()


class FailingStore:
    async def load_cadence(self, base_url: str) -> StoredCadence | None:
        raise RuntimeError("the store broke")

    async def save_cadence(self, base_url: str, cadence: StoredCadence) -> None:
        raise RuntimeError("the store broke")


def client_with(server: FakeSoraServer, store: object, policy: CadencePolicy | None = None) -> SoraClient:
    client = SoraClient("k", base_url=server.url, poll=policy or CadencePolicy(), remember_cadence=False)
    client._memory = memory.CadenceMemory(client._poll, store, client.base_url)  # type: ignore[arg-type]
    client.videos._memory = client._memory
    return client


async def test_a_hanging_load_holds_the_first_poll_at_most_load_wait() -> None:
    """The first poll waits for the remembered cadence at most `LOAD_WAIT` (0.5 s), then goes."""
    store = HangingStore()
    async with FakeSoraServer() as server:
        task_id = server.add_task(timeline=DONE)
        client = client_with(server, store)
        async with client:
            started = time.monotonic()
            await client.get_task(task_id)
            first = time.monotonic() - started
            started = time.monotonic()
            await client.get_task(task_id)  # the load is still hanging: no wait at all now
            second = time.monotonic() - started
    assert memory.LOAD_WAIT == 0.5
    assert 0.4 <= first < 0.5 + 2.0
    assert second < 0.4
    assert store.loads == 1


async def test_a_hanging_load_never_holds_a_poll_past_its_deadline() -> None:
    """A call with a deadline shorter than `LOAD_WAIT` waits for the load a quarter of it at most."""
    store = HangingStore()
    async with FakeSoraServer() as server:
        task_id = server.add_task(timeline=DONE)
        client = client_with(server, store)
        async with client:
            started = time.monotonic()
            task = await client.wait_until_done(task_id, timeout=0.2)
            elapsed = time.monotonic() - started
    assert task.task_id == task_id
    assert elapsed < 0.2 + 1.0


async def test_a_hanging_save_holds_close_at_most_save_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aclose` waits for the last save of a verified cadence at most `SAVE_WAIT`, then gives up."""
    monkeypatch.setattr(memory, "SAVE_WAIT", 0.3)
    store = HangingStore()
    policy = CadencePolicy()
    policy.estimator.adopt(15.0, 3.0, 4.0, now=time.monotonic())
    policy.estimator.verified = True
    async with FakeSoraServer() as server:
        client = client_with(server, store, policy)
        started = time.monotonic()
        await client.aclose()
        elapsed = time.monotonic() - started
    assert store.saves == 1
    assert 0.3 <= elapsed < 0.3 + 2.0


async def test_a_store_that_raises_is_nothing_remembered() -> None:
    """Any error of a store, even one not about files, never reaches a poll or a close."""
    policy = CadencePolicy()
    async with FakeSoraServer() as server:
        task_id = server.add_task(timeline=DONE)
        client = client_with(server, FailingStore(), policy)
        async with client:
            assert (await client.get_task(task_id)).task_id == task_id
        policy.estimator.adopt(15.0, 3.0, 4.0, now=time.monotonic())
        policy.estimator.verified = True
        await client.aclose()  # the save raises inside; close does not
    assert policy.estimator.learned() is not None
