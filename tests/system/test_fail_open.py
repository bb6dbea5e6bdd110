"""Redis down or paused never hurts a client: answers stay V1's, events are dropped and counted."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
from aiohttp import web

from proxy import Proxy, Publisher
from shadow.bus import connect
from shadow.cli.embedded_redis import EmbeddedRedis
from shadow.model import Answer, ResponseEvent
from tests.conftest import wait_for


def v1_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "n": request.query.get("n")})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    return app


async def _fetch_all(client: aiohttp.ClientSession, base: str, v1: str, n: int) -> None:
    async def one(i: int) -> None:
        async with client.get(f"{base}/x?n={i}") as r:
            got = (r.status, await r.read())
        async with client.get(f"{v1}/x?n={i}") as r:
            assert got == (r.status, await r.read())

    await asyncio.gather(*(one(i) for i in range(n)))


async def test_redis_stopped_mid_traffic_then_back(http_server, settings_factory, keys, tmp_path):
    v1 = await http_server(v1_app())
    server = EmbeddedRedis(tmp_path / "own-redis", tcp_port=0, appendonly=False).start()
    # Redis stopped refuses connections at once: a generous timeout costs nothing, and a
    # short one could drop events on a busy machine while Redis is up
    settings = settings_factory(v1=v1, redis=server.url, redis_timeout_s=10.0)
    redis = connect(server.url, 10.0)
    publisher = Publisher(redis, keys, max_queue=1000)
    try:
        async with Proxy(settings, publisher) as proxy, aiohttp.ClientSession() as client:
            await publisher.start()
            base = f"http://127.0.0.1:{proxy.port}"
            await _fetch_all(client, base, v1, 20)
            await wait_for(lambda: (publisher.published == 40), 60, "first events published")

            server.stop()
            await _fetch_all(client, base, v1, 200)  # every client still gets V1's answer
            await wait_for(lambda: (publisher.dropped > 0), 60, "dropped events counted")

            server.start()  # same port: publishing must resume by itself
            check = connect(server.url, 10.0)
            try:
                async def resumed() -> bool:
                    await _fetch_all(client, base, v1, 5)
                    return int(await check.xlen(keys.v1)) > 0

                await wait_for(resumed, 120, "publishing to resume")
                dropped = publisher.dropped

                async def reported() -> bool:
                    await _fetch_all(client, base, v1, 1)
                    return int(await check.hget(keys.stats, "dropped_events") or 0) == dropped

                await wait_for(reported, 120, "the dropped count to reach Redis")
            finally:
                await check.aclose()
    finally:
        await publisher.stop(flush_timeout_s=0.5)
        await redis.aclose()
        server.stop()


async def test_paused_redis_never_delays_clients(http_server, settings_factory, keys, tmp_path):
    """With Redis frozen (SIGSTOP) and a Redis timeout of an hour, a client path that waited
    on Redis would hang until Redis came back; every request completes while it is frozen
    (the client's own timeout is only a guard against a hung test)."""
    v1 = await http_server(v1_app())
    server = EmbeddedRedis(tmp_path / "paused-redis", tcp_port=0, appendonly=False).start()
    settings = settings_factory(v1=v1, redis=server.url, redis_timeout_s=3600.0)
    redis = connect(server.url, 3600.0)
    publisher = Publisher(redis, keys, max_queue=50)
    assert server.pid is not None
    try:
        async with Proxy(settings, publisher) as proxy:
            await publisher.start()
            os.kill(server.pid, signal.SIGSTOP)
            try:
                timeout = aiohttp.ClientTimeout(total=300)
                async with aiohttp.ClientSession(timeout=timeout) as client:
                    await _fetch_all(client, f"http://127.0.0.1:{proxy.port}", v1, 300)
                assert publisher.dropped > 0  # the queue (50) filled up: dropped, not waited on
            finally:
                os.kill(server.pid, signal.SIGCONT)
    finally:
        await publisher.stop(flush_timeout_s=0.5)
        await redis.aclose()
        server.stop()


async def test_an_event_that_cannot_be_encoded_is_dropped_not_raised(redis, keys):
    """Events are encoded as they are offered, on the client's path: a failure there must
    cost the event, counted, and never an exception in the request handler."""
    publisher = Publisher(redis, keys)
    odd = ResponseEvent("x", 1.0, Answer(200, [("X-Odd", object())], b"", 0))  # type: ignore[list-item]
    fine = ResponseEvent("y", 1.0, Answer(200, [("A", "b")], b"{}", 2))
    assert publisher.offer(odd) is False
    assert publisher.offer(fine) is True
    assert (publisher.dropped, publisher.queued) == (1, 1)


async def test_the_queue_is_bounded_in_bytes_too(redis, keys):
    """With big captured bodies the byte bound comes first: memory stays bounded even when
    every event carries the whole capture cap."""
    publisher = Publisher(redis, keys, max_queue=1000, max_queue_bytes=10_000)
    big = [ResponseEvent(f"e{i}", 1.0, Answer(200, [], b"x" * 4000, 4000)) for i in range(4)]
    assert [publisher.offer(e) for e in big[:3]] == [True, True, False]  # ~5.4 KB each
    assert (publisher.queued, publisher.dropped) == (2, 1)
    await publisher.start()
    try:
        await wait_for(lambda: (publisher.queued == 0), 60, "the queue drained")
        assert publisher.offer(big[3]) is True  # room again once published
        await wait_for(lambda: (publisher.published == 3), 60, "all published")
    finally:
        await publisher.stop()
