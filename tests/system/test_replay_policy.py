"""The replay policy and the V2 circuit breaker."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from subscriber.policy import sampled
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.rawhttp import RawRequest, RawServer, read_body, read_head

ROOT = Path(__file__).parent.parent.parent


async def test_while_v2_is_down_replays_wait_in_the_stream_and_are_compared_late(
        http_server, settings_factory) -> None:
    """The breaker opens after 3 failures (recorded as v2_error); then nothing is recorded as
    skipped: the next request is held as the probe (a failed probe waits again), the rest
    stay unread in the stream; when V2 is back the probe succeeds and all are compared."""
    state: dict[str, Any] = {"down": True, "p": None}
    probes: list[str] = []

    async def v2_handler(request: web.Request) -> web.Response:
        if state["p"].subscriber.breaker.state == "half_open":
            probes.append(request.headers["X-Request-Id"])
        if state["down"]:
            assert request.transport is not None
            request.transport.close()  # a reset: V2 failed
        return web.json_response({"ok": True})

    async def v1_handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    v1_app, v2_app = web.Application(), web.Application()
    v1_app.router.add_get("/{tail:.*}", v1_handler)
    v2_app.router.add_get("/{tail:.*}", v2_handler)
    v1, v2 = await http_server(v1_app), await http_server(v2_app)
    # the cool-down is the feature's own delay: small, only the order of events is asserted
    settings = settings_factory(v1=v1, v2=v2, breaker_failures=3, breaker_cooldown_s=0.2,
                                replay_concurrency=1, stale_after_s=0.001)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        state["p"] = p
        for i in range(20):
            async with client.get(f"{p.url}/x/{i}", headers={"X-Request-Id": f"a{i}"}) as r:
                assert r.status == 200
        sub = p.subscriber

        def probe_failed_and_waits_again() -> bool:
            return bool(probes) and sub.breaker.state == "open" and bool(sub.gate.waiting)

        await wait_for(probe_failed_and_waits_again, 60, "a failed probe back in line")
        assert REGISTRY.get_sample_value("shadow_v2_breaker_open") == 1
        held = probes[0]
        await wait_for(lambda: _v1_stored(p, held), 60, "the held request's V1 answer stored")
        await wait_for(lambda: _outcome_count(p, "v2_error", 3), 60, "3 v2_error")
        # the rest wait in the stream: not delivered to the replayers group
        group = next(g for g in await p.redis.xinfo_groups(p.keys.v1) if g["name"] == b"replayers")
        info = await p.redis.xinfo_stream(p.keys.v1)
        assert _id(group["last-delivered-id"]) < _id(info["last-generated-id"])
        assert group["pending"] <= 1  # only the held probe
        state["down"] = False

        async def decided() -> bool:
            o = await p.store.outcomes()
            return sum(o.values()) == 20 and o.get("pending", 0) == 0

        await wait_for(decided, 60, "20 decided")
        assert await p.store.outcomes() == {"v2_error": 3, "match": 17}  # nothing skipped
        assert sub.breaker.state == "closed"
        assert REGISTRY.get_sample_value("shadow_v2_breaker_open") == 0
        x = await p.store.get(held)
        assert x is not None and x.outcome == "match" and "stale" in x.flags


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq)


async def _v1_stored(p: Pipeline, request_id: str) -> bool:
    x = await p.store.get(request_id)
    return x is not None and x.v1 is not None


async def _outcome_count(p: Pipeline, outcome: str, n: int) -> bool:
    return (await p.store.outcomes()).get(outcome, 0) == n


async def test_a_safe_request_v2_drops_unanswered_is_retried_once(settings_factory) -> None:
    """V2 resets the first connection for each path and answers the second: GET and OPTIONS
    match after one retry; POST and PUT (not safe: V2 may have acted on them) are sent once
    and are v2_errors (aiohttp's own silent retry of idempotent PUT is off too)."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n"
              b"Connection: close\r\n\r\n{\"ok\": true}")
    calls: Counter[bytes] = Counter()

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader)
            await read_body(reader, head)
            path = RawRequest(head, b"").request_line.split()[1]
            calls[path] += 1
            if calls[path] == 1:
                writer.transport.abort()  # connection reset before any byte of an answer
                return
            writer.write(answer)  # Connection: close, so never a reused connection
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    v1 = RawServer(lambda r: answer)
    server = await asyncio.start_server(flaky, "127.0.0.1", 0)
    v2 = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = settings_factory(v1=await v1.start(), v2=v2, allow_side_effects=True,
                                breaker_failures=1000)
    try:
        async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
            for i in range(6):
                method = ("GET", "GET", "GET", "OPTIONS", "POST", "PUT")[i]
                async with client.request(method, f"{p.url}/r/{i}", data=b"{}" if i >= 4 else None,
                                          headers={"X-Request-Id": f"t{i}"}) as r:
                    assert r.status == 200

            async def decided() -> bool:
                o = await p.store.outcomes()
                return sum(o.values()) == 6 and o.get("pending", 0) == 0

            await wait_for(decided, 60, "6 decided")
            assert await p.store.outcomes() == {"match": 4, "v2_error": 2}
            for i in (4, 5):
                x = await p.store.get(f"t{i}")
                assert x is not None and x.outcome == "v2_error"
            assert calls == {**{f"/r/{i}".encode(): 2 for i in range(4)},
                             b"/r/4": 1, b"/r/5": 1}
    finally:
        server.close()
        await server.wait_closed()
        await v1.stop()


