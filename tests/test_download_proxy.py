"""Downloads go the caller's way to the network (its proxy, its trust_env) and never carry its credentials.

The proxy is a small aiohttp forward proxy on loopback, written here: the
video host is plain http, so forwarding absolute-form requests is all it
needs, aiohttp is already a dependency, and it records what it sees in the
test's own event loop (no thread or process to synchronise with).
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from sora_async import SoraClient, Task
from sora_async.testing import FakeSoraServer, sample_file

from .test_download import VideoHost, finished_task, serve_bytes

KEY = "sk-proxy-test-key-31"
CALLER_TOKEN = "caller-session-token-8"


class ForwardProxy:
    """An HTTP forward proxy on loopback: records each request's headers, adds `Via`, forwards."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.runner: web.AppRunner | None = None
        self.upstream: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.headers)))
        assert self.upstream is not None
        forwarded = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "proxy-connection")
        }
        async with self.upstream.request(
            request.method,
            request.url,
            headers={**forwarded, "Via": "1.1 test-proxy"},
            data=await request.read(),
        ) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), headers={"Via": "1.1 test-proxy"}
            )

    async def __aenter__(self) -> ForwardProxy:
        self.upstream = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        assert self.upstream is not None
        await self.runner.cleanup()
        await self.upstream.close()

    @property
    def url(self) -> str:
        assert self.runner is not None
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"


async def fetch_file(client: SoraClient, task: Task | str, folder: pathlib.Path) -> bytes:
    return (await client.download(task, folder)).read_bytes()


async def fetch_bytes(client: SoraClient, task: Task | str, folder: pathlib.Path) -> bytes:
    return await client.download_bytes(task)


async def fetch_stream(client: SoraClient, task: Task | str, folder: pathlib.Path) -> bytes:
    async with client.stream_video(task) as video:
        return b"".join([chunk async for chunk in video])


FETCHES: dict[str, Callable[[SoraClient, Task | str, pathlib.Path], Awaitable[bytes]]] = {
    "download": fetch_file,
    "download_bytes": fetch_bytes,
    "stream_video": fetch_stream,
}


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy() as forward:
        yield forward


@pytest.fixture(autouse=True)
def no_netrc(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """No ~/.netrc of the machine running the tests (trust_env reads it for the video host)."""
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variables from the machine running the tests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.usefixtures("no_env_proxy")
@pytest.mark.parametrize("fetch", list(FETCHES))
async def test_a_caller_session_proxy_carries_the_download_without_credentials(
    proxy: ForwardProxy, tmp_path: pathlib.Path, fetch: str
) -> None:
    """A borrowed session's proxy carries the download; its headers, cookies and the key do not."""
    async with (
        FakeSoraServer() as server,
        aiohttp.ClientSession(
            proxy=proxy.url,
            headers={"Authorization": f"Bearer {CALLER_TOKEN}", "X-Caller": "yes"},
            cookies={"caller_cookie": "crumbs"},
        ) as session,
        SoraClient(KEY, base_url=server.url, session=session) as client,
    ):
        task_id = server.add_task(timeline=[("SUCCESS", "100%")])
        assert await FETCHES[fetch](client, task_id, tmp_path) == sample_file("mp4")
        assert not session.closed  # the download session shares its connector, and leaves it open
    cdn_via_proxy = [headers for path, headers in proxy.seen if path.startswith("/_fake/cdn/")]
    assert len(cdn_via_proxy) == 1
    (cdn_at_host,) = [r.headers for r in server.recorded if r.path.startswith("/_fake/cdn/")]
    assert cdn_at_host.get("Via") == "1.1 test-proxy"
    for headers in (cdn_via_proxy[0], cdn_at_host):
        assert "Authorization" not in headers
        assert "X-Caller" not in headers
        assert "Cookie" not in headers
        assert not any(KEY in value or CALLER_TOKEN in value for value in headers.values())


@pytest.mark.usefixtures("no_env_proxy")
async def test_the_caller_session_stays_usable_after_the_client_closes(tmp_path: pathlib.Path) -> None:
    """Closing the client closes its download session but not the caller's connector."""
    async with VideoHost(serve_bytes(b"abc")) as host, aiohttp.ClientSession() as session:
        task = finished_task(source=(host.url("v.mp4"), 3))
        async with SoraClient(KEY, session=session) as client:
            assert await client.download_bytes(task) == b"abc"
        async with session.get(host.url("again.mp4")) as answer:
            assert await answer.read() == b"abc"


@pytest.mark.parametrize("fetch", list(FETCHES))
async def test_own_session_reads_http_proxy_from_the_environment(
    proxy: ForwardProxy, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, fetch: str
) -> None:
    """Without a borrowed session, HTTP_PROXY is honoured for the video host, loopback included."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with VideoHost(serve_bytes(b"through the proxy")) as host:
        task = finished_task(source=(host.url("v.mp4"), 17))
        async with SoraClient(KEY, base_url="https://api.cometapi.com") as client:
            assert await FETCHES[fetch](client, task, tmp_path) == b"through the proxy"
    assert [path for path, _ in proxy.seen] == ["/v.mp4"]
    assert host.headers[0].get("Via") == "1.1 test-proxy"
    assert "Authorization" not in proxy.seen[0][1]


async def test_own_session_honours_no_proxy(
    proxy: ForwardProxy, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A video host listed in NO_PROXY is reached directly."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    async with (
        VideoHost(serve_bytes(b"direct")) as host,
        SoraClient(KEY, base_url="https://api.cometapi.com") as client,
    ):
        assert await client.download_bytes(finished_task(source=(host.url("v.mp4"), 6))) == b"direct"
    assert proxy.seen == []
    assert "Via" not in host.headers[0]


async def test_a_caller_session_without_trust_env_ignores_the_environment(
    proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's trust_env=False is kept: HTTP_PROXY does not apply to its downloads."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with (
        VideoHost(serve_bytes(b"direct")) as host,
        aiohttp.ClientSession(trust_env=False) as session,
        SoraClient(KEY, session=session) as client,
    ):
        assert await client.download_bytes(finished_task(source=(host.url("v.mp4"), 6))) == b"direct"
    assert proxy.seen == []


@pytest.mark.parametrize("bypass", [False, True], ids=["HTTP_PROXY", "NO_PROXY"])
async def test_api_requests_of_our_own_session_follow_the_proxy_environment(
    proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, bypass: bool
) -> None:
    """The API session we create reads HTTP(S)_PROXY and NO_PROXY too (as urllib does), not ~/.netrc."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        if bypass:
            monkeypatch.setenv(name, "127.0.0.1")
        else:
            monkeypatch.delenv(name, raising=False)
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url) as client:
        task_id = server.add_task()
        assert (await client.get_task(task_id)).task_id == task_id
        received = [request.headers for request in server.recorded if task_id in request.path]
    assert len(received) == 1
    if bypass:
        assert proxy.seen == []
        assert "Via" not in received[0]
    else:
        assert [path for path, _ in proxy.seen] == [f"/sora/v1/videos/{task_id}"]
        assert received[0].get("Via") == "1.1 test-proxy"


async def test_a_netrc_entry_for_the_api_host_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """aiohttp's trust_env would add ~/.netrc's login and refuse our own Authorization header."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret-from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    async with FakeSoraServer() as server, SoraClient(KEY, base_url=server.url) as client:
        task_id = server.add_task()
        assert (await client.get_task(task_id)).task_id == task_id
        (request,) = [r for r in server.recorded if task_id in r.path]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
