"""Regression guard: polling must never decode the nested generation payload."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import sora_async._models as models
from sora_async import SoraClient, Task
from sora_async._protocol import _TaskWire
from sora_async.testing import FakeSoraServer

from .conftest import FAST_POLL


class CountingDecoder:
    """Wraps the video decoder and counts how often it runs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def decode(self, data: Any) -> Any:
        self.calls += 1
        return self.inner.decode(data)


def test_task_keeps_nested_payload_raw() -> None:
    """Task and the wire struct declare the nested payload as msgspec.Raw, not a decoded type."""
    for struct in (Task, _TaskWire):
        data = next(f for f in msgspec.structs.fields(struct) if f.name == "data")
        assert data.type is msgspec.Raw, struct


async def test_polling_never_decodes_the_video(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_until_done, watch and as_completed run to SUCCESS without one video decode."""
    counter = CountingDecoder(models._video_decoder)
    monkeypatch.setattr(models, "_video_decoder", counter)
    async with FakeSoraServer() as server, SoraClient("k", base_url=server.url, poll=FAST_POLL) as client:
        waited = await client.wait_until_done(server.add_task())
        watched = [task async for task in client.watch(server.add_task())]
        batch = await client.wait_many([server.add_task() for _ in range(5)])
        assert counter.calls == 0
        assert waited.video_url is not None  # the first access decodes, once
    assert counter.calls == 1
    assert watched[-1].is_terminal
    assert len(batch) == 5
