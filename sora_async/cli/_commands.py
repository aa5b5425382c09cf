"""The commands: generate, status, wait, download, and fake-server (jobs and resume: `_jobs`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import math
import os
import pathlib
import shlex
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import IO, Any, cast

from sora_async._client import SoraClient
from sora_async._download import VideoStream
from sora_async._download_plan import (
    IMAGE_EXTENSIONS,
    IMAGE_VARIANTS,
    VIDEO_EXTENSIONS,
    Variant,
    check_destination,
)
from sora_async._errors import InvalidTaskIdError, SoraError
from sora_async._models import Task
from sora_async._outcomes import TaskFailedError
from sora_async._policy import PollPolicy
from sora_async._protocol import CREATE_DEFAULTS
from sora_async._videos_protocol import ContentVariant
from sora_async._waits import created_task_id
from sora_async.testing import FakeSoraServer

from ._args import (
    DEFAULT_RETRIES,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    FAKE_KEY,
    cli_words,
    journal_on,
    option,
    request_timeout,
)
from ._display import Display, error_json, error_words, make_display, status_text, task_json
from ._failures import ConfigError, about_the_server, exit_code_for, most_pressing
from ._state import announce_earlier, folder_of, journal_flags, journal_path, resume_command


@contextlib.asynccontextmanager
async def open_client(args: argparse.Namespace) -> AsyncIterator[SoraClient]:
    """A client for the real API, or for an embedded fake server with --fake; with the task journal
    (`journal_path`) unless --no-journal or --fake."""
    journal = journal_path(args)
    if option(args, "fake", False):
        # A compressed clock and a matching poll policy, so a demo takes seconds.
        async with FakeSoraServer(advance="clock", step_seconds=0.5) as server:
            key = option(args, "api_key") or FAKE_KEY
            poll = PollPolicy(initial_interval=0.25, max_interval=0.25)
            async with SoraClient(key, base_url=server.url, poll=poll, **client_options(args)) as client:
                yield client
        return
    given = option(args, "api_key")
    if given is not None and not given.strip():
        raise ConfigError("--api-key is empty: pass the key, or leave the flag out to use $COMETAPI_KEY")
    key = given or os.environ.get("COMETAPI_KEY", "")
    if not key.strip():
        raise ConfigError("no API key: pass --api-key KEY or set COMETAPI_KEY")
    try:
        client = SoraClient(
            key,
            base_url=option(args, "base_url"),
            allow_insecure_http=bool(option(args, "allow_insecure_http", False)),
            journal=journal,
            **client_options(args),
        )
    except ValueError as exc:
        raise ConfigError(cli_words(str(exc))) from exc
    async with client:
        yield client


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """The client's per-request timeout and resends, from --request-timeout and --retries."""
    return {
        "timeout": request_timeout(args),
        "max_retries": int(option(args, "retries", DEFAULT_RETRIES)),
    }


REVERSE_OPTIONS = {
    "width": "--width",
    "height": "--height",
    "n_frames": "--frames",
    "n_variants": "--variants",
}
REVERSE_OPTIONS["style"] = "--style"
OPENAI_OPTIONS = {"seconds": "--seconds", "size": "--size", "input_reference": "--input-reference"}
DEFAULT_OPENAI_MODEL = "sora-2"
"""The model `generate --openai` asks for when --model is not given."""


def uses_openai(args: argparse.Namespace) -> bool:
    """Whether the command speaks the OpenAI format: --openai, or for generate one of its options
    or a model other than the reverse format's."""
    if option(args, "openai", False):
        return True
    if args.command != "generate":
        return False
    model = option(args, "model")
    given = any(option(args, name) is not None for name in OPENAI_OPTIONS)
    return given or (model is not None and model != CREATE_DEFAULTS["model"])


async def start_generation(
    client: SoraClient, args: argparse.Namespace, on_progress: Callable[[Task], object]
) -> Task:
    """`generate` in the format the options choose (see `uses_openai`)."""
    if not uses_openai(args):
        options = {
            name: value for name in (*REVERSE_OPTIONS, "model") if (value := option(args, name)) is not None
        }
        return await client.generate(args.prompt, timeout=args.timeout, on_progress=on_progress, **options)
    misplaced = [flag for name, flag in REVERSE_OPTIONS.items() if option(args, name) is not None]
    if misplaced:
        raise ValueError(
            f"{' and '.join(misplaced)} {'belongs' if len(misplaced) == 1 else 'belong'} to the reverse "
            "format; with the OpenAI format "
            "(--openai, --seconds, --size, --input-reference or a --model such as sora-2) use "
            "--seconds and --size"
        )
    return await client.videos.generate(
        args.prompt,
        model=option(args, "model") or DEFAULT_OPENAI_MODEL,
        seconds=option(args, "seconds"),
        size=option(args, "size"),
        input_reference=option(args, "input_reference"),
        timeout=args.timeout,
        on_progress=on_progress,
    )


