"""What the commands show while they run: a live rich display, plain lines, or JSON lines.

Three displays take the same events (`Display`): a snapshot of a task, the
bytes of a download so far, and the outcome of one task of a batch.

- `RichDisplay` on a terminal (with the `cli` extra): a live region, redrawn
  four times a second, that fits the terminal's width and height. `generate`
  shows one line for its task (status, queue position, a bar, the percent
  once, elapsed time, and the time left in the queue when the upstream
  estimates it); `wait` shows a summary bar and a table of the tasks in
  flight, newest change first; a download adds a line with bytes, rate and
  time left. Each line is cut to the width, never wrapped, so a narrow
  terminal (40 columns) gets shorter lines, never repeated ones.
- `PlainDisplay` for logs and pipes: one timestamped line per change.
- `JsonLinesDisplay` for --json: one JSON object per change, on stderr.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from sora_async._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ResponseDecodeError,
    SoraError,
    TaskNotFoundError,
)
from sora_async._models import Task, queue_wait_hint
from sora_async._outcomes import TaskFailedError, WaitTimeoutError

from ._args import cli_words

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live

Clock = Callable[[], float]

Above = Callable[[str, "str | None"], None]
"""Prints a line of text with a rich style (or None) above a live display."""

ABOVE: contextvars.ContextVar[Above | None] = contextvars.ContextVar("above", default=None)
"""Where a line of text goes while a live display runs (above it), or None: see `RetryLog`."""

WIDE = 60
"""Columns from which lines carry a bar and the task id; below, the short forms."""

RATE_WINDOW = 3.0
"""Seconds of recent transfer a download's rate is measured over."""


class Display(Protocol):
    def task(self, task: Task) -> None:
        """A task's first snapshot, or a change of its status or progress."""

    def bytes(self, done: int, total: int | None) -> None:
        """A download's bytes so far, and the total if known."""

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        """A task of a batch ended: `done` of `total` have."""

    def close(self) -> None:
        """Stop drawing; safe to repeat."""


# --- formatting ---------------------------------------------------------------


def clock_time(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def size_text(count: float) -> str:
    """A byte count in decimal units: 950 B, 12.3 kB, 4.5 MB, 1.2 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def queue_position(task: Task) -> int | None:
    """The task's place in the upstream queue while it waits, if the payload says; never raises."""
    if task.is_terminal:
        return None
    try:
        video = task.video
    except SoraError:
        return None
    return video.progress_pos_in_queue if video is not None else None


def status_text(task: Task) -> str:
    """The status as the server sent it, or the SDK's reading when it sent none (the OpenAI
    format's stored error body has no `status`: a FAILURE)."""
    return task.raw_status or task.status.value


def describe(task: Task) -> str:
    """A one-line description of a snapshot: id, status, percent, queue position."""
    percent = f" {task.percent:.0f}%" if task.percent is not None else ""
    text = f"{task.task_id} {status_text(task)}{percent}"
    position = queue_position(task)
    if position is not None:
        text += f" (queue position {position})"
    return text


def summarize(outcome: Task | SoraError) -> str:
    if isinstance(outcome, Task):
        return f"{status_text(outcome)} {outcome.video_url or ''}".rstrip()
    return error_words(outcome)


ERROR_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (TaskNotFoundError, "not found"),
    (APITimeoutError, "timed out"),
    (APIConnectionError, "no connection"),
    (ResponseDecodeError, "an answer that is not the API's"),
)


def error_words(error: BaseException) -> str:
    """An error as a person reads it in a line about one task: what happened, in words, then why."""
    if isinstance(error, TaskFailedError):
        return f"FAILURE ({error.fail_reason or 'no reason given'})"
    if isinstance(error, WaitTimeoutError):
        return f"still running at the deadline: {error}"
    for cls, words in ERROR_WORDS:
        if isinstance(error, cls):
            return f"{words}: {cli_words(str(error))}"
    if isinstance(error, APIError):
        return f"refused: {error}"
    return cli_words(str(error)) or type(error).__name__


def reason_words(error: BaseException) -> str:
    """Why one try failed, in a few words, for a retry line."""
    if isinstance(error, APIError):
        return f"HTTP {error.status_code}"
    for cls, words in ERROR_WORDS:
        if isinstance(error, cls):
            return words
    return type(error).__name__


