"""The live display, rendered to a fixed-width recorded console; and which display each output gets."""

from __future__ import annotations

import io
import logging

import msgspec
import pytest
from rich.console import Console

from sora_async import DownloadError, Task, TaskFailedError, TaskStatus
from sora_async.cli import JsonLinesDisplay, PlainDisplay, RichDisplay, make_display
from sora_async.cli._display import ABOVE
from sora_async.cli._failures import retry_log

WIDTHS = [100, 40]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(task_id: str, status: str, progress: str = "", **video: object) -> Task:
    """A task as decoded; a status the SDK does not know keeps its name in `raw_status`."""
    data = msgspec.Raw(msgspec.json.encode(video)) if video else msgspec.Raw(b"null")
    known = status in TaskStatus.__members__
    return Task(
        task_id=task_id,
        status=TaskStatus(status) if known else TaskStatus.UNKNOWN,
        raw_status=status,
        progress=progress,
        data=data,
    )


def console(width: int, height: int = 25) -> Console:
    return Console(record=True, width=width, height=height, file=io.StringIO(), color_system=None)


def frame(display: RichDisplay, screen: Console) -> list[str]:
    """The live region's lines as the terminal shows them now."""
    screen.export_text()  # drop what was printed before
    screen.print(display)
    return screen.export_text().splitlines()


def assert_fits(lines: list[str], width: int) -> None:
    assert all(len(line) <= width for line in lines), lines
    assert len(lines) == len(set(lines)), f"a line is repeated: {lines}"


@pytest.mark.parametrize("width", WIDTHS)
def test_generate_shows_status_queue_percent_once_elapsed_and_time_left_in_queue(width: int) -> None:
    clock, screen = Clock(), console(width)
    display = RichDisplay(screen, clock=clock, live=False)
    display.task(
        snapshot("task_7Hk2aQ", "QUEUED", "20%", progress_pos_in_queue=3, estimated_queue_wait_time=42)
    )
    clock.now += 12
    (line,) = frame(display, screen)
    assert "QUEUED" in line
    assert line.count("%") == 1
    assert "20%" in line
    assert "0:12" in line  # elapsed
    if width >= 60:
        assert "task_7Hk2aQ" in line
        assert "queue position 3" in line
        assert "about 0:30 left in queue" in line  # 42 s estimated, 12 s of it passed
        assert "━" in line  # the bar
    else:
        assert line == "QUEUED q3 20% 0:12 ~0:30"  # ~ the time left in the queue
    display.task(snapshot("task_7Hk2aQ", "IN_PROGRESS", "45%"))
    (line,) = frame(display, screen)
    assert "IN_PROGRESS" in line
    assert line.count("%") == 1
    assert "45%" in line
    assert "queue" not in line
    assert " q3" not in line


def test_the_task_id_is_printed_once_above_whatever_the_width() -> None:
    """The id stays in the scrollback even at 40 columns, where the live line leaves it out."""
    screen = console(40)
    display = RichDisplay(screen, clock=Clock(), live=False)
    for status, progress in [("QUEUED", "20%"), ("IN_PROGRESS", "30%"), ("SUCCESS", "100%")]:
        display.task(snapshot("task_abc", status, progress))
    assert screen.export_text().splitlines() == ["task task_abc"]


@pytest.mark.parametrize("width", WIDTHS)
def test_wait_shows_a_summary_and_the_tasks_in_flight_newest_change_first(width: int) -> None:
    clock, screen = Clock(), console(width)
    display = RichDisplay(screen, total=5, clock=clock, live=False)
    for n, (status, progress) in enumerate(
        [("QUEUED", "20%"), ("IN_PROGRESS", "30%"), ("IN_PROGRESS", "60%"), ("SUBMITTED", "10%")]
    ):
        clock.now += 1
        display.task(snapshot(f"task_{n}", status, progress))
    clock.now += 1
    display.task(snapshot("task_0", "IN_PROGRESS", "35%"))  # the newest change
    display.outcome("task_done", snapshot("task_done", "SUCCESS", "100%"), 1, 5)
    above = screen.export_text().splitlines()
    assert above == ["task_done SUCCESS"]  # an outcome is a line above the region
    lines = frame(display, screen)
    assert_fits(lines, width)
    assert lines[0].startswith("1/5 done")
    assert "0 failed" in lines[0]
    assert "0:05" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["task_0", "task_3", "task_2", "task_1"]
    assert lines[1].split()[1:] == ["IN_PROGRESS", "35%"]
    display.outcome("task_3", TaskFailedError(snapshot("task_3", "FAILURE", "100%")), 2, 5)
    lines = frame(display, screen)
    assert lines[0].startswith("2/5 done")
    assert "1 failed" in lines[0]
    assert "task_3" not in "\n".join(lines[1:])