def choose_variant(args: argparse.Namespace) -> str:
    """The variant to ask for, in the words of the command's format ("source" is the video, "video" too)."""
    variant: str | None = option(args, "variant")
    if uses_openai(args):
        if option(args, "generation", 0):
            raise ValueError(
                "--generation applies to the reverse format only: a video of the OpenAI format has one file"
            )
        if variant in ("md", "ld"):
            raise ValueError(
                f"--variant {variant} is a rendition of the reverse format; with --openai use "
                "video, thumbnail or spritesheet"
            )
        return "video" if variant in (None, "source") else variant
    return "source" if variant in (None, "video") else variant


def video_stream(
    client: SoraClient, args: argparse.Namespace, task_or_id: Task | str, timeout: float | None = None
) -> contextlib.AbstractAsyncContextManager[VideoStream]:
    """The file of a finished task as a stream, in the command's format."""
    variant = choose_variant(args)
    if uses_openai(args):
        return client.videos.stream_video(task_or_id, variant=cast(ContentVariant, variant), timeout=timeout)
    generation = option(args, "generation", 0)
    return client.stream_video(
        task_or_id, variant=cast(Variant, variant), generation=generation, timeout=timeout
    )


async def save_file(
    client: SoraClient,
    args: argparse.Namespace,
    task_or_id: Task | str,
    dest: str,
    on_progress: Callable[[int, int | None], object],
    timeout: float | None = None,
) -> pathlib.Path:
    """`download` in the command's format, with its variant and --force."""
    variant = choose_variant(args)
    if uses_openai(args):
        return await client.videos.download(
            task_or_id,
            dest,
            variant=cast(ContentVariant, variant),
            on_progress=on_progress,
            timeout=timeout,
            overwrite=args.force,
        )
    generation = option(args, "generation", 0)
    return await client.download(
        task_or_id,
        dest,
        variant=cast(Variant, variant),
        generation=generation,
        on_progress=on_progress,
        timeout=timeout,
        overwrite=args.force,
    )


async def cmd_generate(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    # With -o - standard output carries the video, so every line of text goes to stderr.
    text = err if args.output == "-" and not out.isatty() else out
    fake = bool(option(args, "fake", False))
    display: Display | None = None
    task: Task | None = None
    path: pathlib.Path | None = None
    received = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal received
        received = done  # what was written: a device (-o /dev/null) has no size to stat
        assert display is not None
        display.bytes(done, total)

    try:
        # Every check on the destination happens now, before a task is created and billed.
        binary = binary_stdout(out) if args.output == "-" else None
        if args.output is not None and binary is None:
            # "" included: refused, never "no download"; an existing file without --force too.
            check_destination(args.output, overwrite=args.force)
        if fake and not args.json:
            print("Using an embedded fake server (--fake).", file=err, flush=True)
        display = make_display(args.json, text, err)
        async with open_client(args) as client:
            await announce_earlier(client, args, err)
            task = await start_generation(client, args, display.task)
            if binary is not None:
                await write_video(video_stream(client, args, task), binary, on_progress=progress)
            elif args.output is not None:
                path = await save_file(client, args, task, args.output, progress)
    except BaseException as exc:
        if display is not None:
            display.close()
        task_id = task.task_id if task is not None else created_task_id(exc)
        resume: list[str] = []
        if fake:
            pass  # the task lived in the embedded server, which is gone: nothing to resume
        elif task_id is not None and not isinstance(exc, TaskFailedError):  # a failed task is over
            # The task exists and is billed: never end without saying how to get it.
            resume = resume_commands(
                task_id, args, args.output, downloading=task is not None, force=args.force
            )
            everything = resume_command(args, folder_of(args.output)) if journal_on(args) else None
            if not args.json:
                print(f"task {task_id} was created and is billed; to resume:", file=err)
                for command in resume:
                    print(f"  {command}", file=err)
                if everything is not None:
                    print(f"or, with every unfinished task of the journal: {everything}", file=err)
        elif task_id is None and display is not None and interrupted(exc) and not args.json:
            # Ctrl-C while the create was on its way: it may have arrived.
            print(CREATE_MAY_EXIST, file=err)
            if journal_on(args):
                print(CREATE_KEPT.format(flags=journal_flags(args)), file=err)
        if args.json:  # early checks and Ctrl-C included: whoever reads the JSON gets one document
            document = error_json(task_id, exc, resume)
            if resume and journal_on(args):
                document["resume_all"] = resume_command(args, folder_of(args.output))
            print(json.dumps(document), file=text)
        raise
    finally:
        if display is not None:
            display.close()
    if args.json:
        document = {**task_json(task), "file": str(path) if path else None}
        document["bytes"] = received if args.output is not None else None
        print(json.dumps(document), file=text)
    else:
        if task.video_url:  # the OpenAI format may name none: its file comes from /content
            print(f"video: {task.video_url}", file=text)
        if path is not None:
            print(f"saved: {path} ({received:,} bytes)", file=text)
        elif args.output == "-":
            print(f"wrote {received:,} bytes to standard output", file=text)
    return EXIT_OK


CREATE_MAY_EXIST = (
    "interrupted before the create was answered: a task may exist and be billed. The gateway cannot "
    "list tasks; look for it in CometAPI's console (task logs) before running generate again"
)


CREATE_KEPT = (
    "the journal kept the create: sora-async jobs --pending{flags} shows it, as a task that "
    "sora-async resume picks up if its answer came, else as a create in doubt with its prompt and time"
)


def interrupted(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))