def task_json(task: Task) -> dict[str, Any]:
    """A task as the JSON documents of the CLI show it."""
    return {
        "task_id": task.task_id,
        "status": status_text(task),
        "progress": task.progress,
        "percent": task.percent,
        "fail_reason": task.fail_reason,
        "submit_time": task.submit_time,
        "finish_time": task.finish_time,
        "video_url": task.video_url if task.status == "SUCCESS" else None,
        "format": task.format,
        **(
            {"model": task.model, "seconds": task.seconds, "size": task.size, "expires_at": task.expires_at}
            if task.format == "openai"
            else {}
        ),
    }


def error_json(task_id: str | None, error: BaseException, resume: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON error object: the task (None when none was created), the error, how to resume."""
    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
        return {
            "task_id": task_id,
            "error": "Interrupted",
            "message": "interrupted (Ctrl-C)",
            **({"resume": list(resume)} if resume else {}),
        }
    # The SDK's parameter names become flags; a server's own words stay as sent.
    message = str(error) if isinstance(error, APIError) else cli_words(str(error))
    result: dict[str, Any] = {"task_id": task_id, "error": type(error).__name__, "message": message}
    if isinstance(error, TaskFailedError):
        result.update(status="FAILURE", fail_reason=error.fail_reason)
    if resume:
        result["resume"] = list(resume)
    return result


def cut_middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, its middle replaced by an ellipsis (ids differ at both ends)."""
    if len(text) <= width:
        return text
    keep = max(width - 1, 0)
    head = (keep + 1) // 2
    return text[:head] + "…" + (text[len(text) - (keep - head) :] if keep - head else "")


class Tenths:
    """When a download's byte count is worth a line: the first chunk, each new tenth, and the end."""

    def __init__(self) -> None:
        self._last: int | None = None

    def due(self, done: int, total: int | None) -> bool:
        tenth = done * 10 // total if total else -1
        if tenth == self._last and not (total is not None and done >= total):
            return False
        self._last = tenth
        return True


class Transfer:
    """A download's progress: bytes so far, the total, and the rate over the last `RATE_WINDOW` s."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.done = 0
        self.total: int | None = None
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, done: int, total: int | None) -> None:
        now = self.clock()
        self.done, self.total = done, total
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Bytes per second, or None before two samples some time apart."""
        if len(self.samples) < 2:
            return None
        (start, first), (end, last) = self.samples[0], self.samples[-1]
        return (last - first) / (end - start) if end > start else None

    def seconds_left(self) -> float | None:
        rate = self.rate()
        if self.total is None or not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)


# --- the displays -------------------------------------------------------------


class Changes:
    """Which snapshots are news: the first of each task, then each change of status or progress."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, str]] = {}

    def new(self, task: Task) -> bool:
        state = (task.raw_status, task.progress)
        if self._last.get(task.task_id) == state:
            return False
        self._last[task.task_id] = state
        return True


class PlainDisplay:
    """One line per change, for logs and pipes."""

    def __init__(self, stream: IO[str], clock: Clock = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self._tenths = Tenths()
        self._changes = Changes()

    def _line(self, text: str) -> None:
        print(f"[{self.clock() - self.started:7.1f}s] {text}", file=self.stream, flush=True)

    def task(self, task: Task) -> None:
        if self._changes.new(task):
            self._line(describe(task))

    def bytes(self, done: int, total: int | None) -> None:
        if self._tenths.due(done, total):  # a line per tenth, not per chunk
            self._line(f"downloaded {done:,} of {total:,} bytes" if total else f"downloaded {done:,} bytes")

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        self._line(f"{done}/{total} {task_id} {summarize(outcome)}")

    def close(self) -> None:
        pass


class JsonLinesDisplay:
    """Progress as JSON lines, one object per change, for --json (on stderr: stdout keeps one document).

    Each line has an "event": "task" (a snapshot of a task, with the fields
    of a task in the final document), "bytes" (`done` and `total` bytes,
    about once per tenth), or "outcome" (a task of `wait` ended: `done` of
    `total`, and its task or error fields).
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._tenths = Tenths()
        self._changes = Changes()

    def _emit(self, event: str, fields: dict[str, Any]) -> None:
        print(json.dumps({"event": event, **fields}), file=self.stream, flush=True)

    def task(self, task: Task) -> None:
        if self._changes.new(task):
            self._emit("task", task_json(task))

    def bytes(self, done: int, total: int | None) -> None:
        if self._tenths.due(done, total):
            self._emit("bytes", {"done": done, "total": total})

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        fields = task_json(outcome) if isinstance(outcome, Task) else error_json(task_id, outcome)
        self._emit("outcome", {"done": done, "total": total, **fields})

    def close(self) -> None:
        pass


