"""A burst that outran the pipeline waits in Redis, and the pipeline catches up by itself
with nothing lost and nothing counted twice (#16)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline

BURST = 1500


def app(version: int) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": n, "odd": n % 2 == 1 and version == 2})

    a = web.Application()
    a.router.add_get("/items/{n}", item)
    return a


async def test_a_burst_that_outran_the_pipeline_is_compared_once_each_afterwards(
        http_server, settings_factory) -> None:
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        # the pipeline is saturated: nothing replays or compares while the burst arrives
        await p.subscriber.stop()
        await p.comparer.stop()
        sem = asyncio.Semaphore(32)

        async def one(n: int) -> None:
            async with sem, client.get(f"{p.url}/items/{n}") as r:
                assert r.status == 200

        await asyncio.gather(*(one(n) for n in range(BURST)))

        async def all_published() -> bool:
            return p.publisher.published == 2 * BURST

        await wait_for(all_published, 120, "the burst's events in Redis")
        assert p.publisher.dropped == 0
        assert await p.redis.xlen(p.keys.v1) == 2 * BURST  # the backlog waits in the stream
        await p.subscriber.start()
        await p.comparer.start()

        async def caught_up() -> bool:
            outcomes = await p.store.outcomes()
            return sum(outcomes.values()) == BURST and not outcomes.get("pending")

        await wait_for(caught_up, 300, f"{BURST} exchanges decided")
        summary = await p.summary()
        assert summary["total"] == BURST
        assert (summary["matched"], summary["mismatched"]) == (BURST // 2, BURST // 2)
        assert p.subscriber.replayed == BURST  # each request replayed once

        async def drained() -> bool:
            return await p.redis.xlen(p.keys.v1) == 0 and await p.redis.xlen(p.keys.v2) == 0

        await wait_for(drained, 60, "the streams drained once everything was compared")
