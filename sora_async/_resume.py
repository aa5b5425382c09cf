"""Picking up after a crash: waiting for the journal's unfinished tasks and saving their files.

`SoraClient.resume` and `SoraClient.download_pending` are built on these;
the waiting itself is the batch engine's (`Batch`), the saving `download`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import pathlib
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio

from ._engine import Batch
from ._errors import DestinationExistsError, SoraError, TaskNotFoundError
from ._journal import Journal, TaskRecord, saved_file, uncancelled
from ._outcomes import Outcome

__all__ = ["Resume", "download_pending"]

logger = logging.getLogger("sora_async")


class Resume:
    """The outcomes of a journal's unfinished tasks, as `SoraClient.resume` yields them.

    The journal is read when the iteration starts (entering the block, or
    the first `async for` step); `tasks` then lists what is being waited for.
    Otherwise it behaves as the `Batch` of `as_completed`.
    """

    def __init__(self, journal: Journal, start: Callable[[list[TaskRecord]], Batch], base_url: str) -> None:
        self._journal = journal
        self._start = start
        self._base_url = base_url
        self._batch: Batch | None = None
        self.tasks: list[TaskRecord] = []
        """The unfinished tasks read from the journal (empty until the iteration starts)."""

    def __aiter__(self) -> Resume:
        return self

    async def __anext__(self) -> tuple[str, Outcome]:
        batch = self._batch if self._batch is not None else await self._open()
        task_id, outcome = await batch.__anext__()
        if isinstance(outcome, TaskNotFoundError):
            # Unknown to the gateway (expired, another key or base URL, a passing error): noted
            # as NOT_FOUND, still pending; a later snapshot wins.
            await self._journal.record_not_found(task_id, str(outcome), base_url=self._base_url)
        return task_id, outcome

    async def __aenter__(self) -> Resume:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every poll at once; tasks not yet done stay pending in the journal."""
        if self._batch is not None:
            await self._batch.aclose()

    async def _open(self) -> Batch:
        if self._batch is None:
            self.tasks = await self._journal.tasks(pending=True, base_url=self._base_url)
            doubts = await self._journal.creates(in_doubt=True, base_url=self._base_url)
            if doubts:
                logger.warning(
                    "%d create(s) in the journal are in doubt: sent, never answered, possibly billed; "
                    "see SoraClient.in_doubt()",
                    len(doubts),
                )
            self._batch = self._start(self.tasks)
        return self._batch


Save = Callable[[TaskRecord, pathlib.Path], Awaitable[pathlib.Path]]


async def download_pending(
    journal: Journal,
    folder: pathlib.Path,
    save: Save,
    *,
    concurrency: int,
    on_saved: Callable[[str, pathlib.Path | SoraError], object] | None,
    base_url: str,
    only_created: bool,
) -> dict[str, pathlib.Path | SoraError]:
    """Save each SUCCESS task of `journal` without a saved file into `folder` through `save`,
    `concurrency` at a time, under a download claim; see `SoraClient.download_pending`."""
    await asyncio.to_thread(os.makedirs, folder, exist_ok=True)
    todo = [
        task
        for task in await journal.tasks(base_url=base_url)
        if task.status == "SUCCESS"
        and not any(d.variant == _variant(task) for d in task.downloads)
        and (task.ref is not None or not only_created)
    ]
    results: dict[str, pathlib.Path | SoraError] = {}
    slots = anyio.Semaphore(concurrency)

    async def one(task: TaskRecord) -> None:
        async with slots:
            variant = _variant(task)
            claim = await journal.claim_download(task.task_id, variant, str(folder), base_url=base_url)
            if claim != "claimed":
                return  # saved already, or another live process is saving it
            # Ours now: a temporary file of this video left by a process that died is stale.
            await asyncio.to_thread(_remove_stale, folder, f"{task.task_id}_{variant}")
            try:
                path = await save(task, folder)
            except DestinationExistsError as exc:
                # Only a complete file ever appears under a final name: a run
                # that died after saving it and before recording it. (`save`
                # records the files it saves itself.)
                path = pathlib.Path(exc.path) if exc.path else folder
                where, size = await asyncio.to_thread(saved_file, path)
                await journal.record_download(task.task_id, variant, where, size, base_url=base_url)
            except SoraError as exc:
                await _release(journal, task.task_id, variant, base_url)
                results[task.task_id] = exc
                _report(on_saved, task.task_id, exc)
                return
            except BaseException:
                await _release(journal, task.task_id, variant, base_url)
                raise
            results[task.task_id] = path
            _report(on_saved, task.task_id, path)

    async with anyio.create_task_group() as group:
        for task in todo:
            group.start_soon(one, task)
    return results


def _variant(task: TaskRecord) -> str:
    """The variant `download` saves by default for the task's format."""
    return "video" if task.format == "openai" else "source"


def _remove_stale(folder: pathlib.Path, stem: str) -> None:
    """Remove the temporary files `download` leaves for `<stem>.*` when its process dies
    (`.<name>.<12 hex digits>.part`, see `_download`)."""
    for path in folder.glob(f".{glob.escape(stem)}.*.part"):
        with contextlib.suppress(OSError):
            path.unlink()


async def _release(journal: Journal, task_id: str, variant: str, base_url: str) -> None:
    """Give the claim back, even under cancellation; a failure to is only logged (a claim of
    this process is taken over once it has ended)."""
    try:
        await uncancelled(journal.release_download(task_id, variant, base_url=base_url))
    except SoraError as exc:
        logger.warning("the journal could not release the claim on %s: %s", task_id, exc)


def _report(
    on_saved: Callable[[str, pathlib.Path | SoraError], object] | None,
    task_id: str,
    what: pathlib.Path | SoraError,
) -> None:
    if on_saved is not None:
        on_saved(task_id, what)