def test_the_table_is_capped_to_the_terminal_height() -> None:
    clock, screen = Clock(), console(80, height=12)
    display = RichDisplay(screen, total=30, clock=clock, live=False)
    for n in range(30):
        clock.now += 1
        display.task(snapshot(f"task_{n:02d}", "IN_PROGRESS", f"{n}%"))
    lines = frame(display, screen)
    assert len(lines) == 12 - 2  # the summary, 8 tasks, the rest counted; the cursor's row and a margin free
    assert [line.split()[0] for line in lines[1:9]] == [f"task_{n:02d}" for n in range(29, 21, -1)]
    assert lines[-1].strip() == "… and 22 more in flight"


@pytest.mark.parametrize("width", WIDTHS)
def test_download_shows_bytes_rate_and_time_left(width: int) -> None:
    clock, screen = Clock(), console(width)
    display = RichDisplay(screen, clock=clock, live=False)
    display.bytes(1_000_000, 9_000_000)
    clock.now += 2
    display.bytes(5_000_000, 9_000_000)
    (line,) = frame(display, screen)
    assert "5.0 MB of 9.0 MB" in line
    assert "2.0 MB/s" in line  # 4 MB in 2 s
    assert "0:02 left" in line  # 4 MB to go at 2 MB/s
    assert len(line) <= width
    assert ("━" in line) == (width >= 60)


def test_a_download_of_unknown_size_shows_no_bar_and_no_time_left() -> None:
    clock, screen = Clock(), console(100)
    display = RichDisplay(screen, clock=clock, live=False)
    display.bytes(1000, None)
    clock.now += 1
    display.bytes(3000, None)
    (line,) = frame(display, screen)
    assert line.strip() == "downloading 3.0 kB 2.0 kB/s"


@pytest.mark.parametrize("width", [40, 60, 100])
def test_long_ids_and_statuses_are_cut_never_wrapped(width: int) -> None:
    clock, screen = Clock(), console(width)
    long_id = "task_" + "x" * 120
    single = RichDisplay(screen, clock=clock, live=False)
    single.task(snapshot(long_id, "IN_PROGRESS", "50%", progress_pos_in_queue=12345))
    single.bytes(10**9, 10**10)
    batch = RichDisplay(screen, total=2, clock=clock, live=False)
    batch.task(snapshot(long_id, "IN_PROGRESS", "50%"))
    batch.task(snapshot(long_id + "y", "SOME_VERY_LONG_UPSTREAM_STATUS_NAME", "50%"))
    for display, count in [(single, 2), (batch, 3)]:
        lines = frame(display, screen)
        assert len(lines) == count
        assert_fits(lines, width)


def test_closing_twice_leaves_the_last_frame_once() -> None:
    """After Ctrl-C the display is closed by the handler and again on the way out: one last frame."""
    screen = Console(record=True, width=60, file=io.StringIO(), color_system=None, force_terminal=False)
    display = RichDisplay(screen, clock=Clock())
    display.task(snapshot("task_abc", "IN_PROGRESS", "40%"))
    display.close()
    display.close()
    text = screen.export_text()
    assert text.count("IN_PROGRESS") == 1, text
    assert ABOVE.get() is None


