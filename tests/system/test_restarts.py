"""A comparer or a subscriber killed (SIGKILL) in the middle of traffic and restarted loses
nothing and counts nothing twice: its unacknowledged entries are taken over by the next one.

Nothing here may hinge on speed (the suite runs on loaded machines): V2 timeouts are
generous (a 0.4 s V2 timeout once opened the breaker on a busy machine), and only the
takeover delay (--claim-idle-s), the feature itself, is short."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from comparer import Comparer, open_store
from proxy import Proxy, Publisher
from shadow.bus import connect
from subscriber import Subscriber
from tests.conftest import wait_for
from tests.procs import with_key


def app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["n"]), "ok": True})

    a = web.Application()
    a.router.add_get("/items/{n}", item)
    return a


def start_comparer(settings_args: list[str], consumer: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shadow", "comparer", *settings_args, "--consumer", consumer],
        cwd=Path(__file__).parent.parent.parent, stdin=subprocess.DEVNULL)


async def test_comparer_killed_and_restarted_mid_traffic(http_server, settings_factory, keys):
    v1 = await http_server(app())
    v2 = await http_server(app())
    settings = settings_factory(v1=v1, v2=v2)  # the in-process subscriber: default timeouts
    # the comparers take over each other's entries after 1 s (they never call V2: the V2
    # timeouts below only satisfy --claim-idle-s > V2 timeouts)
    args = ["--redis", str(settings.redis), "--store", settings.store, "--api", "127.0.0.1:0",
            "--stream-prefix", keys.prefix, "--claim-idle-s", "1", "--v2-connect-timeout-s", "0.4",
            "--v2-read-timeout-s", "0.4", "--log-level", "warning", "--keep", "all"]
    redis = connect(str(settings.redis), 5.0)
    publisher = Publisher(redis, keys)
    subscriber = Subscriber(settings, redis, keys=keys)
    store = open_store(settings.store)
    first = start_comparer(args, "first")
    second: subprocess.Popen[bytes] | None = None
    total = 1500
    try:
        await publisher.start()
        await subscriber.start()
        async with Proxy(settings, publisher) as proxy, aiohttp.ClientSession() as client:
            base = f"http://127.0.0.1:{proxy.port}"
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with sem, client.get(f"{base}/items/{i}",
                                           headers={"X-Request-Id": f"r{i}"}) as r:
                    assert r.status == 200
                    await r.read()

            await asyncio.gather(*(one(i) for i in range(total // 2)))
            await store.open()
            await wait_for(lambda: _some_stored(store), 120, "the first comparer to store some")
            os.kill(first.pid, signal.SIGKILL)  # a crash: no shutdown, no ack of its batch
            await asyncio.to_thread(first.wait)
            await asyncio.gather(*(one(i) for i in range(total // 2, total)))
            # The crashed comparer had also read a batch it never stored or acknowledged:
            # the next comparer must take those entries over (XAUTOCLAIM), not skip them.
            grabbed = await redis.xreadgroup("comparers", "first", {keys.v1: ">"}, count=200)
            assert grabbed and len(grabbed[0][1]) == 200
            second = start_comparer(args, "second")

            async def all_decided() -> bool:
                outcomes = await store.outcomes()  # type: ignore[attr-defined]
                return outcomes.get("match", 0) == total

            await wait_for(all_decided, 300, f"{total} matched exchanges")
        assert await store.count() == total
        for i in (0, total // 2 - 1, total // 2, total - 1):
            x = await store.get(f"r{i}")
            assert x is not None and x.outcome == "match"

        async def all_acked() -> bool:
            counts = [(await redis.xpending(k, "comparers"))["pending"] for k in (keys.v1, keys.v2)]
            return counts == [0, 0]

        await wait_for(all_acked, 120, "every entry acknowledged")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 60)
        await subscriber.stop()
        await publisher.stop()
        await store.close()
        await redis.aclose()
    assert second is not None and second.returncode == 0  # SIGTERM: a clean stop


async def _some_stored(store: object) -> bool:
    return await store.count() > 0  # type: ignore[attr-defined,no-any-return]


async def test_subscriber_killed_mid_traffic_and_restarted_loses_nothing(http_server,
                                                                         settings_factory, keys):
    """SIGKILL the subscriber after ~3,000 of 10,000 requests; the other ~7,000 pass while it
    is down; a new subscriber (another name) takes over its pending entries and the backlog."""
    v1 = await http_server(app())
    v2 = await http_server(app())  # served by this busy test process: it may answer slowly
    settings = settings_factory(v1=v1, v2=v2)
    # sub-b takes over sub-a's entries once idle for 20 s (it must exceed the V2 timeouts)
    common = ["--redis", str(settings.redis), "--v2", v2, "--stream-prefix", keys.prefix,
              "--claim-idle-s", "20", "--v2-connect-timeout-s", "5", "--v2-read-timeout-s", "10",
              "--log-level", "warning"]

    def start_subscriber(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "shadow", "subscriber", *common,
                                 "--consumer", name], cwd=Path(__file__).parent.parent.parent,
                                stdin=subprocess.DEVNULL, env=with_key())

    redis = connect(str(settings.redis), 5.0)
    publisher = Publisher(redis, keys, max_queue=100_000)
    store = open_store(settings.store)
    await store.open()
    comparer = Comparer(settings, redis, store, keys=keys)
    first = start_subscriber("sub-a")
    second: subprocess.Popen[bytes] | None = None
    total = 10_000
    try:
        await publisher.start()
        await comparer.start()
        async with Proxy(settings, publisher) as proxy, aiohttp.ClientSession() as client:
            base = f"http://127.0.0.1:{proxy.port}"
            sem = asyncio.Semaphore(32)
            sent = 0

            async def one(i: int) -> None:
                nonlocal sent
                async with sem, client.get(f"{base}/items/{i}") as r:
                    assert r.status == 200
                    await r.read()
                sent += 1
                if sent == 3000:
                    os.kill(first.pid, signal.SIGKILL)

            await asyncio.gather(*(one(i) for i in range(total)))
        await asyncio.to_thread(first.wait)
        second = start_subscriber("sub-b")

        async def all_matched() -> bool:
            return (await store.outcomes()).get("match", 0) == total

        await wait_for(all_matched, 600, f"{total} matched exchanges")
        assert await store.count() == total and await store.outcomes() == {"match": total}
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 60)
        await comparer.stop()
        await publisher.stop()
        await store.close()
        await redis.aclose()
