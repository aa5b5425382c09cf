"""A fake CometAPI Sora server for tests, demos and local development.

`FakeSoraServer` is an `aiohttp.web` application on loopback that speaks the
same envelope as the real gateway. Each task follows a scripted timeline of
(status, progress) states, advanced once per poll or on a compressed
clock, and ends in SUCCESS with a realistic generation payload or in
FAILURE with a reason. Faults can be injected: error statuses with bodies
and `Retry-After`, delays, and malformed bodies. The server counts requests
per task id so tests can check how often a client polled::

    from sora_async import PollPolicy, SoraClient
    from sora_async.testing import FakeSoraServer

    async with FakeSoraServer() as server:
        async with SoraClient("test-key", base_url=server.url) as client:
            task_id = await client.create_video("a red kite")
            done = await client.wait_until_done(task_id, poll=PollPolicy(0.01, 0.05))
        assert server.polls(task_id) == 6

Two surfaces, one store of tasks
--------------------------------

The server speaks both formats of PROTOCOL.md over the same tasks,
timelines, clock, counters and fault injection, so a task created through
either one can be read through both:

- the reverse format (Part 1): `POST /sora/v1/videos` and
  `GET /sora/v1/videos/{task_id}` in the gateway's envelope, with the
  files on a fake video host, `/_fake/cdn/{task_id}/{variant}`, which (like
  the real CDN) needs no key;
- the OpenAI format (Part 2): `POST /v1/videos` (JSON, multipart with an
  `input_reference` file, or url-encoded), `GET /v1/videos/{id}` (the bare
  video object: NOT_START shows as "unknown", SUBMITTED and QUEUED as
  "queued", IN_PROGRESS as "in_progress", SUCCESS as "completed", FAILURE
  as "failed" with `error`), `GET /v1/videos/{id}/content?variant=...`
  (the sample MP4, or the sample JPEG for "thumbnail" and "spritesheet";
  it needs the key like every API route) and
  `POST /v1/videos/{id}/remix` (of a completed task only). Its errors:
  400 `missing_model`, `invalid_request`, `invalid_seconds` and
  `invalid_size` on create; an unknown id is 400 with the envelope
  `task_not_exist` on retrieve and 404 "Task not found" on content; content
  before completion is 400 "Task is not completed yet, current status: ...".

A retrieve is a poll, exactly as a reverse-format query is: it advances a
"poll"-mode timeline and counts under the task id. `requests` counts
`"create"` (creates and remixes, on both surfaces), each task id (queries
and retrieves) and `"content"` (downloads); `recorded` keeps every request
with its headers, the fake video host's included, so a test can check that
no `Authorization` header reached it.

Gateway quirks of the OpenAI surface, each off until a `VideoQuirks` field
switches it on (PROTOCOL.md, Part 2, names the source of each):

- `leak_not_start`: status "NOT_START" instead of "unknown" (quirks: "other
  deployments have leaked NOT_START itself");
- `failure_without_status`: a failed task is the stored upstream error,
  with no `status` (quirks: "the stored body is that error object");
- `content_cut_after` and `content_cuts`: the first downloads stop short of
  their Content-Length (quirks: the 60 s gateway timeout on content);
- `ignore_variant`: every download is the MP4 (quirks: "the gateway ignores
  variant");
- `unavailable_models`: creates of these models answer 503
  `model_not_found` (Errors: "a model with no channel behind it");
- `chinese_429`: every 429 carries the gateway's Chinese "upstream
  saturated" message (quirks: "it rewrites every 429 message");
- `video_url` and `content_redirect`: a completed object links, and content
  redirects, to the fake video host under another host name (the video
  object's optional `video_url`; Part 1: never send the key to another host).

A task stuck `in_progress` for ever (the gateway's own time-out, quirks)
needs no quirk: a timeline of `[("IN_PROGRESS", "50%")]` does it.
"""

from __future__ import annotations

import array
import asyncio
import collections
import functools
import hashlib
import importlib.resources
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiohttp
from aiohttp import web

from sora_async._fake_videos import UploadedReference, VideoQuirks, VideoRoutes, task_dimensions