def global_flags(args: argparse.Namespace) -> str:
    """The options a resume command needs to reach the same API: --base-url and the like, never the key."""
    flags = []
    base_url = option(args, "base_url")
    if base_url:
        flags.append(f" --base-url {shlex.quote(base_url)}")
    if option(args, "allow_insecure_http", False):
        flags.append(" --allow-insecure-http")
    if uses_openai(args):
        flags.append(" --openai")
    return "".join(flags) + journal_flags(args)


def resume_commands(
    task_id: str, args: argparse.Namespace, output: str | None, *, downloading: bool, force: bool = False
) -> list[str]:
    """The commands that pick a created task up again: wait for it, then download it.

    They carry `--base-url` when one was given as a flag (the environment's
    still applies), and never the key.
    """
    quoted = shlex.quote(task_id)
    flags = global_flags(args)
    commands = [] if downloading else [f"sora-async wait {quoted}{flags}"]
    if output:
        force_flag = " --force" if force else ""
        commands.append(f"sora-async download {quoted} -o {shlex.quote(output)}{force_flag}{flags}")
    elif downloading:
        commands.append(f"sora-async status {quoted}{flags}")
    return commands


async def cmd_status(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    openai = uses_openai(args)
    results: list[dict[str, Any]] = []
    codes: list[int] = []
    async with open_client(args) as client:
        for task_id in args.task_ids:
            try:
                task = await (client.videos.retrieve if openai else client.get_task)(task_id)
            except SoraError as exc:
                if about_the_server(exc):  # every other task would fail alike
                    raise
                codes.append(exit_code_for(exc))
                results.append(error_json(task_id, exc))
                if not args.json:
                    print(f"{task_id or repr(task_id)} {error_words(exc)}", file=out)
                continue
            results.append(task_json(task))
            if task.status == "FAILURE":
                codes.append(EXIT_FAILED)
            if not args.json:
                reason = f" ({task.fail_reason})" if task.fail_reason else ""
                url = f" {task.video_url}" if task.status == "SUCCESS" and task.video_url else ""
                print(f"{task.task_id} {status_text(task)} {task.progress or '-'}{reason}{url}", file=out)
    if args.json:
        print(json.dumps({"tasks": results}), file=out)
    return most_pressing(codes)


async def cmd_wait(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    total = len(args.task_ids)
    display = make_display(args.json, out, err, kind="batch", total=total)
    results: list[dict[str, Any]] = []
    ended: set[str] = set()
    codes: list[int] = []
    try:
        async with open_client(args) as client:
            openai = uses_openai(args)
            await announce_earlier(client, args, err, exclude=args.task_ids)
            probed = await check_the_server(client, args.task_ids, openai=openai)
            if probed is not None:
                display.task(probed)
            outcomes = (client.videos if openai else client).as_completed(
                args.task_ids,
                concurrency=args.concurrency,
                rate_limit=args.rate,
                timeout=args.timeout,
                on_progress=display.task,
            )
            async with outcomes:
                async for task_id, outcome in outcomes:
                    if isinstance(outcome, SoraError) and about_the_server(outcome):
                        raise outcome  # every other task would fail alike
                    ended.add(task_id)
                    display.outcome(task_id, outcome, len(results) + 1, total)
                    if isinstance(outcome, Task):
                        results.append(task_json(outcome))
                    else:
                        results.append(error_json(task_id, outcome))
                        codes.append(exit_code_for(outcome))
    except (asyncio.CancelledError, KeyboardInterrupt):
        display.close()
        # Ctrl-C: the tasks go on upstream; say which, and how to pick them up again.
        running = list(dict.fromkeys(t for t in args.task_ids if t not in ended))
        resume = [f"sora-async wait {' '.join(shlex.quote(t) for t in running)}{global_flags(args)}"]
        if args.json:  # stdout stays one document, Ctrl-C included
            document = {"tasks": results, "error": "Interrupted", "running": running}
            print(json.dumps({**document, "resume": resume if running else []}), file=out)
        elif running:
            print(f"{len(running)} task(s) still running upstream; to resume:", file=err)
            print(f"  {resume[0]}", file=err)
            if journal_on(args):
                everything = resume_command(args)
                print(
                    f"or wait for every unfinished task of the journal and save its video here: {everything}",
                    file=err,
                )
        raise
    finally:
        display.close()
    if args.json:
        print(json.dumps({"tasks": results}), file=out)
    else:
        done = sum(1 for r in results if "error" not in r)
        print(f"{done} of {total} succeeded", file=out)
    return most_pressing(codes)


async def check_the_server(
    client: SoraClient, task_ids: Sequence[str], *, openai: bool = False
) -> Task | None:
    """One query before a batch, so that a server that refuses, never answers or refuses the key
    stops the command at once (exit 4 or 6, with a hint) rather than at the batch's deadline:
    a batch retries those errors as passing ones. Any other error is left to the batch.

    Returns the snapshot the query got, if any, for the display.
    """
    for task_id in task_ids:
        try:
            return await (client.videos.retrieve if openai else client.get_task)(task_id)
        except InvalidTaskIdError:
            continue  # the batch reports it; try the next id
        except SoraError as exc:
            if about_the_server(exc):
                raise
            return None
    return None


async def write_video(
    stream: contextlib.AbstractAsyncContextManager[VideoStream],
    binary: IO[bytes],
    *,
    on_progress: Callable[[int, int | None], object] | None = None,
) -> int:
    """Copy a file's stream (`stream_video` of either format) into a binary stream, such as
    `sys.stdout.buffer`.

    Writes run in a worker thread, so a slow reader of a pipe never stalls
    the event loop. Returns the bytes written. Raises as `stream_video`
    does (`DownloadTimeoutError` when its timeout passes), and `OSError` from
    the stream (a closed pipe is `BrokenPipeError`).
    """
    async with stream as video:
        async for chunk in video:
            await asyncio.to_thread(binary.write, chunk)
            if on_progress is not None:
                on_progress(video.received, video.size)
        await asyncio.to_thread(binary.flush)
        return video.received


def binary_stdout(out: IO[str]) -> IO[bytes]:
    """The byte stream under the text stream `out`, for `-o -`.

    Raises:
        ValueError: `out` is a terminal (a video would garble it), or has no byte stream.
    """
    buffer: IO[bytes] | None = getattr(out, "buffer", None)
    if buffer is None:
        raise ValueError("-o - needs a standard output that takes bytes")
    if out.isatty():
        raise ValueError("refusing to write a video to a terminal: redirect standard output, or use -o FILE")
    return buffer


async def cmd_download(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    # With -o - standard output carries the video, so every line of text goes to stderr.
    binary = binary_stdout(out) if args.output == "-" else None
    report = err if binary is not None else out
    variant = choose_variant(args)  # a --generation with --openai is refused here, before anything is sent
    if binary is None:
        mismatch = variant_mismatch(variant, args.output)
        if mismatch is not None:
            warn(args, err, mismatch)
    display = make_display(args.json, report, err, kind="download")
    received = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal received
        received = done
        display.bytes(done, total)

    try:
        async with open_client(args) as client:
            if binary is not None:
                stream = video_stream(client, args, args.task_id, timeout=args.timeout)
                await write_video(stream, binary, on_progress=progress)
                where = "-"
            else:
                path = await save_file(client, args, args.task_id, args.output, progress, args.timeout)
                where = str(path)
    finally:
        display.close()
    if args.json:
        print(json.dumps({"task_id": args.task_id, "file": where, "bytes": received}), file=report)
    elif binary is not None:
        print(f"wrote {received:,} bytes to standard output", file=report)
    else:
        print(f"saved: {where} ({received:,} bytes)", file=report)
    return EXIT_OK


def variant_mismatch(variant: str, output: str) -> str | None:
    """A warning when --output's extension names a video for an image variant, or the reverse."""
    suffix = pathlib.PurePath(output).suffix.lower()
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        return None  # a folder: the file is named for its variant
    image = variant in IMAGE_VARIANTS
    if image and suffix in VIDEO_EXTENSIONS:
        return f"--variant {variant} is an image, but {output} is named as a video ({suffix})"
    if not image and suffix in IMAGE_EXTENSIONS:
        return f"--variant {variant} is a video, but {output} is named as an image ({suffix})"
    return None


def warn(args: argparse.Namespace, err: IO[str], text: str) -> None:
    """One warning on stderr: a `warning:` line, or a JSON line with --json."""
    if args.json:
        print(json.dumps({"event": "warning", "message": text}), file=err, flush=True)
    else:
        print(f"warning: {text}", file=err, flush=True)


async def cmd_fake_server(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    def usage(message: str) -> int:
        print(f"sora-async fake-server: error: {message}", file=err)
        return EXIT_USAGE

    # The global client options make no sense for the server: refuse them rather than ignore them.
    client_flags = (
        ("--journal", "journal"),
        ("--no-journal", "no_journal"),
        ("--fake", "fake"),
        ("--base-url", "base_url"),
        ("--allow-insecure-http", "allow_insecure_http"),
        ("--request-timeout", "request_timeout"),
        ("--retries", "retries"),
    )
    misplaced = [flag for flag, name in client_flags if hasattr(args, name)]
    if misplaced:
        return usage(f"{' and '.join(misplaced)} cannot be used here: fake-server is the server itself")
    if not 0 <= args.port <= 65535:
        return usage(f"--port must be from 0 to 65535, got {args.port}")
    if not (math.isfinite(args.step_seconds) and args.step_seconds > 0):
        return usage(f"--step-seconds must be a finite number > 0, got {args.step_seconds}")
    if args.tasks < 0:
        return usage(f"--tasks must be 0 or more, got {args.tasks}")
    if not 0 <= args.failure_rate <= 1:
        return usage(f"--failure-rate must be from 0 to 1, got {args.failure_rate}")
    key: str | None = option(args, "api_key") or None  # only the flag: a real $COMETAPI_KEY is never echoed

    def log(method: str, path: str, status: int, elapsed: float) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {method} {path} {status or '-'} {elapsed * 1000:.1f} ms", file=err, flush=True)

    server = FakeSoraServer(
        api_key=key,
        advance="clock",
        step_seconds=args.step_seconds,
        seed=args.seed,
        host=args.host,
        port=args.port,
        on_request=log,
    )
    try:
        await server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"error: port {args.port} on {args.host} is already in use; pick another with --port "
                "(0 picks a free one)",
                file=err,
            )
        else:
            print(f"error: cannot listen on {args.host} port {args.port}: {exc.strerror or exc}", file=err)
        return EXIT_CONFIG
    try:
        # Pre-created tasks take from half to one and a half times as long as a created one.
        span = args.step_seconds * max(1, len(server.timeline) - 1)
        ids = server.add_tasks(
            args.tasks, duration=(span / 2, span * 1.5), failure_rate=args.failure_rate, seed=args.seed
        )
        accepts = "only the key given with --api-key" if key else "any key"
        # Listening on every address: a client reaches it on this machine's loopback.
        url = server.url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
        print(
            f"Fake Sora API on {server.url}, accepting {accepts} (Ctrl-C to stop). Point a client at it:",
            file=out,
        )
        print(f"  export COMETAPI_BASE_URL={url} COMETAPI_KEY={shlex.quote(key or 'any-key')}", file=out)
        if ids:
            failing = sum(server.tasks[task_id].timeline[-1][0] == "FAILURE" for task_id in ids)
            print(
                f"{len(ids)} task{'s' if len(ids) != 1 else ''} created, {failing} of them to fail, "
                f"all done within {span * 1.5:g} s:",
                file=out,
            )
            print(f"  sora-async wait {' '.join(ids)}", file=out)
        out.flush()
        await asyncio.Event().wait()  # until cancelled by Ctrl-C
    finally:
        await server.close()
    return EXIT_OK
