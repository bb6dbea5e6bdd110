"""Huge bodies stream through the proxy process with bounded memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psutil
from aiohttp import web

from shadow.codec import decode_event
from shadow.model import RequestEvent, ResponseEvent
from tests.conftest import wait_for
from tests.procs import start_proxy_process

SIZE = 1024 * 1024 * 1024  # 1 GiB each way: far above any buffer the proxy may hold
CHUNK = b"\xab" * (256 * 1024)


def v1_app() -> web.Application:
    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: chunked
        await resp.prepare(request)
        for _ in range(SIZE // len(CHUNK)):
            await resp.write(CHUNK)
        await resp.write_eof()
        return resp

    async def upload(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            total += len(chunk)
        return web.json_response({"received": total})

    app = web.Application()
    app.router.add_get("/down", download)
    app.router.add_post("/up", upload)
    return app


async def _body() -> AsyncIterator[bytes]:
    for _ in range(SIZE // len(CHUNK)):
        yield CHUNK


async def test_upload_and_download_far_beyond_memory_caps(http_server, redis_server, redis,
                                                          keys):
    v1 = await http_server(v1_app())
    proc, port = await start_proxy_process(
        "--v1", v1, "--listen", "127.0.0.1:0", "--redis", redis_server.url,
        "--stream-prefix", keys.prefix)
    peak = 0
    try:
        watched = psutil.Process(proc.pid)
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, watched.memory_info().rss)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            async with client.get(f"http://127.0.0.1:{port}/down") as r:
                got = 0
                async for chunk in r.content.iter_chunked(1 << 16):
                    got += len(chunk)
            assert got == SIZE
            async with client.post(f"http://127.0.0.1:{port}/up", data=_body()) as r:
                assert (await r.json())["received"] == SIZE
        done.set()
        await sampler
        # what was captured for comparison: the first capture-cap bytes, flagged truncated
        await wait_for(lambda: _events_at_least(redis, keys.v1, 4), 20, "4 events")
        events = [decode_event(f[b"e"]) for _, f in await redis.xrange(keys.v1)]
    finally:
        proc.terminate()
        await proc.wait()
    assert peak < 150 * 1024 * 1024, f"proxy RSS peaked at {peak / 2**20:.0f} MiB"
    down = next(e for e in events if isinstance(e, ResponseEvent) and e.answer.body_size == SIZE)
    up = next(e for e in events if isinstance(e, RequestEvent) and e.request.url == "/up")
    assert len(down.answer.body) == 65536 and down.answer.body_truncated
    assert up.request.body_size == SIZE and len(up.request.body) == 65536
    assert up.request.body_truncated


async def _events_at_least(redis: Any, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) >= n
