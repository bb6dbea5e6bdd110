"""Redis memory follows the backlog: through the whole pipeline, once every exchange is compared
both event streams are empty (the subscriber's and the comparer's drains delete what every
consumer group has processed)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline


def app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["n"])})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    return application


async def test_both_streams_are_drained_once_every_exchange_is_compared(http_server,
                                                                        settings_factory):
    v1 = await http_server(app())
    v2 = await http_server(app())
    n = 200
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem, client.get(f"{p.url}/items/{i}") as r:
                assert r.status == 200

        await asyncio.gather(*(one(i) for i in range(n)))

        async def compared() -> bool:
            outcomes = await p.store.outcomes()
            return outcomes.get("match", 0) == n

        await wait_for(compared, 120, f"{n} exchanges compared")

        async def drained() -> bool:
            return await p.redis.xlen(p.keys.v1) == 0 and await p.redis.xlen(p.keys.v2) == 0

        await wait_for(drained, 60, "shadow:v1 and shadow:v2 drained to 0 entries")
        summary = await p.summary()
        assert summary["trimmed_unread"] == {"v1": 0, "v2": 0}
        assert summary["streams"]["v1"]["length"] == 0


async def test_the_subscriber_alone_never_drains_the_proxy_stream(http_server, settings_factory):
    """Before the comparer ever started (its group does not exist yet), the subscriber's drain
    keeps the proxy's events, though the replayers processed them all; the comparer then
    reads them from the start, and they go."""
    v1 = await http_server(app())
    async with Pipeline(settings_factory(v1=v1, v2=v1)) as p, aiohttp.ClientSession() as client:
        await p.comparer.stop()
        for stream in (p.keys.v1, p.keys.v2):  # as if the comparer had never started
            await p.redis.xgroup_destroy(stream, "comparers")
        for i in range(5):
            async with client.get(f"{p.url}/items/{i}") as r:
                assert r.status == 200

        async def replayed() -> bool:
            pending = await p.redis.xpending(p.keys.v1, "replayers")
            return await p.redis.xlen(p.keys.v1) == 10 and \
                await p.redis.xlen(p.keys.v2) == 5 and pending["pending"] == 0

        await wait_for(replayed, 60, "10 events, all processed by the replayers, 5 candidates")
        await p.subscriber.drain.run_once()  # at least one full pass after the replays
        assert await p.redis.xlen(p.keys.v1) == 10 and await p.redis.xlen(p.keys.v2) == 5
        await p.comparer.start()

        async def drained() -> bool:
            return await p.redis.xlen(p.keys.v1) == 0 and await p.redis.xlen(p.keys.v2) == 0

        await wait_for(drained, 60, "both streams drained once the comparer read them")
        assert await p.store.count() == 5