async def test_requests_sharing_a_session_reach_v2_in_arrival_order(http_server,
                                                                    settings_factory) -> None:
    import asyncio
    import random

    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def step(request: web.Request) -> web.Response:  # V2: answers out of order if it can
        session, n = request.headers["X-Session"], int(request.match_info["n"])
        await asyncio.sleep(random.uniform(0, 0.02))
        seen[session].append(n)
        return web.json_response({"n": n})

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"n": int(request.match_info["n"])})

    v1_app, v2_app = web.Application(), web.Application()
    v1_app.router.add_get("/step/{n}", plain)
    v2_app.router.add_get("/step/{n}", step)
    v1, v2 = await http_server(v1_app), await http_server(v2_app)
    settings = settings_factory(v1=v1, v2=v2, ordered_by="X-Session", replay_concurrency=32)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        for n in range(60):
            session = "a" if n % 2 else "b"
            async with client.get(f"{p.url}/step/{n}", headers={"X-Session": session}) as r:
                assert r.status == 200

        async def all_seen() -> bool:
            return len(seen["a"]) + len(seen["b"]) >= 60

        await wait_for(all_seen, 30, "60 replays")
    assert seen["a"] == sorted(seen["a"]) and seen["b"] == sorted(seen["b"])


async def test_blackholed_v2_keeps_in_flight_replays_bounded_and_opens_the_breaker(
        http_server, settings_factory) -> None:
    """A V2 that never answers: replays time out (the timeouts are the feature here), the
    breaker opens, and from then on requests wait instead of being skipped."""
    from tests.faultproxy import FaultProxy

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    real = web.Application()
    real.router.add_get("/{tail:.*}", ok)
    v1 = await http_server(real)
    fault = FaultProxy(int(v1.rsplit(":", 1)[1]))
    v2 = f"http://127.0.0.1:{await fault.start()}"
    fault.mode = "blackhole"
    settings = settings_factory(v1=v1, v2=v2, replay_concurrency=4, v2_connect_timeout_s=0.3,
                                v2_read_timeout_s=0.3, breaker_failures=10,
                                breaker_cooldown_s=60)
    try:
        async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
            for i in range(60):
                async with client.get(f"{p.url}/x/{i}") as r:
                    assert r.status == 200  # clients never notice

            sub = p.subscriber

            async def settled() -> bool:  # open; every request in hand waits; all recorded
                return sub.breaker.state == "open" and len(sub._inflight) == len(sub.gate.waiting) \
                    and await _outcome_count(p, "v2_error", sub.replayed) \
                    and await p.store.count() == 60

            await wait_for(settled, 60, "the breaker open and the replays waiting")
            outcomes = await p.store.outcomes()
            assert sub.peak_inflight <= 4
            # failures while it was closed are V2's errors (at most 3 more were in flight);
            # after that nothing is skipped: the rest wait, in hand or in the stream
            assert 10 <= outcomes["v2_error"] <= 13 and "skipped" not in outcomes
            assert outcomes["pending"] == 60 - outcomes["v2_error"]
    finally:
        await fault.stop()