__all__ = [
    "DEFAULT_TIMELINE",
    "FAILURE_TIMELINE",
    "Chaos",
    "FakeSoraServer",
    "FakeTask",
    "Fault",
    "RecordedRequest",
    "UploadedReference",
    "VideoQuirks",
]

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The largest request body the fake accepts (an `input_reference` image included)."""

State = tuple[str, str]
"""A (status, progress) pair, such as ("IN_PROGRESS", "30%")."""

DEFAULT_TIMELINE: tuple[State, ...] = (
    ("NOT_START", "0%"),
    ("SUBMITTED", "10%"),
    ("QUEUED", "20%"),
    ("IN_PROGRESS", "30%"),
    ("IN_PROGRESS", "60%"),
    ("SUCCESS", "100%"),
)
"""The gateway's coarse steps, then one upstream percentage, then success."""

FAILURE_TIMELINE: tuple[State, ...] = (
    ("SUBMITTED", "10%"),
    ("IN_PROGRESS", "30%"),
    ("FAILURE", "100%"),
)

_TERMINAL = ("SUCCESS", "FAILURE")
_UPSTREAM_STATUS = {
    "NOT_START": "pending",
    "SUBMITTED": "pending",
    "QUEUED": "queued",
    "IN_PROGRESS": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
}
_VIDEO_VARIANTS = ("source", "md", "ld")
_IMAGE_VARIANTS = ("thumbnail", "spritesheet")


@functools.cache
def sample_file(kind: Literal["mp4", "jpg"]) -> bytes:
    """The small real file the fake video host serves: a 1 s H.264 MP4, or a JPEG."""
    return (importlib.resources.files("sora_async") / "_assets" / f"sample.{kind}").read_bytes()


Route = Literal["any", "create", "query", "content", "cdn"]
"""Where an injected fault applies: see `FakeSoraServer.inject`."""


@dataclass(frozen=True)
class Fault:
    """One scripted bad answer.

    Attributes:
        status: The HTTP status to answer with.
        body: A dict or list (sent as JSON), str or bytes (sent as is), or
            None for an empty body.
        headers: Extra response headers, such as {"Retry-After": "2"}.
        delay: Seconds to wait before answering.
        content_type: The Content-Type of a str or bytes body.
        transport: How the answer misbehaves on the wire: "normal"; "reset"
            (close the connection before any header); "reset_mid_body" (send
            headers and half the body, then close); "truncate" (announce a
            Content-Length, send less, close); "stall" (send headers, then
            never the body); "oversized" (stream `size` bytes of a JSON-ish
            body, with a Content-Length unless `chunked`).
        size: Bytes to send with transport="oversized".
        chunked: With transport="oversized", send no Content-Length.
    """

    status: int = 500
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"
    transport: Literal["normal", "reset", "reset_mid_body", "truncate", "stall", "oversized"] = "normal"
    size: int = 0
    chunked: bool = False

    @classmethod
    def reset(cls) -> Fault:
        """The connection is closed before any response header."""
        return cls(transport="reset")

    @classmethod
    def reset_mid_body(cls) -> Fault:
        """Headers and part of the body arrive, then the connection is closed."""
        return cls(200, transport="reset_mid_body")

    @classmethod
    def truncated(cls) -> Fault:
        """The body is shorter than its Content-Length, and the connection ends."""
        return cls(200, transport="truncate")

    @classmethod
    def stalled(cls) -> Fault:
        """Headers arrive, then the body never does."""
        return cls(200, transport="stall")

    @classmethod
    def oversized(cls, size: int = 50 * 1024 * 1024, *, chunked: bool = False) -> Fault:
        """A 200 whose body is `size` bytes (50 MB by default), streamed, never held in memory."""
        return cls(200, transport="oversized", size=size, chunked=chunked)

    @classmethod
    def redirect(cls, location: str, status: int = 301) -> Fault:
        """A redirect to `location`: another path, or another host."""
        return cls(status, "<html>Moved</html>", {"Location": location}, content_type="text/html")

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1") -> Fault:
        """A 429 with the gateway's error body and an optional Retry-After."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(429, _openai_error("rate limit reached, please retry later", "rate_limit"), headers)

    @classmethod
    def server_error(cls, status: int = 502) -> Fault:
        """A 5xx with an HTML body, as a proxy in front of the gateway sends."""
        return cls(status, "<html><body>Bad Gateway</body></html>", content_type="text/html")

    @classmethod
    def malformed(cls) -> Fault:
        """A 200 whose body is not JSON."""
        return cls(200, b'{"code": "success", "data": {', content_type="application/json")


@dataclass(frozen=True)
class Chaos:
    """Random faults on a share of API requests, for soak tests.

    Attributes:
        transient: The share of requests that get a fault a client should
            retry through: 429, 500, 502, 503, 504, 524, or a connection reset
            before or during the body.
        stall: The share of requests whose body never comes.
        seed: Seeds the draws, so a run can be repeated.
    """

    transient: float = 0.2
    stall: float = 0.01
    seed: int = 0


@dataclass
class FakeTask:
    """A task held by the fake server; its state is read from `timeline`.

    Both surfaces show the same task. `request` holds the create's fields: the
    reverse format's JSON object, or the `/v1/videos` fields (form values are
    strings) with `seconds` and `size` defaults filled in; a remix's holds
    the source's model, seconds and size under the remix body.
    `input_reference` is the file a multipart create uploaded, and
    `remixed_from` the source id of a remix.
    """

    task_id: str
    prompt: str
    timeline: tuple[State, ...]
    fail_reason: str
    created_at: float
    submit_time: int
    request: dict[str, Any]
    served: int = 0
    step_seconds: float | None = None
    input_reference: UploadedReference | None = None
    remixed_from: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """What the fake server saw of one request."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class _Injection:
    fault: Fault
    remaining: int
    route: Route
    task_id: str | None


