"""Sharded streams and the cluster-wide replay rate on the real (embedded) Redis: every event of
an exchange meets in its shard, the shard count is recorded and another one refused until the
streams are drained, and --max-replay-rate-global holds over several subscribers together."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import Proxy, Publisher
from shadow.bus import StreamDrain, connect, ensure_layout
from shadow.codec import decode_event
from shadow.drain import Limits
from shadow.errors import ConfigError
from shadow.keys import COMPARERS, REPLAYERS, SHARDS_FIELD, Keys
from shadow.model import Answer, ResponseEvent
from subscriber import Subscriber
from subscriber.globalrate import GlobalRate
from tests.conftest import wait_for
from tests.pipeline import Pipeline


def app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["n"])})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    return application


async def _entries(redis: Any, stream: str) -> list[tuple[str, str]]:
    """(event type, exchange id) of every entry of `stream`."""
    out = []
    for _, fields in await redis.xrange(stream):
        event = decode_event(fields[b"e"])
        out.append((event.type, event.id))
    return out


async def test_every_event_of_an_exchange_lands_in_its_shard(http_server, settings_factory,
                                                             redis, keys):
    """The proxy's publisher queues each event for its exchange's shard; the subscriber, which
    reads every shard, puts the candidate beside the request. No comparer runs, so nothing is
    drained and every entry can be looked at."""
    v1, v2 = await http_server(app()), await http_server(app())
    settings = settings_factory(v1=v1, v2=v2, stream_shards=3)
    sharded = Keys(keys.prefix, 3)
    publisher = Publisher(redis, sharded)
    subscriber = Subscriber(settings, redis, keys=sharded)
    n = 120
    await publisher.start()
    await subscriber.start()
    try:
        async with Proxy(settings, publisher) as proxy, aiohttp.ClientSession() as client:
            for i in range(n):
                async with client.get(f"http://127.0.0.1:{proxy.port}/items/{i}") as r:
                    assert r.status == 200
            await wait_for(lambda: subscriber.replayed == n, 60, f"{n} replays")
    finally:
        await subscriber.stop()
        await publisher.stop()
    where: dict[str, set[tuple[int, str]]] = defaultdict(set)
    for shard in sharded.all:
        for kind, ident in await _entries(redis, shard.v1) + await _entries(redis, shard.v2):
            where[ident].add((shard.index, kind))
    assert len(where) == n
    for ident, found in where.items():
        assert found == {(sharded.of(ident).index, kind)
                         for kind in ("request", "response", "candidate")}, ident
    per_shard = [sum(1 for found in where.values() if min(found)[0] == k) for k in range(3)]
    assert all(per_shard), per_shard  # every shard got exchanges
    # nothing under the one-shard names
    assert await redis.exists(keys.v1, keys.v2) == 0


async def test_another_shard_count_is_refused_until_the_streams_are_drained(
        redis, keys, caplog):
    three, two = Keys(keys.prefix, 3), Keys(keys.prefix, 2)
    await ensure_layout(redis, three)
    assert await redis.hget(keys.meta, SHARDS_FIELD) == b"3"
    stream = three.shard(1).v1
    entry = await redis.xadd(stream, {"e": b"{}"})
    for group in (REPLAYERS, COMPARERS):
        await redis.xgroup_create(stream, group, id="0")
    await redis.xreadgroup(REPLAYERS, "r", {stream: ">"})  # pending with the replayers
    with pytest.raises(ConfigError) as refused:
        await ensure_layout(redis, two)
    message = str(refused.value)
    assert "written with 3 shards and still hold 1 entries (1 delivered but not acknowledged)" \
        in message and "--stream-shards 3" in message
    # a proxy started with 2 shards drops its events (counted) instead of writing streams
    # that no consumer of this setup reads
    publisher = Publisher(redis, two, linger_s=0)
    await publisher.start()
    try:
        publisher.offer(ResponseEvent(id="x", ts=1.0, answer=Answer(status=200)))
        await wait_for(lambda: publisher.dropped == 1, 30, "the event dropped")
        assert publisher.published == 0
        before = 1 if stream in two.v1_streams else 0  # shards of 2 and 3 may share names
        assert sum([await redis.xlen(s) for s in two.v1_streams]) == before
        # drained: acknowledged by every group, and deleted by the drain
        await redis.xack(stream, REPLAYERS, entry)
        await redis.xreadgroup(COMPARERS, "c", {stream: ">"})
        await redis.xack(stream, COMPARERS, entry)
        await StreamDrain(redis, three, Limits()).run_once()
        assert await redis.xlen(stream) == 0
        # the running proxy never records its own count: it still drops
        publisher.offer(ResponseEvent(id="y", ts=1.0, answer=Answer(status=200)))
        await wait_for(lambda: publisher.dropped == 2, 30, "the second event dropped")
        # a process started with 2 shards now records them
        await ensure_layout(redis, two)
        assert await redis.hget(keys.meta, SHARDS_FIELD) == b"2"
        # and a process still on 3 says so (its drain checks every pass)
        with caplog.at_level(logging.ERROR, logger="shadow.bus"):
            await StreamDrain(redis, three, Limits()).run_once()
        assert "now have 2 shards" in caplog.text and "--stream-shards 2" in caplog.text
        # the proxy on 2 shards publishes again
        publisher.offer(ResponseEvent(id="z", ts=1.0, answer=Answer(status=200)))
        await wait_for(lambda: publisher.published == 1, 30, "the event published")
        assert await redis.xlen(two.of("z").v1) == 1
    finally:
        await publisher.stop()


async def test_one_shard_records_itself_beside_streams_written_before_shards_existed(
        redis, keys):
    """A deployment from before --stream-shards (no record, entries in shadow:v1) goes on with
    the default of one shard; asking for three there is refused while shadow:v1 holds entries."""
    await redis.xadd(keys.v1, {"e": b"{}"})
    with pytest.raises(ConfigError, match="written with 1 shard and still hold 1 entries"):
        await ensure_layout(redis, Keys(keys.prefix, 3))
    await ensure_layout(redis, keys)
    assert await redis.hget(keys.meta, SHARDS_FIELD) == b"1"


async def test_the_global_rate_holds_over_all_subscribers_together(redis_server, keys):
    """Two subscribers' buckets share one key: together they never get more tokens than the
    bucket issues (burst + rate x the time Redis counted), whatever their batches."""
    clients = [connect(redis_server.url, 5.0) for _ in range(2)]
    rate, burst = 50.0, 10.0
    buckets = [GlobalRate(c, keys.rate, rate, burst=burst) for c in clients]
    try:
        start_s, start_us = await clients[0].time()
        granted = [0, 0]

        async def spend(i: int) -> None:
            for _ in range(300):
                if await buckets[i].take():
                    granted[i] += 1
                await asyncio.sleep(0.001)

        await asyncio.gather(spend(0), spend(1))
        end_s, end_us = await clients[0].time()
        elapsed = (end_s - start_s) + (end_us - start_us) / 1e6
        assert sum(granted) <= burst + rate * elapsed + 1e-6
        assert all(granted), granted  # both got some
        assert sum(granted) >= burst  # the burst is there at once
        # batches: far fewer Redis calls than replays
        assert sum(b.asked for b in buckets) < sum(granted)
    finally:
        for c in clients:
            await c.aclose()


async def test_replays_over_the_global_rate_are_skipped_as_rate_limited(http_server,
                                                                         settings_factory):
    """Two subscribers with --max-replay-rate-global 5: together they replay at most the
    bucket's burst plus what it refills; the rest is recorded as skipped (rate_limited)."""
    v1, v2 = await http_server(app()), await http_server(app())
    settings = settings_factory(v1=v1, v2=v2, max_replay_rate_global=5.0)
    n = 60
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        second = Subscriber(settings, p.redis, keys=p.keys)
        await second.start()
        try:
            start_s, _ = await p.redis.time()
            await asyncio.gather(*(client.get(f"{p.url}/items/{i}") for i in range(n)))

            async def decided() -> bool:
                outcomes = await p.store.outcomes()
                return sum(v for k, v in outcomes.items() if k != "pending") == n

            await wait_for(decided, 60, f"{n} exchanges decided")
            end_s, _ = await p.redis.time()
        finally:
            await second.stop()
        outcomes = await p.store.outcomes()
        replayed = p.subscriber.replayed + second.replayed  # candidates, skips included
        assert replayed == n
        matched = outcomes.get("match", 0)
        assert matched <= 5 + 5 * (end_s - start_s + 1)
        assert outcomes.get("skipped", 0) == n - matched >= n - 5 - 5 * (end_s - start_s + 1)
