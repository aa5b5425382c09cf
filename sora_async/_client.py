"""SoraClient: the facade that wires the protocol, the budget, the transport and the engine."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from ._budget import DEFAULT_MAX_RETRY_AFTER, Budget, check_count, check_positive
from ._cadence import CadencePolicy
from ._cadence_memory import CadenceMemory
from ._cadence_store import CadenceFile, CadenceStore, default_cadence_file
from ._download import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DownloadProgress,
    VideoStream,
    open_video,
    read_video,
    save_video,
)
from ._download_plan import DownloadPlan, Variant, check_download_choice, plan_download
from ._engine import Batch
from ._errors import JournalError, SoraError
from ._gate import Gate
from ._journal import BeforeSend, CreateRecord, Journal, TaskRecord, journaled_create
from ._journal_sqlite import SQLiteJournal
from ._models import NULL_PAYLOAD, Task, TaskStatus
from ._policy import PollPolicy, RetryPolicy
from ._protocol import (
    DEFAULT_BASE_URL,
    TASKS_PATH,
    CreateOptions,
    build_create_body,
    normalize_base_url,
    normalize_task_id,
    parse_create_response,
    parse_task_response,
    task_path,
)
from ._resume import Resume, download_pending
from ._transport import Response, Transport, retry_create, retry_idempotent
from ._videos import Videos
from ._waits import (
    DEFAULT_BATCH_CONCURRENCY,
    DEFAULT_WAIT_TIMEOUT,
    ProgressCallback,
    TaskWaits,
    check_timeout,
    time_left,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SoraClient"]

logger = logging.getLogger("sora_async")

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 100


class SoraClient(TaskWaits):
    """An asyncio client for CometAPI's Sora video task API.

    Use it as an async context manager, or call `aclose()` when done::

        async with SoraClient() as client:
            task = await client.generate("a paper boat on a pond")
            print(task.video_url)

    Every request of the client, single or batched, passes through one
    request budget: `rate_limit`, `max_concurrency` and the shared pause a
    server asks for with `Retry-After` (the gateway's documented 429 guidance:
    back off, honour `Retry-After`). Waiting for
    the budget never outlasts a wait's deadline.

    Args:
        api_key: The CometAPI key. Defaults to the `COMETAPI_KEY` variable.
        base_url: The API's root URL. Defaults to `COMETAPI_BASE_URL`, else
            https://api.cometapi.com. A trailing slash does not matter.
        timeout: Seconds one HTTP request may take, all retries aside.
        max_retries: How often a failed idempotent request is resent.
        poll: The default `PollPolicy` for waits; by default a `CadencePolicy`
            that learns the gateway's refresh cadence from all of this client's
            waits, and backs off like `PollPolicy` until it has.
        session: An `aiohttp.ClientSession` to use. The client never closes a
            session it did not create, and refuses one that belongs to
            another event loop (`EventLoopMismatchError`).
        allow_insecure_http: Allow a plain-http base URL to a host that is not
            loopback. Off by default, since the key would travel in clear.
        max_response_bytes: The largest response body that will be read, in bytes.
        retry: The backoff for resending failed requests.
        rate_limit: Requests per second for everything this client sends, or
            None for no set limit. Either way a 429 pauses all of the client's
            requests together and slows them down until the server is happy.
        max_concurrency: The most requests this client has in flight at once;
            100 by default, aiohttp's pool size. Requests beyond it queue in
            order, each no longer than its deadline. None: no limit.
        max_retry_after: The longest pause, in seconds, that a server's
            `Retry-After` may impose on the client (default 60 s). It is
            honoured on 429, 503 and any other error answer that carries it.
        journal: Where to record every create (before it is sent), every
            status change and every download, so that a crash or a restart
            loses nothing (see `pending`, `resume`, `download_pending`): a
            path, for a `SQLiteJournal` the client opens on first use and
            closes with itself, or a `Journal` (flushed on close, not
            closed). None (the default): nothing is recorded.
        remember_cadence: Keep what the default `CadencePolicy` learns of the
            gateway's refresh sweep for the next process, and start from
            what an earlier one kept (at most `MAX_AGE`, 6 h, old; verified
            by this process's first polls, and costing at most the backoff
            until it is). It is kept in the journal, or without one in
            `cadence.json` in the user's state folder
            (`platformdirs.user_state_path("sora-async")`, or
            `$SORA_ASYNC_STATE_DIR`). False keeps nothing and reads nothing.

    Attributes:
        videos: The OpenAI-format video API (`/v1/videos`: sora-2 and the
            gateway's other video models) as a `Videos` namespace sharing
            this client's key, budget, retries and poll policy.

    Raises:
        ValueError: No key was given or found in `COMETAPI_KEY`, the base
            URL is unusable, a limit is out of range, or `journal` names a folder.
        TypeError: `journal` is neither a path nor a `Journal`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        poll: PollPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = None,
        max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        journal: str | os.PathLike[str] | Journal | None = None,
        remember_cadence: bool = True,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("COMETAPI_KEY", "")
        key = key.strip()
        if not key:
            raise ValueError("no API key: pass api_key=... or set the COMETAPI_KEY environment variable")
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise ValueError("the API key contains white space or control characters")
        check_positive("timeout", timeout)
        check_count("max_retries", max_retries, minimum=0)
        check_count("max_response_bytes", max_response_bytes, minimum=1)
        root = base_url if base_url is not None else os.environ.get("COMETAPI_BASE_URL") or DEFAULT_BASE_URL
        self._api_key = key
        self._journal, self._owns_journal = _open_journal(journal)
        # One CadencePolicy per client: all its waits share what it learns of
        # the gateway's refresh cadence.
        self._poll = poll if poll is not None else CadencePolicy()
        self._transport = Transport(
            base_url=normalize_base_url(root, allow_insecure_http=allow_insecure_http),
            api_key=key,
            timeout=float(timeout),
            max_response_bytes=max_response_bytes,
            session=session,
            budget=Budget(rate_limit, max_concurrency, max_retry_after=max_retry_after),
            retry=retry if retry is not None else RetryPolicy(),
            max_retries=max_retries,
        )
        self._memory: CadenceMemory = CadenceMemory(
            self._poll, _cadence_store(self._journal) if remember_cadence else None, self._transport.base_url
        )
        self.videos = Videos(self._transport, self._poll, key, self._journal, self._memory)
        """The OpenAI-format video API (`/v1/videos`) on this client's key, budget and poll policy."""

    # --- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root every request path is appended to."""
        return self._transport.base_url

    @property
    def journal(self) -> Journal | None:
        """The task journal the client records to, or None."""
        return self._journal

    @property
    def budget(self) -> Budget:
        """The request budget every request of this client passes through."""
        return self._transport.budget

    def __repr__(self) -> str:
        return f"SoraClient(base_url={self.base_url!r}, api_key='***')"

    async def __aenter__(self) -> SoraClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client: end its pending waits and close the sessions it created.

        Every wait, batch and request still pending raises `ClientClosedError`
        at once (their tasks keep running upstream); any call made afterwards
        raises it too. Then the journal's buffered records are written, and
        a journal the client opened from a path is closed. Safe to repeat.
        """
        try:
            await self._transport.aclose()
        finally:
            try:
                await self._memory.aclose()
            finally:
                await self._close_journal()

    async def _close_journal(self) -> None:
        """Flush the journal, and close it if the client opened it."""
        journal = self._journal
        if journal is not None:
            try:
                await (journal.aclose() if self._owns_journal else journal.flush())
            except JournalError as exc:  # only snapshots were waiting; the next poll sees them again
                logger.error("the journal could not be flushed on close: %s", exc)

    # --- tasks -------------------------------------------------------------

    async def get_task(self, task_id: str, *, timeout: float | None = None) -> Task:
        """Fetch one snapshot of a task.

        Args:
            task_id: The id `create_video` returned.
            timeout: Seconds for the whole call: waiting for the request
                budget, every resend and its backoff. None: each attempt is
                bounded by the client's `timeout`, a server-requested pause
                by `max_retry_after`, and resends by `max_retries`.

        Raises:
            ValueError: The id or timeout is invalid.
            TaskNotFoundError: The gateway knows no such task.
            APITimeoutError: `timeout` passed first.
            ClientClosedError: The client is closed.
            SoraError: Another API, connection or decode error.
        """
        path = task_path(normalize_task_id(task_id))
        check_timeout(timeout)
        deadline = self._deadline(timeout)
        await self._remembered(deadline)
        return await self._transport.call("GET", path, None, self._parse_task, retry_idempotent, deadline)

    async def create_video(
        self, prompt: str, *, timeout: float | None = None, **options: Unpack[CreateOptions]
    ) -> str:
        """Create a video task and return its id.

        The options and their defaults are those of `CreateOptions`; pass
        None for one to leave it out of the request.

        A create is resent only when the request provably did not reach the
        server (the connection was refused) or was turned away with a 429
        error document. After a timeout or a 5xx the task may exist, so the
        error is raised rather than risk paying twice.

        Args:
            prompt: What to generate.
            timeout: Seconds for the whole call, as for `get_task`. A create
                that timed out after it was sent may still exist upstream.
            **options: Keys of `CreateOptions`.

        Raises:
            TypeError, ValueError: An option or the timeout is invalid; nothing was sent.
            APITimeoutError: `timeout` passed first.
            SoraError: The API refused, or the outcome is unknown.
        """
        check_timeout(timeout)
        body = build_create_body(prompt, options)
        return await self._create(body, deadline=self._deadline(timeout))

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
        **options: Unpack[CreateOptions],
    ) -> Task:
        """Create a video task and wait for it, under one deadline for both.

        Args:
            prompt: What to generate.
            timeout: Seconds for the create and the whole wait together.
            poll: A `PollPolicy` for the wait.
            on_progress: As for `wait_until_done`.
            **options: Any keyword argument of `create_video`.

        Once the task is created, nothing that ends this call loses it:
        every `SoraError` raised afterwards has `.task_id` set to the new
        task, and any other exception (an `on_progress` callback's own
        error, a cancellation) gets a note naming it (`add_note`, shown in
        the traceback). On Python 3.10 a task awaiting a cancelled task
        gets a fresh `CancelledError` without the note; code inside the
        cancelled task sees it.

        Raises:
            TaskFailedError: The task ended in FAILURE.
            WaitTimeoutError: The deadline passed after the task was created
                and before it ended (it carries the task id).
            APITimeoutError: The deadline passed before the create was
                answered (also a `TimeoutError`); if `request_sent` is True
                the task may exist.
            ClientClosedError: The client was closed; `.task_id` names the
                task when it had been created.
            SoraError: The create or a poll failed for good.
        """
        check_timeout(timeout)
        body = build_create_body(prompt, options)
        gate = self._transport.gate()
        started = gate.now()
        deadline = self._deadline(timeout)
        task_id = await self._create(body, deadline=deadline)
        logger.debug("created task %s", task_id)
        return await self._wait_created(
            task_id, started=started, deadline=deadline, timeout=timeout, poll=poll, on_progress=on_progress
        )

    # --- files -------------------------------------------------------------

    async def download(
        self,
        task_or_id: Task | str,
        dest: str | os.PathLike[str],
        *,
        variant: Variant = "source",
        generation: int = 0,
        on_progress: DownloadProgress | None = None,
        timeout: float | None = None,
        overwrite: bool = True,
    ) -> pathlib.Path:
        """Save a finished task's video (or image) to a file, streaming it in chunks.

        The destination is checked before the video host is asked for
        anything (see `check_destination`), so a destination that cannot be
        written costs no transfer. A regular file is written to a temporary
        name in the same folder and renamed when complete and of the size the
        task announced, so an interrupted or cancelled download never leaves a
        partial file under the final name. A symlink to a file is written
        through: its target is replaced that way and the link stays a link.
        A character device or FIFO (`/dev/null`, `/dev/stdout`, a named pipe)
        is written into directly, never replaced; a FIFO is opened once a
        reader has it open. Nothing else that is not a regular file is ever
        replaced. The request to the video host carries no API key, whatever
        session the client uses (see `SoraClient`'s `session`).

        Args:
            task_or_id: A SUCCESS `Task`, or a task id to fetch first.
            dest: A file path, or a folder (existing, or written with a trailing
                slash); in a folder the file is named from the task id,
                generation and variant (`<task>_source.mp4` for generation 0,
                `<task>_1_source.mp4` for generation 1), never from the URL.
            variant: A `Variant`. A missing video rendition falls back to the
                nearest one that exists.
            generation: Which of the task's `n_variants` generations, from 0.
            on_progress: Called with (bytes so far, total or None); may be async.
            timeout: Seconds for the whole download, fetching the task
                included; None for no limit (a stalled transfer still fails
                after 60 s without data).
            overwrite: Whether an existing file may be replaced (default
                True, as before). With False, a file already under the final
                name (`dest`, or the file inside the folder `dest`; a symlink
                to a file counts) is refused before the video host is asked
                for anything, and a file that appears there during the
                transfer is kept and not replaced: the finished download is
                linked into place only if the name is still free. A device
                or FIFO is written into, never replaced, so it is not
                concerned.

        Returns:
            The path written, as named (`dest`, or the file inside the folder `dest`).

        Raises:
            ValueError: `variant`, `generation` (negative, or a bool) or
                `timeout` is not valid; nothing is sent.
            TypeError: `generation` or `timeout` is not a number.
            APITimeoutError: `timeout` passed while fetching the task.
            URLExpiredError: The video host refused the URL (HTTP 403).
            DownloadTimeoutError: `timeout` passed during the transfer, or the
                host sent nothing for 60 s (a `DownloadError` and a `TimeoutError`).
            DestinationExistsError: `overwrite` is False and the file exists:
                before any request to the video host, or once the transfer
                is done if it appeared meanwhile (a `DownloadError` and a
                `FileExistsError`, with `.path`); nothing is left behind.
            DownloadError: The task has no such generation or file, the
                destination cannot be written (before any transfer when that
                can be known; an `OSError` is the cause), or the transfer failed.
            ClientClosedError: The client was closed during the download.
        """
        check_download_choice(variant, generation)
        check_timeout(timeout)
        gate = self._transport.gate()
        deadline = self._deadline(timeout)
        plan = await self._plan_video(task_or_id, variant, generation, gate, deadline)
        path = await save_video(
            self._transport.cdn_session(),
            plan,
            dest,
            on_progress=on_progress,
            total_seconds=time_left(gate, deadline),
            closed=self._is_closed,
            overwrite=overwrite,
        )
        await self._saved(plan.task_id, variant if generation == 0 else f"{variant}/{generation}", path)
        return path

    async def download_bytes(
        self,
        task_or_id: Task | str,
        *,
        variant: Variant = "source",
        generation: int = 0,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        timeout: float | None = None,
    ) -> bytes:
        """A finished task's video (or image) as bytes in memory.

        Args:
            task_or_id, variant, generation: As for `download`.
            max_bytes: The most bytes accepted (default 256 MiB,
                `DEFAULT_MAX_DOWNLOAD_BYTES`). A file the task or the host
                announces as larger is refused before its body is read; one
                that turns out larger is refused as soon as it passes.
            timeout: Seconds for the whole call, as for `download`.

        Returns:
            The file's bytes, of exactly the size the task announced (when it did).

        Raises:
            ValueError, TypeError: An argument is not valid; nothing is sent.
            APITimeoutError, URLExpiredError, ClientClosedError: As for `download`.
            DownloadError: The file is over `max_bytes`, or as for `download`.
        """
        check_download_choice(variant, generation)
        check_count("max_bytes", max_bytes, minimum=1)
        check_timeout(timeout)
        gate = self._transport.gate()
        deadline = self._deadline(timeout)
        plan = await self._plan_video(task_or_id, variant, generation, gate, deadline)
        return await read_video(
            self._transport.cdn_session(),
            plan,
            max_bytes=max_bytes,
            total_seconds=time_left(gate, deadline),
            closed=self._is_closed,
        )

    def stream_video(
        self,
        task_or_id: Task | str,
        *,
        variant: Variant = "source",
        generation: int = 0,
        timeout: float | None = None,
    ) -> contextlib.AbstractAsyncContextManager[VideoStream]:
        """Receive a finished task's video (or image) as an async stream of byte chunks.

        Entering the block fetches the task (given an id) and sends the
        request; leaving it closes the connection, whether the body was read
        to its end or not. Read the stream inside the block::

            async with client.stream_video(task) as video:
                async for chunk in video:  # bytes, at most 64 KiB each
                    sink.write(chunk)

        The size is checked as for `download`: a body longer than the task
        announced raises as soon as it is, a shorter one at its end.

        Args:
            task_or_id, variant, generation: As for `download`.
            timeout: Seconds from entering the block until the body has been
                read, the caller's own work between chunks included; None
                for no limit (a host that sends nothing for 60 s still fails).

        Returns:
            An async context manager whose value is a `VideoStream`.

        Raises:
            ValueError, TypeError: At the call, an argument is not valid.
            APITimeoutError, URLExpiredError, DownloadError, ClientClosedError:
                On entering or while iterating, as for `download_bytes`.
        """
        check_download_choice(variant, generation)
        check_timeout(timeout)
        return self._stream_video(task_or_id, variant, generation, timeout)

    @contextlib.asynccontextmanager
    async def _stream_video(
        self, task_or_id: Task | str, variant: Variant, generation: int, timeout: float | None
    ) -> AsyncGenerator[VideoStream, None]:
        gate = self._transport.gate()
        deadline = self._deadline(timeout)
        plan = await self._plan_video(task_or_id, variant, generation, gate, deadline)
        async with open_video(
            self._transport.cdn_session(),
            plan,
            total_seconds=time_left(gate, deadline),
            closed=self._is_closed,
        ) as video:
            yield video

    async def _plan_video(
        self, task_or_id: Task | str, variant: Variant, generation: int, gate: Gate, deadline: float | None
    ) -> DownloadPlan:
        """What to fetch, after fetching the task when given an id or a stripped snapshot."""
        task = task_or_id
        if isinstance(task, Task) and task.format == "openai":
            raise ValueError(
                f"video {task.task_id} is of the OpenAI format (/v1/videos); download it with "
                "client.videos.download, not client.download"
            )
        if not isinstance(task, Task):
            task = await self.get_task(task, timeout=time_left(gate, deadline))
        if task.status is TaskStatus.SUCCESS and task.data == NULL_PAYLOAD:
            # A stripped snapshot: fetch the payload.
            task = await self.get_task(task.task_id, timeout=time_left(gate, deadline))
        return plan_download(task, variant, generation)

    # --- the journal ---------------------------------------------------------

    async def pending(self) -> list[TaskRecord]:
        """The journal's unfinished tasks (both API formats), oldest first.

        Tasks created or waited on by any process sharing the journal count,
        this one's included, of this client's `base_url` only. A task the
        gateway said it does not know (status "NOT_FOUND") stays listed until
        a snapshot says otherwise or it is forgotten. Creates in doubt have
        no task id and are listed by `in_doubt` instead.

        Raises:
            ValueError: The client has no journal.
            JournalError: The journal cannot be read.
        """
        return await self._needs_journal("pending").tasks(pending=True, base_url=self.base_url)

    async def in_doubt(self) -> list[CreateRecord]:
        """Creates that were sent and never answered: the task may exist and be billed.

        The SDK cannot find such a task (the gateway lists none: PROTOCOL.md)
        and never sends the create again; check CometAPI's dashboard for a
        task with the record's prompt created near its `sent_at`, then
        forget the record: `client.journal.forget([record.ref])` (the CLI:
        `sora-async jobs forget REF`).

        Raises:
            ValueError: The client has no journal.
            JournalError: The journal cannot be read.
        """
        return await self._needs_journal("in_doubt").creates(in_doubt=True, base_url=self.base_url)

    def resume(
        self,
        *,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
        rate_limit: float | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Resume:
        """Wait for every unfinished task of the journal and yield (task id, outcome) as each ends.

        The tasks are read from the journal when the iteration starts, and
        waited for by the batch engine as `as_completed` waits (the same
        arguments, outcomes and budget), each with the API format it was
        created with; every change and outcome is recorded. Use it as
        `as_completed` is used::

            async with client.resume() as outcomes:
                async for task_id, outcome in outcomes:
                    ...

        Creates in doubt are not waited for (they have no id): see `in_doubt`.

        Raises:
            ValueError: The client has no journal, or an argument is invalid
                (at the call; nothing is read).
            JournalError: On iteration, the journal cannot be read.
        """
        check_timeout(timeout)
        check_count("concurrency", concurrency, minimum=1)
        journal = self._needs_journal("resume")

        def start(tasks: list[TaskRecord]) -> Batch:
            openai = {task.task_id for task in tasks if task.format == "openai"}

            def poll_once(task_id: str, deadline: float | None) -> Awaitable[tuple[Task, float | None]]:
                waits: TaskWaits = self.videos if task_id in openai else self
                return waits._poll_once(task_id, deadline)

            return self._batch(
                [task.task_id for task in tasks],
                poll_once,
                concurrency=concurrency,
                rate_limit=rate_limit,
                timeout=timeout,
                poll=poll,
                on_progress=on_progress,
            )

        return Resume(journal, start, self.base_url)

    async def download_pending(
        self,
        dest: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        timeout: float | None = None,
        on_saved: Callable[[str, pathlib.Path | SoraError], object] | None = None,
        only_created: bool = True,
    ) -> dict[str, pathlib.Path | SoraError]:
        """Save every finished task of the journal that has no saved file yet into the folder `dest`.

        Each task's file is named as `download` names it in a folder
        (`<task>_source.mp4`; `<task>_video.mp4` for the OpenAI format) and
        is never replaced: a file already under that name is taken as this
        task's, saved by a run that ended before recording it (files only
        appear under their final name complete). A task another live
        process is saving is skipped, so two processes sharing a journal
        never fetch one file twice; a claim of a process that died is taken over.

        Args:
            dest: A folder; created if missing.
            concurrency: The most downloads at once.
            timeout: Seconds for each download, or None.
            on_saved: Called with (task id, path or error) as each ends.
            only_created: Only tasks whose create the journal recorded (the
                default); False: every finished task it knows, those only
                waited on or looked at by id included.

        Returns:
            {task id: the path saved, or the `SoraError` that stopped it},
            for every task this call tried.

        Raises:
            ValueError: The client has no journal, or an argument is invalid.
            JournalError: The journal cannot be read or written.
        """
        check_count("concurrency", concurrency, minimum=1)
        check_timeout(timeout)
        journal = self._needs_journal("download_pending")
        return await download_pending(
            journal,
            pathlib.Path(dest),
            lambda task, folder: self._download_record(task, folder, timeout),
            concurrency=concurrency,
            on_saved=on_saved,
            base_url=self.base_url,
            only_created=only_created,
        )

    async def _download_record(
        self, task: TaskRecord, folder: pathlib.Path, timeout: float | None
    ) -> pathlib.Path:
        if task.format == "openai":
            return await self.videos.download(task.task_id, folder, timeout=timeout, overwrite=False)
        return await self.download(task.task_id, folder, timeout=timeout, overwrite=False)

    def _needs_journal(self, method: str) -> Journal:
        if self._journal is None:
            raise ValueError(f"{method}() reads the task journal; create the client with journal=PATH")
        return self._journal

    # --- internals ---------------------------------------------------------

    async def _poll_once(self, task_id: str, deadline: float | None) -> tuple[Task, float | None]:
        """One status request with no resend: the engine schedules its own retries."""
        await self._remembered(deadline)
        response = await self._transport.send("GET", task_path(task_id), None, deadline)
        return self._parse_task(response), response.retry_after

    def _parse_task(self, response: Response) -> Task:
        return self._seen(
            parse_task_response(response.status, response.headers, response.body, secret=self._api_key)
        )

    async def _create(self, body: bytes, *, deadline: float | None) -> str:
        def parse(response: Response) -> str:
            return parse_create_response(
                response.status, response.headers, response.body, secret=self._api_key
            )

        def send(before_send: BeforeSend | None = None) -> Awaitable[str]:
            return self._transport.call(
                "POST", TASKS_PATH, body, parse, retry_create, deadline, before_send=before_send
            )

        if self._journal is None:
            return await send()
        fields = msgspec.json.decode(body)
        prompt = fields.pop("prompt", "")
        return await journaled_create(
            self._journal, "reverse", prompt, fields, send, base_url=self._transport.base_url
        )


def _open_journal(journal: str | os.PathLike[str] | Journal | None) -> tuple[Journal | None, bool]:
    """The client's journal and whether the client owns it (made it from a path)."""
    if journal is None or isinstance(journal, Journal):
        return journal, False
    if isinstance(journal, (str, os.PathLike)):
        return SQLiteJournal(journal), True
    raise TypeError(f"journal must be a path or a Journal, not {type(journal).__name__}")


def _cadence_store(journal: Journal | None) -> CadenceStore | None:
    """Where a client keeps its learned cadence: the journal, else the state folder's file."""
    if journal is not None:
        return journal
    path = default_cadence_file()
    return CadenceFile(path) if path is not None else None
