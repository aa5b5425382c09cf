"""Secret hygiene: the whole fault matrix with a distinctive key, and the key never leaks."""

from __future__ import annotations

import logging
import pathlib

import pytest

from sora_async import PollPolicy, RetryPolicy, SoraClient, SoraError
from sora_async.testing import FakeSoraServer, Fault

KEY = "sk-DISTINCTIVE-9f8e7d6c5b4a"

FAULTS = [
    Fault.rate_limited(retry_after="0"),
    Fault.rate_limited(retry_after=None),
    Fault(500, {"error": {"message": f"echo {KEY}", "type": "x", "code": "invalid_request"}}),
    Fault.server_error(502),
    Fault(503, None),
    Fault(524, "<html>timeout</html>", content_type="text/html"),
    Fault(401, {"error": {"message": f"Invalid token {KEY} (request id: r1)", "type": "t", "code": KEY}}),
    Fault(403, {"code": "quota_not_enough", "message": f"no quota for {KEY}", "data": None}),
    Fault(400, {"code": "task_not_exist", "message": "task_not_exist", "data": None}),
    Fault.redirect("/_fake/moved.html"),
    Fault.reset(),
    Fault.reset_mid_body(),
    Fault.truncated(),
    Fault.stalled(),
    Fault(200, b'{"code": "success", "data": {'),
    Fault(200, [1, 2]),
    Fault(200, {"code": "fail_to_fetch_task", "message": KEY, "data": None}),
    Fault.oversized(3_000_000),
]


def exception_texts(error: BaseException) -> list[str]:
    texts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        current = current.__cause__ or current.__context__
    return texts


async def test_key_never_leaks_through_the_fault_matrix(
    caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    """No log record, exception (with its causes), repr, or request to another host carries the key."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with FakeSoraServer(api_key=KEY) as server:
        async with SoraClient(
            KEY,
            base_url=server.url,
            timeout=0.3,
            max_retries=1,
            max_response_bytes=1_000_000,
            retry=RetryPolicy(0.001, 0.01),
            poll=PollPolicy(0.01, 0.02),
        ) as client:
            texts.append(repr(client))
            for fault in FAULTS:
                task_id = server.add_task(timeline=[("QUEUED", "20%"), ("SUCCESS", "100%")])
                server.inject(fault, task_id=task_id, times=2)
                server.inject(fault, route="create")
                for call in (client.get_task(task_id), client.wait_until_done(task_id, timeout=2)):
                    try:
                        await call
                    except SoraError as exc:
                        texts += exception_texts(exc)
                try:
                    await client.create_video("x", extra_body={"seed": 1})
                except SoraError as exc:
                    texts += exception_texts(exc)
            done = server.add_task(timeline=[("SUCCESS", "100%")])
            await client.download(done, tmp_path)
            texts.append(repr(client))
        foreign = [r for r in server.recorded if not r.path.startswith("/sora/")]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    assert len(texts) > 60
    assert len([text for text in texts if KEY in text]) == 0
    assert foreign  # the video host was really asked
    assert sum(KEY in value for r in foreign for value in r.headers.values()) == 0