async def test_sampling_follows_the_exchange_id_not_the_request_id_a_client_chose(
        http_server, settings_factory) -> None:
    """Every request carries the same client-chosen X-Request-Id, one that sampling at 50%
    would refuse: half of them are still replayed, and `shadow replay` re-sends exactly
    the ones the subscriber replayed."""
    chosen = next(f"chosen-{i}" for i in itertools.count() if not sampled(f"chosen-{i}", 50))

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    v1 = await http_server(app)
    settings = settings_factory(v1=v1, v2=v1, sample_percent=50)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        for i in range(40):
            async with client.get(f"{p.url}/s/{i}", headers={"X-Request-Id": chosen}) as r:
                assert r.status == 200

        async def decided() -> bool:
            o = await p.store.outcomes()
            return sum(o.values()) == 40 and o.get("pending", 0) == 0

        await wait_for(decided, 60, "40 decided")
        outcomes = await p.store.outcomes()
    assert set(outcomes) == {"match", "skipped"}, outcomes  # chance of failing: 2**-39
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "shadow", "replay", "--store", settings.store, "--v2", v1,
        "--only", "all", "--sample-percent", "50", "--json"], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replayed"] == outcomes["match"]


async def test_v1_secondary_gets_only_safe_methods_and_the_warning_names_v2(
        http_server, settings_factory, caplog: pytest.LogCaptureFixture) -> None:
    got: dict[str, list[str]] = {"v2": [], "v1b": []}

    def app(name: str | None) -> web.Application:
        async def any_method(request: web.Request) -> web.Response:
            if name:
                got[name].append(request.method)
            return web.json_response({"ok": True})

        a = web.Application()
        a.router.add_route("*", "/{tail:.*}", any_method)
        return a

    v1, v2, v1b = (await http_server(app(None)), await http_server(app("v2")),
                   await http_server(app("v1b")))
    settings = settings_factory(v1=v1, v2=v2, v1_secondary=v1b, allow_side_effects=True)
    with caplog.at_level(logging.WARNING, logger="shadow.subscriber"):
        pipeline = Pipeline(settings)
    warning = next(r.getMessage() for r in caplog.records if "--allow-side-effects" in r.message)
    assert f"V2 ({v2})" in warning and v1b not in warning
    assert "V1' gets only GET, HEAD and OPTIONS" in warning
    async with pipeline as p, aiohttp.ClientSession() as client:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            async with client.request(method, f"{p.url}/w", data=b"{}") as r:
                assert r.status == 200

        async def decided() -> bool:
            o = await p.store.outcomes()
            return sum(o.values()) == 6 and o.get("pending", 0) == 0

        await wait_for(decided, 60, "6 decided")
    assert sorted(got["v2"]) == ["DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT"]
    assert sorted(got["v1b"]) == ["GET", "OPTIONS"]


async def test_an_entry_waiting_for_v2_is_kept_from_looking_abandoned(redis, settings_factory,
                                                                     keys) -> None:
    """While a request waits at the breaker gate its entry is touched: idle time reset (no
    other subscriber takes it over as abandoned), delivery count unchanged (it is never
    dead-lettered for waiting)."""
    from shadow.keys import EVENT_FIELD
    from subscriber import Subscriber

    sub = Subscriber(settings_factory(v2="http://127.0.0.1:9"), redis, keys=keys)
    await sub.reader.ensure_groups()
    await redis.xadd(keys.v1, {EVENT_FIELD: b"{}"})
    [entry] = await sub.reader.read()
    consumer = sub.reader.consumer
    await redis.xclaim(keys.v1, "replayers", consumer, 0, [entry.id], idle=100_000, justid=True)
    for _ in range(3):
        await sub._touch(entry)
    [row] = await redis.xpending_range(keys.v1, "replayers", "-", "+", 10)
    assert row["times_delivered"] == 1 and row["consumer"] == consumer.encode()
    assert row["time_since_delivered"] < 100_000