class Seen:
    """A task in flight as the display knows it: its last snapshot, and when that came."""

    __slots__ = ("at", "task")

    def __init__(self, task: Task, at: float) -> None:
        self.task = task
        self.at = at


class RichDisplay:
    """A live region on a terminal, drawn with rich; see the module's docstring.

    Args:
        console: The rich `Console` to draw on (its width and height are read
            at each redraw).
        total: The tasks of a `wait`, for its summary bar and table; None for
            the one task of `generate`, or a `download`.
        clock: Monotonic seconds; elapsed time and rates are read from it.
        live: Whether to start the live region (tests render frames instead).
    """

    def __init__(
        self, console: Console, *, total: int | None = None, clock: Clock = time.monotonic, live: bool = True
    ) -> None:
        self.console = console
        self.total = total
        self.clock = clock
        self.started = clock()
        self.flight: dict[str, Seen] = {}  # in flight: a batch's unfinished tasks, or generate's one
        self.done = 0
        self.failed = 0
        self.transfer: Transfer | None = None
        # rich redraws from its own thread: the state changes and is read under this lock.
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._above: contextvars.Token[Above | None] | None = None
        if live:
            from rich.live import Live

            self._live = Live(
                self, console=console, refresh_per_second=4, redirect_stdout=False, redirect_stderr=False
            )
            self._live.start()
            self._above = ABOVE.set(self.print_above)

    # events

    def task(self, task: Task) -> None:
        with self._lock:
            new = task.task_id not in self.flight
            self.flight[task.task_id] = Seen(task, self.clock())
        if new and self.total is None:  # the id stays in the scrollback, whatever the width
            self.print_above(f"task {task.task_id}")

    def bytes(self, done: int, total: int | None) -> None:
        with self._lock:
            if self.transfer is None:
                self.transfer = Transfer(self.clock)
            self.transfer.update(done, total)

    def outcome(self, task_id: str, outcome: Task | SoraError, done: int, total: int) -> None:
        with self._lock:
            self.flight.pop(task_id, None)
            self.done = done
            self.total = total
            self.failed += not isinstance(outcome, Task)
        self.print_above(f"{task_id} {summarize(outcome)}")

    def print_above(self, text: str, style: str | None = None) -> None:
        """Print a line above the live region, which stays below it.

        The line is never cut or broken by rich (an outcome's URL must stay
        whole to be copied): the terminal wraps it if it is too long.
        """
        from rich.text import Text

        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not end the command
            self.console.print(Text(text, style=style or ""), soft_wrap=True)

    def close(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            with contextlib.suppress(OSError, ValueError):
                live.stop()  # draws the last frame once, and leaves it
        if self._above is not None:
            with contextlib.suppress(ValueError):  # reset from another context: leave it
                ABOVE.reset(self._above)
            self._above = None

    # drawing

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        with self._lock:
            lines = list(self.lines(options.max_width, options.height or console.height))
        yield from lines

    def lines(self, width: int, height: int) -> Iterator[Any]:
        """The region's lines for a terminal of `width` columns and `height` rows."""
        now = self.clock()
        if self.total is None:
            for seen in self.flight.values():
                yield self._task_line(seen, width, now)
        else:
            yield self._summary_line(width, now)
            rows = max(1, height - 3 - (self.transfer is not None))  # the summary, the cursor, a margin
            newest = sorted(self.flight.values(), key=lambda seen: seen.at, reverse=True)
            shown = newest if len(newest) <= rows else newest[: rows - 1]
            cells = [self._cells(seen.task, wide=width >= WIDE) for seen in shown]
            status_width = min(max((len(status) for status, _ in cells), default=0), width // 3)
            room = width - status_width - 6  # a space, the status, a space, the percent in 4
            id_width = max(5, min(room, max((len(seen.task.task_id) for seen in shown), default=0)))
            for seen, (status, percent) in zip(shown, cells, strict=True):
                task_id = cut_middle(seen.task.task_id, id_width)
                line = f"{task_id:<{id_width}} {status[:status_width]:<{status_width}} {percent:>4}"
                yield self._cut(line.rstrip())
            if len(shown) < len(newest):
                yield self._cut(f"… and {len(newest) - len(shown)} more in flight")
        if self.transfer is not None:
            yield self._transfer_line(self.transfer, width)

    @staticmethod
    def _cells(task: Task, *, wide: bool) -> tuple[str, str]:
        """A table row's status (with the queue position when wide) and percent."""
        position = queue_position(task) if wide else None
        status = status_text(task) + (f" (queue {position})" if position is not None else "")
        return status, f"{task.percent:.0f}%" if task.percent is not None else ""

    def _task_line(self, seen: Seen, width: int, now: float) -> Any:
        """The richest form of the task's line that fits: the id goes first (it is printed above),
        then the bar, then the long words; status, percent and elapsed time always stay."""
        task = seen.task
        percent = task.percent
        status = status_text(task)
        position = queue_position(task)
        wait = queue_wait_hint(task)
        left = None if wait is None else wait - (now - seen.at)
        elapsed = clock_time(now - self.started)
        shown = f"{percent:.0f}%" if percent is not None else ""
        queue_long = f" · queue position {position}" if position is not None else ""
        queue_short = f" q{position}" if position is not None else ""
        eta_long = f" · about {clock_time(left)} left in queue" if left is not None and left > 0 else ""
        eta_short = f" ~{clock_time(left)}" if left is not None and left > 0 else ""
        tail = f"{shown:>4} {elapsed}{eta_long}"
        for head in (f"{task.task_id} {status}{queue_long}", f"{status}{queue_long}"):
            if len(head) + len(tail) + 2 + 10 <= width:  # room for a bar of 10 or more
                return self._with_bar(head, tail, percent, 100, width)
        for line in (
            f"{status}{queue_long} {shown} {elapsed}{eta_long}",
            f"{status}{queue_short} {shown} {elapsed}{eta_short}",
        ):
            if len(line) <= width:
                return self._cut(line.replace("  ", " "))
        return self._cut(f"{status}{queue_short} {shown} {elapsed}".replace("  ", " "))

    def _summary_line(self, width: int, now: float) -> Any:
        total = self.total or 0
        elapsed = clock_time(now - self.started)
        if width >= WIDE:
            tail = f"{self.done - self.failed} ok · {self.failed} failed · {elapsed}"
            return self._with_bar(f"{self.done}/{total} done", tail, self.done, total, width)
        return self._cut(f"{self.done}/{total} done, {self.failed} failed, {elapsed}")

    def _transfer_line(self, transfer: Transfer, width: int) -> Any:
        rate = transfer.rate()
        left = transfer.seconds_left()
        amount = size_text(transfer.done) + (f" of {size_text(transfer.total)}" if transfer.total else "")
        speed = f"{size_text(rate)}/s" if rate is not None else ""
        eta = f"{clock_time(left)} left" if left is not None else ""
        if width >= WIDE:
            tail = " ".join(part for part in (amount, speed, eta) if part)
            return self._with_bar("downloading", tail, transfer.done, transfer.total, width)
        return self._cut(" ".join(part for part in (amount, speed, eta) if part))

    def _with_bar(
        self, head: str, tail: str, completed: float | None, total: float | None, width: int
    ) -> Any:
        """`head bar tail` in `width` columns; without the bar when there is no room or no total."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        room = width - len(head) - len(tail) - 2
        if total is None or not total or room < 10:
            return self._cut(f"{head} {tail}")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(width=min(room, 40))
        grid.add_column(no_wrap=True)
        done = 0.0 if completed is None or not math.isfinite(completed) else completed
        grid.add_row(head, ProgressBar(total=total, completed=min(done, total), width=min(room, 40)), tail)
        return grid

    @staticmethod
    def _cut(text: str) -> Any:
        from rich.text import Text

        return Text(text, no_wrap=True, overflow="ellipsis")


def make_display(
    json_output: bool,
    stream: IO[str],
    err: IO[str] | None = None,
    *,
    kind: Literal["task", "batch", "download"] = "task",
    total: int | None = None,
) -> Display:
    """Rich on a terminal when available, plain lines otherwise; JSON lines on `err` with --json.

    `total` is the number of tasks of a batch (`kind="batch"`).
    """
    if json_output:
        return JsonLinesDisplay(err if err is not None else sys.stderr)
    if stream.isatty():
        try:
            from rich.console import Console
        except ImportError:
            pass
        else:
            console = Console(file=stream)
            if not console.is_dumb_terminal:  # TERM=dumb cannot redraw: plain lines there
                return RichDisplay(console, total=total if kind == "batch" else None)
    return PlainDisplay(stream)