class FakeSoraServer:
    """A fake Sora task API on loopback.

    Args:
        api_key: When set, requests must carry exactly this key; otherwise
            any non-empty bearer token is accepted.
        timeline: The states a new task goes through; the last one should be
            SUCCESS or FAILURE. Defaults to `DEFAULT_TIMELINE`.
        fail_reason: The `fail_reason` of tasks that end in FAILURE.
        advance: "poll" moves a task one state forward per answered query;
            "clock" moves it one state per `step_seconds` since creation;
            "sweep" shows only what the gateway's last refresh sweep saw
            (every `sweep_seconds`, from `sweep_phase`): the first state until
            the first sweep after the create, the second at that sweep (the
            gateway replacing the create's answer with the upstream's), and
            one state further per `step_seconds` after it.
        step_seconds: The length of one state in "clock" and "sweep" modes.
        sweep_seconds: The gateway's refresh period in "sweep" mode.
        sweep_phase: When the sweeps happen; random (from `seed`) if not given.
        create_response: Which of the three known create answers to send:
            "envelope" (`data` is the id), "object" (`id` and `task_id`), or
            "envelope_object" (`data` is an object with `task_id`).
        clock: A monotonic clock, replaceable in tests of "clock" mode.
        seed: Seeds the task ids, so runs are repeatable.
        rate_limit: When set, API requests beyond this many in any one-second
            window are answered 429 with a Retry-After.
        chaos: When set, a random share of API requests get transient faults
            or stall (see `Chaos`); `chaos_faults` counts them by kind.
        host, port: Where to listen; port 0 picks a free one.
        on_request: Called once per request the server answers (API, fake
            video host and `/_fake/` routes alike) with the method, the path
            and query, the HTTP status, and the seconds spent answering it.
            The status is 0 when no answer was sent (the client hung up, or
            a fault dropped the connection). The `fake-server` command uses
            it for its request log.
        video_quirks: The gateway quirks the `/v1/videos` surface shows
            (see `VideoQuirks`); none by default. The `video_quirks`
            attribute can be replaced while the server runs.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        timeline: Sequence[State] = DEFAULT_TIMELINE,
        fail_reason: str = "the prompt was rejected by moderation",
        advance: Literal["poll", "clock", "sweep"] = "poll",
        step_seconds: float = 1.0,
        sweep_seconds: float = 15.0,
        sweep_phase: float | None = None,
        create_response: Literal["envelope", "object", "envelope_object"] = "envelope",
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        rate_limit: float | None = None,
        chaos: Chaos | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[str, str, int, float], object] | None = None,
        video_quirks: VideoQuirks | None = None,
    ) -> None:
        if advance not in ("poll", "clock", "sweep"):
            raise ValueError("advance must be 'poll', 'clock' or 'sweep'")
        if not step_seconds > 0 or not sweep_seconds > 0:
            raise ValueError("step_seconds and sweep_seconds must be > 0")
        self.api_key = api_key
        self.timeline = _check_timeline(timeline)
        self.fail_reason = fail_reason
        self.advance = advance
        self.step_seconds = step_seconds
        self.sweep_seconds = sweep_seconds
        phase = sweep_phase if sweep_phase is not None else random.Random(seed).uniform(0, sweep_seconds)
        self.sweep_phase = phase
        """Sweeps happen at sweep_phase + k * sweep_seconds on the server's clock."""
        self.create_response = create_response
        self.clock = clock
        self.host = host
        self.port = port
        self.tasks: dict[str, FakeTask] = {}
        self.on_request = on_request
        self.requests: collections.Counter[str] = collections.Counter()
        """API requests by key, counted on arrival, whatever the answer (a 429
        of `rate_limit`, a 401, an injected or `chaos` fault, or a real answer):

        - `"create"`: each `POST /sora/v1/videos`, `POST /v1/videos` and
          `POST /v1/videos/{id}/remix`, a refused body included;
        - a task id: each `GET /sora/v1/videos/{task_id}` and
          `GET /v1/videos/{task_id}` of that id, unknown ids included
          (`polls(task_id)` reads this);
        - `"content"`: each `GET /v1/videos/{id}/content`.

        A key never seen reads 0, as in any `Counter`. Requests to the fake
        video host (`/_fake/cdn/...`) and to `/_fake/stats` and `/_fake/tasks`
        are not counted here; `recorded` holds every request.
        """
        self.recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=1000)
        """The last 1,000 requests, headers included."""
        self.rate_limit = rate_limit
        self.chaos = chaos
        self.chaos_faults: collections.Counter[str] = collections.Counter()
        """Faults drawn by `chaos`, by kind ("429", "502", "reset", "stall", ...)."""
        self._chaos_random = random.Random(chaos.seed if chaos is not None else 0)
        self.throttled = 0
        """How many requests were answered 429 by `rate_limit`."""
        self.faults_sent: list[tuple[float, str, Fault]] = []
        """(arrival time, path, fault) of every request answered by an injected fault."""
        self.arrivals: array.array[float] = array.array("d")
        """The arrival time (time.monotonic) of every API request, in order."""
        self.throttle_arrivals: array.array[float] = array.array("d")
        """The arrival time of every request answered 429 by `rate_limit`."""
        self._window: collections.deque[float] = collections.deque()
        self._random = random.Random(seed)
        self._scripts: collections.deque[tuple[tuple[State, ...], str | None]] = collections.deque()
        self._injections: list[_Injection] = []
        self._runner: web.AppRunner | None = None
        self.video_quirks = video_quirks if video_quirks is not None else VideoQuirks()
        """The quirks of the `/v1/videos` surface, read on every request."""
        self._videos = VideoRoutes(self, sample_file)
        self.app = self._make_app()

    # --- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to hand to `SoraClient(base_url=...)`."""
        if self._runner is None:
            raise RuntimeError("the server is not started; use 'async with FakeSoraServer()'")
        host, port = self._runner.addresses[0][:2]
        if ":" in host:  # an IPv6 address goes in brackets (RFC 3986, section 3.2.2)
            host = f"[{host}]"
        return f"http://{host}:{port}"

    async def start(self) -> None:
        """Start listening."""
        # handler_cancellation: a client that hangs up stops its handler (and any
        # injected delay) instead of leaving it to run on.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:  # such as a taken port: leave nothing half set up
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeSoraServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def open_connections(self) -> int:
        """How many client connections are open right now."""
        if self._runner is None or self._runner.server is None:
            return 0
        return len(self._runner.server.connections)

    # --- scripting ---------------------------------------------------------

    def add_task(
        self,
        task_id: str | None = None,
        *,
        timeline: Sequence[State] | None = None,
        fail_reason: str | None = None,
        prompt: str = "a fake video",
    ) -> str:
        """Create a task directly, as if a client had created it; return its id."""
        task_id = task_id or self._new_task_id()
        script = _check_timeline(timeline) if timeline is not None else self.timeline
        self.tasks[task_id] = FakeTask(
            task_id=task_id,
            prompt=prompt,
            timeline=script,
            fail_reason=fail_reason if fail_reason is not None else self.fail_reason,
            created_at=self.clock(),
            submit_time=int(time.time()),
            request={"prompt": prompt},
        )
        return task_id

    def script_next(self, timeline: Sequence[State], *, fail_reason: str | None = None) -> None:
        """Give the next task created through the API this timeline."""
        self._scripts.append((_check_timeline(timeline), fail_reason))

    def inject(
        self,
        fault: Fault,
        *,
        times: int = 1,
        route: Route = "any",
        task_id: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `fault`.

        Args:
            fault: The answer to send instead of the real one.
            times: How many requests get it.
            route: "create" (a create or a remix, on either surface),
                "query" (a query or a retrieve), "content" (the
                `/v1/videos/{id}/content` download), "cdn" (the fake video
                host), or "any" (every API route, content included; not the
                fake video host).
            task_id: Only queries of this task (or its files) match.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        self._injections.append(_Injection(fault, times, route, task_id))

    def polls(self, task_id: str) -> int:
        """How many queries of `task_id` arrived, faulted ones included."""
        return self.requests[task_id]

    def add_tasks(
        self,
        count: int,
        *,
        duration: tuple[float, float] = (5.0, 30.0),
        failure_rate: float = 0.0,
        never_finish: bool = False,
        seed: int | None = None,
    ) -> list[str]:
        """Create `count` tasks cheaply, each with its own random duration.

        In "clock" mode each task walks `DEFAULT_TIMELINE` (or
        `FAILURE_TIMELINE`) evenly over a duration drawn uniformly from
        `duration` seconds of the server's clock. In "poll" mode durations
        do not matter. Draws come from `seed`, so a run can be repeated.

        Args:
            count: How many tasks.
            duration: The (shortest, longest) time a task takes.
            failure_rate: The share of tasks that end in FAILURE, 0 to 1:
                exactly `round(count * failure_rate)` of them, chosen by the draws.
            never_finish: Keep every task QUEUED for ever (for memory tests).
            seed: Seeds the draws; defaults to the server's generator.
        """
        draw = random.Random(seed) if seed is not None else self._random
        low, high = duration
        if not 0 < low <= high:
            raise ValueError("duration must be (shortest, longest) with 0 < shortest <= longest")
        if not 0 <= failure_rate <= 1:
            raise ValueError(f"failure_rate must be from 0 to 1, got {failure_rate}")
        failing = set(draw.sample(range(count), round(count * failure_rate))) if count > 0 else set()
        ids = []
        for n in range(count):
            if never_finish:
                timeline: tuple[State, ...] = (("QUEUED", "20%"),)
            else:
                timeline = FAILURE_TIMELINE if n in failing else DEFAULT_TIMELINE
            task_id = self.add_task(timeline=timeline)
            self.tasks[task_id].step_seconds = draw.uniform(low, high) / max(1, len(timeline) - 1)
            ids.append(task_id)
        return ids

    def max_requests_in_window(self, window: float = 1.0) -> int:
        """The most API requests that arrived within any `window` seconds."""
        best = 0
        start = 0
        times = self.arrivals
        for end in range(len(times)):
            while times[end] - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def requests_per_second(self, *, throttled: bool = False) -> list[int]:
        """API requests per whole second since the first one (only the 429s if `throttled`)."""
        if not self.arrivals:
            return []
        first = self.arrivals[0]
        counts = [0] * (int(self.arrivals[-1] - first) + 1)
        for moment in self.throttle_arrivals if throttled else self.arrivals:
            counts[int(moment - first)] += 1
        return counts

    def stats(self) -> dict[str, Any]:
        """Totals for benchmarks and reports (also served at GET /_fake/stats)."""
        return {
            "requests": len(self.arrivals),
            "creates": self.requests["create"],
            "throttled": self.throttled,
            "max_requests_in_1s": self.max_requests_in_window(1.0),
            "requests_per_second": self.requests_per_second(),
            "throttled_per_second": self.requests_per_second(throttled=True),
            "tasks": len(self.tasks),
        }

    # --- HTTP --------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._report] if self.on_request is not None else [],
            client_max_size=MAX_REQUEST_BYTES,  # a multipart create's image: aiohttp's default is 1 MiB
        )
        app.router.add_post("/sora/v1/videos", self._handle_create)
        app.router.add_get("/sora/v1/videos/{task_id}", self._handle_query)
        self._videos.mount(app.router)
        app.router.add_get("/_fake/cdn/{task_id}/{variant}", self._handle_cdn)
        app.router.add_get("/_fake/stats", self._handle_stats)
        app.router.add_post("/_fake/tasks", self._handle_add_tasks)
        return app

    @web.middleware
    async def _report(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Pass each answered request to `on_request`: method, path, status, seconds."""
        started = time.perf_counter()
        status = 0
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # such as the 404 of an unknown path
            status = exc.status
            raise
        finally:
            if self.on_request is not None:
                self.on_request(request.method, request.path_qs, status, time.perf_counter() - started)

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _handle_add_tasks(self, request: web.Request) -> web.StreamResponse:
        """Create tasks in bulk: {"count", "duration": [lo, hi], "failure_rate", "never_finish", "seed"}."""
        spec = await request.json()
        low, high = spec.get("duration", (5.0, 30.0))
        ids = self.add_tasks(
            int(spec["count"]),
            duration=(float(low), float(high)),
            failure_rate=float(spec.get("failure_rate", 0.0)),
            never_finish=bool(spec.get("never_finish", False)),
            seed=spec.get("seed"),
        )
        return web.json_response({"task_ids": ids})

    def _admit(self) -> web.Response | None:
        """Count an API request; answer 429 if it is over the rate limit."""
        now = time.monotonic()
        self.arrivals.append(now)
        if self.rate_limit is None:
            return None
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.rate_limit:
            self.throttled += 1
            self.throttle_arrivals.append(now)
            retry_after = max(1, math.ceil(window[0] + 1.0 - now))
            return web.json_response(
                _openai_error("rate limit exceeded, please retry later", "rate_limit_error"),
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        window.append(now)
        return None

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refused = await self._gate(request, body, "create", None)
        if refused is not None:
            return refused
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("prompt"), str)
            or not payload["prompt"]
        ):
            return _envelope_error(400, "invalid_request", "prompt is required")
        task_id = self._create_task(payload["prompt"], payload).task_id
        if self.create_response == "object":
            return web.json_response({"id": task_id, "task_id": task_id, "status": "queued"})
        if self.create_response == "envelope_object":
            return web.json_response({"code": "success", "message": "", "data": {"task_id": task_id}})
        return web.json_response({"code": "success", "message": "", "data": task_id})

    def _create_task(self, prompt: str, request: dict[str, Any]) -> FakeTask:
        """A task created through the API: the next scripted timeline, or the server's."""
        timeline, fail_reason = self._scripts.popleft() if self._scripts else (self.timeline, None)
        task = self.tasks[self.add_task(timeline=timeline, fail_reason=fail_reason, prompt=prompt)]
        task.request = request
        return task

    async def _gate(
        self,
        request: web.Request,
        body: bytes,
        route: Route,
        task_id: str | None,
        *,
        count_as: str | None = None,
    ) -> web.StreamResponse | None:
        """What every API request goes through first: counting, the rate limit,
        injected faults and the key check. Returns the answer that stops it, if any.

        The request counts under `count_as`, else its task id, else its route."""
        self._record(request, body)
        self.requests[count_as or (task_id if task_id is not None else route)] += 1
        throttled = self._admit()
        if throttled is not None:
            return throttled
        fault = self._take_fault(route, task_id)
        if fault is not None:
            self.faults_sent.append((self.arrivals[-1], request.path, fault))
            return await _fault_response(fault, request)
        return self._check_auth(request)

    async def _handle_query(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        refused = await self._gate(request, b"", "query", task_id)
        if refused is not None:
            return refused
        task = self.tasks.get(task_id)
        if task is None:
            return _envelope_error(400, "task_not_exist", "task_not_exist")
        status, progress = self._state(task)
        task.served += 1
        return web.json_response(
            {"code": "success", "message": "", "data": self._task_object(task, status, progress)}
        )

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        """The fake video host: a real MP4 for video variants, a JPEG for images."""
        self._record(request, b"")
        variant = request.match_info["variant"].split(".")[0]
        if request.match_info["task_id"] not in self.tasks or variant not in (
            *_VIDEO_VARIANTS,
            *_IMAGE_VARIANTS,
        ):
            return web.Response(status=404, text="not found")
        fault = self._take_fault("cdn", request.match_info["task_id"])
        if fault is not None:
            self.faults_sent.append((time.monotonic(), request.path, fault))
            return await _fault_response(fault, request)
        if variant in _VIDEO_VARIANTS:
            return web.Response(body=sample_file("mp4"), content_type="video/mp4")
        return web.Response(body=sample_file("jpg"), content_type="image/jpeg")

    def _record(self, request: web.Request, body: bytes) -> None:
        self.recorded.append(RecordedRequest(request.method, request.path_qs, dict(request.headers), body))

    def _check_auth(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        if token and (self.api_key is None or token == self.api_key):
            return None
        return web.json_response(
            _openai_error("Invalid token (request id: fake-req-0001)", "comet_api_error"), status=401
        )

    def _take_fault(self, route: Route, task_id: str | None) -> Fault | None:
        scripted = self._take_scripted_fault(route, task_id)
        if scripted is not None or self.chaos is None or route == "cdn":
            return scripted
        draw = self._chaos_random.random()
        if draw < self.chaos.stall:
            self.chaos_faults["stall"] += 1
            return Fault.stalled()
        if draw < self.chaos.stall + self.chaos.transient:
            fault = self._chaos_random.choice(_TRANSIENT_FAULTS)
            self.chaos_faults[fault.transport if fault.transport != "normal" else str(fault.status)] += 1
            return fault
        return None

    def _take_scripted_fault(self, route: Route, task_id: str | None) -> Fault | None:
        for injection in self._injections:
            if injection.route != route and (injection.route != "any" or route == "cdn"):
                continue
            if injection.task_id is not None and injection.task_id != task_id:
                continue
            injection.remaining -= 1
            if injection.remaining == 0:
                self._injections.remove(injection)
            return injection.fault
        return None

    # --- task state --------------------------------------------------------

    def _state(self, task: FakeTask) -> State:
        if self.advance == "poll":
            step = task.served
        else:
            now = self.clock()
            step_seconds = task.step_seconds if task.step_seconds is not None else self.step_seconds
            if self.advance == "sweep":  # what the last refresh sweep saw, like the real gateway
                # The first sweep after the create replaces the create's answer with the
                # upstream's state (the timeline's second); each later one shows the state
                # reached by then, one per step_seconds since that first sweep.
                period, phase = self.sweep_seconds, self.sweep_phase
                last = phase + math.floor((now - phase) / period) * period
                first = phase + math.ceil((task.created_at - phase) / period) * period
                step = 0 if last < first else 1 + int((last - first) / step_seconds)
            else:
                step = max(0, int((now - task.created_at) / step_seconds))
        return task.timeline[min(step, len(task.timeline) - 1)]

    def _new_task_id(self) -> str:
        alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
        return "task_01" + "".join(self._random.choice(alphabet) for _ in range(24))

    def _task_object(self, task: FakeTask, status: str, progress: str) -> dict[str, Any]:
        done = status in _TERMINAL
        step = task.timeline.index((status, progress)) if (status, progress) in task.timeline else 0
        return {
            "task_id": task.task_id,
            "notify_hook": str(task.request.get("notify_hook", "")),
            "action": "sora-video",
            "status": status,
            "fail_reason": task.fail_reason if status == "FAILURE" else "",
            "submit_time": task.submit_time,
            "start_time": task.submit_time + 1 if status in ("IN_PROGRESS", *_TERMINAL) else 0,
            "finish_time": task.submit_time + len(task.timeline) if done else 0,
            "progress": progress,
            "data": self._upstream_object(task, status, len(task.timeline) - 1 - step),
        }

    def _upstream_object(self, task: FakeTask, status: str, steps_left: int) -> dict[str, Any] | None:
        if status == "NOT_START":
            return None
        width, height, n_frames = task_dimensions(task.request)
        upstream: dict[str, Any] = {
            "id": task.task_id,
            "status": _UPSTREAM_STATUS.get(status, "running"),
            "prompt": task.prompt,
            "model": task.request.get("model", "turbo"),
            "operation": task.request.get("operation", "simple_compose"),
            "type": "video_gen",
            "style": "natural",
            "width": width,
            "height": height,
            "n_frames": n_frames,
            "n_variants": 1,
            "progress_pct": None,
            "progress_pos_in_queue": steps_left if status == "QUEUED" else None,
            "estimated_queue_wait_time": None,
            "failure_reason": task.fail_reason if status == "FAILURE" else None,
            "moderation_result": {"code": None, "is_output_rejection": False, "type": "passed"},
            "generations": [],
        }
        if status == "SUCCESS":
            upstream["generations"] = [self._generation(task, width, height, n_frames)]
        return upstream

    def _generation(self, task: FakeTask, width: int, height: int, n_frames: int) -> dict[str, Any]:
        expires = time.strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ", time.gmtime(time.time() + 6 * 86400))
        base = f"{self.url}/_fake/cdn/{task.task_id}"

        def encoding(variant: str, video: bool) -> dict[str, Any]:
            path = f"{base}/{variant}.{'mp4' if video else 'jpg'}?se={expires}&sig=fake"
            if not video:
                return {"path": path, "size": None}
            return {
                "path": path,
                "size": len(sample_file("mp4")),
                "width": width,
                "height": height,
                "duration_secs": n_frames // 30,
                "ssim": 0.99,
            }

        return {
            "id": "gen_" + task.task_id.removeprefix("task_"),
            "task_id": task.task_id,
            "prompt": task.prompt,
            "seed": int.from_bytes(hashlib.sha256(task.task_id.encode()).digest()[:4], "big"),
            "width": width,
            "height": height,
            "n_frames": n_frames,
            "can_download": True,
            "download_status": "ready",
            "url": f"{base}/source.mp4?se={expires}&sig=fake&watermarked=1",
            "encodings": {
                "source": encoding("source", True),
                "md": encoding("md", True),
                "ld": encoding("ld", True),
                "thumbnail": encoding("thumbnail", False),
                "spritesheet": encoding("spritesheet", False),
            },
            "moderation_result": {"code": None, "is_output_rejection": False, "type": "passed"},
        }


def _check_timeline(timeline: Sequence[State]) -> tuple[State, ...]:
    states = tuple((str(status), str(progress)) for status, progress in timeline)
    if not states:
        raise ValueError("a timeline needs at least one state")
    return states


def _openai_error(message: str, error_type: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": ""}}


def _envelope_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "data": None}, status=status)


async def _fault_response(fault: Fault, request: web.Request) -> web.StreamResponse:
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.transport != "normal":
        return await _misbehave(fault, request)
    headers = dict(fault.headers)
    if fault.body is None:
        return web.Response(status=fault.status, headers=headers)
    if isinstance(fault.body, (dict, list)):
        return web.json_response(fault.body, status=fault.status, headers=headers)
    body = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
    headers.setdefault("Content-Type", fault.content_type)
    return web.Response(status=fault.status, body=body, headers=headers)


_PARTIAL_BODY = b'{"code": "success", "message": "", "data": {"task_id": "task_partial", "status": "QUEU'


async def _misbehave(fault: Fault, request: web.Request) -> web.StreamResponse:
    """Answers that break HTTP itself: resets, short bodies, stalls, huge bodies."""
    transport = request.transport
    if fault.transport == "reset":
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # aiohttp then drops the request without answering
    length = {"reset_mid_body": 4096, "truncate": len(_PARTIAL_BODY) * 2, "stall": 4096}.get(fault.transport)
    if fault.transport == "oversized" and not fault.chunked:
        length = fault.size
    response = web.StreamResponse(status=fault.status, headers={"Content-Type": "application/json"})
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    if fault.transport == "stall":
        await asyncio.Event().wait()  # until the client gives up and the handler is cancelled
    if fault.transport == "oversized":
        chunk = b" " * 65536
        sent = 0
        try:
            while sent < fault.size:
                await response.write(chunk[: fault.size - sent])
                sent += len(chunk)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client gave up, as it should
        finally:
            request["oversized_sent"] = sent
        return response
    await response.write(_PARTIAL_BODY)
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError


# The faults Chaos draws from (defined last: they use the helpers above).
_TRANSIENT_FAULTS = (
    Fault.rate_limited(retry_after="0"),
    Fault(500, {"error": {"message": "internal error", "type": "server_error"}}),
    Fault.server_error(502),
    Fault(503, None),
    Fault(504, "<html>Gateway Timeout</html>", content_type="text/html"),
    Fault(524, "<html>A timeout occurred</html>", content_type="text/html"),
    Fault.reset(),
    Fault.reset_mid_body(),
    Fault.truncated(),
)
