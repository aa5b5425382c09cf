"""The CLI's errors: messages in flags, hints for the common mistakes, visible retries, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest

from sora_async import cli
from sora_async.testing import FakeSoraServer, Fault

from .test_cli import run_subprocess

KEY = "sk-cli-errors-key-12"


@pytest.fixture
async def server() -> AsyncIterator[FakeSoraServer]:
    async with FakeSoraServer(api_key=KEY) as fake:
        yield fake


class TTY(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


async def run_cli(*argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), err if err is not None else io.StringIO()
    code = await cli.run(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def against(server: FakeSoraServer, url: str | None = None) -> list[str]:
    return ["--base-url", url if url is not None else server.url, "--api-key", KEY]


def error_and_hint(err: str) -> tuple[str, str]:
    """The last two lines of stderr, which must be the error and its one-line hint."""
    *_, error, hint = err.strip().splitlines()
    assert error.startswith("error: "), err
    assert hint.startswith("hint: "), err
    return error, hint


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A loopback server that accepts connections and never answers; yields its URL."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    listener.close()
    await listener.wait_closed()


# --- 1. messages in the CLI's own words ---------------------------------------


async def test_config_messages_name_flags(server: FakeSoraServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key names --api-key and COMETAPI_KEY; a refused http URL names --allow-insecure-http (it works)."""
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    code, _, err = await run_cli("status", "task_1", "--base-url", server.url)
    assert code == cli.EXIT_CONFIG
    assert "--api-key" in err
    assert "COMETAPI_KEY" in err
    assert "api_key=" not in err
    # 0.0.0.0 is not a loopback name, yet reaches this machine's server on Linux.
    insecure = server.url.replace("127.0.0.1", "0.0.0.0")  # noqa: S104 (a URL, nothing listens there)
    code, _, err = await run_cli("status", "task_1", *against(server, insecure))
    assert code == cli.EXIT_CONFIG
    assert "--allow-insecure-http" in err
    assert "allow_insecure_http" not in err
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    code, out, err = await run_cli("status", task_id, *against(server, insecure), "--allow-insecure-http")
    assert code == cli.EXIT_OK, err
    assert out.startswith(f"{task_id} SUCCESS")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["generate", "x", "--timeout", "-5"], "--timeout"),
        (["wait", "t", "--rate", "0"], "--rate"),
        (["wait", "t", "--concurrency", "0"], "--concurrency"),
        (["status", "t", "--request-timeout", "0"], "--request-timeout"),
        (["status", "t", "--retries", "-1"], "--retries"),
    ],
)
async def test_bad_values_are_usage_errors_in_flag_words(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Impossible numbers are argparse usage errors (exit 2) naming the flag, never "None"."""
    code, _, _ = await run_cli(*argv)
    assert code == cli.EXIT_USAGE
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}:" in message
    assert "None" not in message
    assert "rate_limit" not in message


def test_every_option_shows_its_default_and_the_prompt_has_help() -> None:
    """Each option of generate, status, wait and download that takes a value says its default."""
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("generate", "status", "wait", "download"):
        command = subparsers.choices[name]
        for action in command._actions:
            if action.help is None:
                pytest.fail(f"{name} {action.dest} has no help")
            if action.option_strings and action.nargs != 0:  # an option that takes a value
                assert "(default" in action.help, (name, action.option_strings)
        assert "(default: 1800)" in command.format_help() or name in ("status", "download")
    generate = subparsers.choices["generate"].format_help()
    assert "what the video should show" in generate
    assert "(default: 854)" in generate
    assert "(default: 150)" in generate


# --- 2. hints for the common mistakes -------------------------------------------


async def test_hint_https_to_a_plain_http_server(server: FakeSoraServer) -> None:
    """https:// to a plain-HTTP port: a TLS error, exit 6, and a hint to use http:// and the flag."""
    code, _, err = await run_cli(
        "status", "task_1", *against(server, server.url.replace("http://", "https://")), "--retries", "0"
    )
    assert code == cli.EXIT_CONNECTION
    error, hint = error_and_hint(err)
    assert "SSL" in error
    assert f"--base-url {server.url}" in hint
    assert "--allow-insecure-http" in hint


@pytest.mark.parametrize("path", ["/v1", "/sora/v1/"])
async def test_hint_a_base_url_with_an_api_path(server: FakeSoraServer, path: str) -> None:
    """A base URL with an API path answers a non-JSON 404: exit 4, hint to drop the path."""
    code, _, err = await run_cli("status", "task_1", *against(server, server.url + path))
    assert code == cli.EXIT_CONFIG
    error, hint = error_and_hint(err)
    assert "404" in error
    assert f"without {path.rstrip('/')}" in hint
    assert server.url in hint


async def test_hint_a_non_json_404_at_the_root(server: FakeSoraServer) -> None:
    """A non-JSON 404 from a root URL (another server on that port): hint to check --base-url."""
    server.inject(Fault(404, "<html>Not Found</html>", content_type="text/html"), route="query")
    code, _, err = await run_cli("status", "task_1", *against(server))
    assert code == cli.EXIT_CONFIG
    _, hint = error_and_hint(err)
    assert "check --base-url" in hint
    assert "https://api.cometapi.com" in hint


async def test_hint_a_server_that_never_answers(silent_server: str) -> None:
    """A silent server: a timeout (exit 3) whose hint says how long each try waited, and how many."""
    code, _, err = await run_cli(
        "status", "task_1", "--base-url", silent_server, "--api-key", KEY,
        "--request-timeout", "0.2", "--retries", "1",
    )  # fmt: skip
    assert code == cli.EXIT_TIMEOUT
    error, hint = error_and_hint(err)
    assert "timed out after 0.2 s" in error
    assert "sent no answer: 2 tries of 0.2 s each" in hint
    assert "--request-timeout" in hint


async def test_the_default_request_timeout_keeps_a_silent_status_short(server: FakeSoraServer) -> None:
    """The client the CLI builds without options tries a request 3 times for 20 s each (about a
    minute for a silent server, not the SDK's 157 s); the flags change both."""
    from sora_async.cli._commands import open_client

    parser = cli.build_parser()
    async with open_client(parser.parse_args(["status", "t", *against(server)])) as client:
        transport = client._transport
        assert (transport._max_retries + 1) * transport._timeout == 3 * 20.0
    flags = ["--request-timeout", "2.5", "--retries", "0"]
    async with open_client(parser.parse_args(["status", "t", *against(server), *flags])) as client:
        assert (client._transport._max_retries, client._transport._timeout) == (0, 2.5)


async def test_hint_a_create_whose_outcome_is_unknown(server: FakeSoraServer) -> None:
    """A create sent and never answered: the task may exist and be billed; the hint says where to look."""
    server.inject(Fault(200, {"code": "success", "data": "task_late"}, delay=2), route="create")
    code, out, err = await run_cli("generate", "a boat", *against(server), "--request-timeout", "0.2")
    assert code == cli.EXIT_TIMEOUT
    assert out == ""
    _, hint = error_and_hint(err)
    assert "may exist and be billed" in hint
    assert "console" in hint
    assert "sora-async wait" not in err  # no id is known, so no resume command is invented


# --- 3. retries are visible on a terminal -----------------------------------------


async def test_each_retry_is_one_dim_line_on_a_terminal(
    server: FakeSoraServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried request and poll show one dim line each on a TTY stderr; --json stdout stays clean."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(Fault.server_error(503), route="query")
    code, out, err = await run_cli("status", task_id, *against(server), "--json", err=TTY())
    assert code == cli.EXIT_OK
    assert [t["task_id"] for t in json.loads(out)["tasks"]] == [task_id]
    (line,) = [line for line in err.splitlines() if "next try in" in line]
    assert line.startswith("\x1b[2m")
    assert line.endswith("\x1b[0m")
    assert f"GET /sora/v1/videos/{task_id} failed (HTTP 503); next try in" in line

    # wait queries its first id once before the batch; the fault waits for the batch's poll of the second.
    second = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(Fault.server_error(502), route="query", task_id=second)
    code, out, err = await run_cli("wait", task_id, second, *against(server), "--json", err=TTY())
    assert code == cli.EXIT_OK
    json.loads(out)
    (line,) = [line for line in err.splitlines() if "next try in" in line]
    assert f"poll of {second} failed (HTTP 502); next try in" in line


async def test_no_retry_lines_off_a_terminal(server: FakeSoraServer) -> None:
    """Into a file or pipe, retries stay quiet."""
    task_id = server.add_task(timeline=[("SUCCESS", "100%")])
    server.inject(Fault.server_error(503), route="query")
    code, _, err = await run_cli("status", task_id, *against(server))
    assert code == cli.EXIT_OK
    assert err == ""


# --- 4. exit codes a script can branch on ---------------------------------------


async def test_status_exit_codes_failure_and_not_found(server: FakeSoraServer) -> None:
    """status: 1 when a listed task is FAILURE; 5 when one is not found, which outranks FAILURE."""
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    failed = server.add_task(timeline=[("FAILURE", "100%")], fail_reason="nope")
    assert (await run_cli("status", done, *against(server)))[0] == cli.EXIT_OK
    assert (await run_cli("status", done, failed, *against(server)))[0] == cli.EXIT_FAILED
    code, out, _ = await run_cli("status", failed, "task_missing", done, *against(server))
    assert code == cli.EXIT_NOT_FOUND
    assert len(out.splitlines()) == 3  # every task is still reported


async def test_the_wrong_key_prints_the_request_id_once(server: FakeSoraServer) -> None:
    """The gateway's 401 message carries its request id; the error line does not repeat it."""
    code, _, err = await run_cli("status", "task_1", "--base-url", server.url, "--api-key", "wrong")
    assert code == cli.EXIT_CONFIG
    assert err.count("fake-req-") == 1, err


async def test_exit_codes_as_a_subprocess(server: FakeSoraServer, tmp_path: object) -> None:
    """Each documented exit code, from `python -m sora_async` (130 is in test_cli)."""
    done = server.add_task(timeline=[("SUCCESS", "100%")])
    failed = server.add_task(timeline=[("FAILURE", "100%")])
    args = against(server)

    assert (await run_subprocess("status", done, *args))[0] == cli.EXIT_OK == 0
    assert (await run_subprocess("status", failed, *args))[0] == cli.EXIT_FAILED == 1
    assert (await run_subprocess("wait", done, "--concurrency", "0", *args))[0] == cli.EXIT_USAGE == 2

    server.inject(Fault(200, b"never", delay=5, content_type="video/mp4"), route="cdn")  # a host that stalls
    code, _, err = await run_subprocess("download", done, "-o", f"{tmp_path}/", "--timeout", "0.5", *args)
    assert code == cli.EXIT_TIMEOUT == 3, err
    assert "timed out" in err

    code, _, err = await run_subprocess("status", done, "--base-url", server.url, "--api-key", "wrong")
    assert code == cli.EXIT_CONFIG == 4, err
    assert err.count("fake-req-") == 1

    assert (await run_subprocess("status", "task_missing", *args))[0] == cli.EXIT_NOT_FOUND == 5

    server.inject(Fault.server_error(502), times=3, route="query")
    code, out, err = await run_subprocess("status", done, *args, "--retries", "2")
    assert code == cli.EXIT_CONNECTION == 6, err
    assert f"{done} refused: HTTP 502" in out


def test_exit_code_mapping() -> None:
    """The mapping itself, for the errors a subprocess run cannot cheaply produce."""
    from sora_async import APIConnectionError, DownloadError, DownloadTimeoutError, ResponseDecodeError

    assert cli.exit_code_for(DownloadTimeoutError("stalled")) == cli.EXIT_TIMEOUT
    assert cli.exit_code_for(DownloadError("cannot write")) == cli.EXIT_FAILED
    assert cli.exit_code_for(APIConnectionError("reset")) == cli.EXIT_CONNECTION
    assert cli.exit_code_for(ResponseDecodeError("not JSON")) == cli.EXIT_CONNECTION
    assert cli.most_pressing([cli.EXIT_TIMEOUT, cli.EXIT_FAILED, cli.EXIT_NOT_FOUND]) == cli.EXIT_NOT_FOUND
    assert cli.most_pressing([]) == cli.EXIT_OK