def test_a_retry_line_goes_above_a_live_display() -> None:
    """While the live region runs, a retry is printed through it (above it), not into it."""
    screen = console(80)
    err = io.StringIO()
    with retry_log(err, show=True) as retries:
        retries.color = False
        display = RichDisplay(screen, clock=Clock())
        try:
            logging.getLogger("sora_async").debug(
                "retrying", extra={"sora_retry": ("GET /sora/v1/videos/t", TimeoutError(), 1.5)}
            )
        finally:
            display.close()
        logging.getLogger("sora_async").debug(
            "retrying", extra={"sora_retry": ("GET /sora/v1/videos/t", TimeoutError(), 3.0)}
        )
    assert "GET /sora/v1/videos/t failed (TimeoutError); next try in 1.5 s" in screen.export_text()
    assert err.getvalue() == "GET /sora/v1/videos/t failed (TimeoutError); next try in 3.0 s\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_output_gets_its_display() -> None:
    err = io.StringIO()
    assert isinstance(make_display(True, Terminal(), err), JsonLinesDisplay)
    assert isinstance(make_display(False, io.StringIO(), err), PlainDisplay)
    terminal = make_display(False, Terminal(), err, kind="batch", total=7)
    try:
        assert isinstance(terminal, RichDisplay)
        assert terminal.total == 7
    finally:
        terminal.close()
    single = make_display(False, Terminal(), err, kind="download", total=7)
    try:
        assert isinstance(single, RichDisplay)
        assert single.total is None
    finally:
        single.close()


def test_plain_lines_name_the_task_and_never_repeat_a_byte_line() -> None:
    clock, stream = Clock(), io.StringIO()
    display = PlainDisplay(stream, clock=clock)
    display.task(snapshot("task_abc", "QUEUED", "20%", progress_pos_in_queue=2))
    for done in range(0, 1001, 50):
        display.bytes(done, 1000)
    display.outcome("task_x", DownloadError("gone"), 1, 2)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[    0.0s] task_abc QUEUED 20% (queue position 2)"
    assert len(lines) == len(set(lines))
    assert lines[-1] == "[    0.0s] 1/2 task_x gone"


def test_an_outcome_line_keeps_its_url_whole_at_any_width() -> None:
    """Lines above the region are never cut or broken by rich: a URL must stay whole to be copied."""
    screen = console(40)
    display = RichDisplay(screen, total=1, clock=Clock(), live=False)
    url = "https://cdn.example/" + "v" * 80 + ".mp4?se=2026-12-05&sig=abc"
    done = snapshot("task_abc", "SUCCESS", "100%", generations=[{"url": url}])
    display.outcome("task_abc", done, 1, 1)
    assert screen.export_text().splitlines() == [f"task_abc SUCCESS {url}"]


def test_at_40_columns_a_row_keeps_status_and_percent_and_cuts_the_id_in_the_middle() -> None:
    """Real ids are 30 characters: the id gives way, keeping both ends, and nothing else is lost."""
    clock, screen = Clock(), console(40)
    display = RichDisplay(screen, total=2, clock=clock, live=False)
    ids = ["task_01f8qy40ygecyys9e9r04a2k1h", "task_01yrvsw8q628zdgvktrpten1ha"]
    for task_id in ids:
        clock.now += 1
        display.task(snapshot(task_id, "IN_PROGRESS", "60%", progress_pos_in_queue=4))
    lines = frame(display, screen)
    assert_fits(lines, 40)
    for line, task_id in zip(lines[1:], reversed(ids), strict=True):
        shown, status, percent = line.split()
        assert (status, percent) == ("IN_PROGRESS", "60%")
        assert "…" in shown
        head, tail = shown.split("…")
        assert task_id.startswith(head)
        assert task_id.endswith(tail)
        assert len(tail) >= 5


@pytest.mark.parametrize("width", range(40, 131, 6))
def test_a_real_id_never_costs_the_percent_or_the_elapsed_time(width: int) -> None:
    """With a 30-character id the line gives up the id first, then the bar, then the long words."""
    clock, screen = Clock(), console(width)
    display = RichDisplay(screen, clock=clock, live=False)
    task_id = "task_01rt2gzskypd8j86g9k64ny6pv"
    display.task(snapshot(task_id, "QUEUED", "20%", progress_pos_in_queue=3, estimated_queue_wait_time=400))
    clock.now += 2
    (line,) = frame(display, screen)
    assert len(line) <= width
    assert "QUEUED" in line
    assert line.count("20%") == 1
    assert "0:02" in line
    assert "6:38" in line  # the time left in the queue, long or short
    assert ("━" in line) == (width >= 73)  # 61 characters of words and a bar of 10 or more
    assert (task_id in line) == (width >= 104)
