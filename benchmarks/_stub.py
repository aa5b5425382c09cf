"""A minimal aiohttp.web stub serving fixed bodies, for CPU-per-poll measurements.

`GET /sora/v1/videos/{id}` answers the recorded 18 KB task body;
`GET /v1/videos/{id}` answers an OpenAI-shaped video object, so the openai
SDK can be measured against the same server. Prints its URL, serves until
stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

from aiohttp import web

SAMPLE = pathlib.Path(__file__).parent.parent / "tests" / "samples" / "sora_task_success.json"

OPENAI_VIDEO = json.dumps(
    {
        "id": "video_68d7512d07848190b3e45da0ecbebcde004da08e1e0678d5",
        "object": "video",
        "model": "sora-2",
        "status": "in_progress",
        "progress": 33,
        "created_at": 1758941485,
        "completed_at": None,
        "expires_at": None,
        "prompt": "A paper boat drifting across a rainy city street",
        "seconds": "8",
        "size": "1280x720",
        "remixed_from_video_id": None,
        "error": None,
    }
).encode()


async def serve() -> None:
    body = SAMPLE.read_bytes()

    async def task(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def openai_video(request: web.Request) -> web.Response:
        return web.Response(body=OPENAI_VIDEO, content_type="application/json")

    app = web.Application()
    app.router.add_get("/sora/v1/videos/{task_id}", task)
    app.router.add_get("/v1/videos/{video_id}", openai_video)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"http://{host}:{port}", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
