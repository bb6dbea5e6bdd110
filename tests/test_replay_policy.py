"""The replay policy and the V2 circuit breaker."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from shadow.model import Request
from shadow.settings import load_settings
from subscriber.policy import CircuitBreaker, Policy, TokenBucket, sampled
from tests.conftest import wait_for
from tests.pipeline import Pipeline


def policy(**flags: object) -> Policy:
    return Policy.from_settings(load_settings(flags, env={}))


def test_methods_routes_sampling_and_rewrites() -> None:
    get, post = Request("GET", "/api/a?x=1", []), Request("POST", "/api/a", [])
    assert policy().decision(get, "r") is None
    assert policy().decision(post, "r") == "method_not_replayed"
    assert policy(allow_side_effects=True).decision(post, "r") is None
    p = policy(replay_include="/api/*", replay_exclude="/api/admin/*")
    assert p.decision(get, "r") is None
    assert p.decision(Request("GET", "/api/admin/x", []), "r") == "route_excluded"
    assert p.decision(Request("GET", "/other", []), "r") == "route_excluded"
    ids = [f"id-{i}" for i in range(10_000)]
    share = sum(sampled(i, 25) for i in ids) / len(ids)
    assert 0.23 < share < 0.27 and [sampled(i, 25) for i in ids] == [sampled(i, 25) for i in ids]
    assert policy(sample_percent=0).decision(get, "r") == "not_sampled"
    rw = policy(v2_set_headers="Authorization: Bearer v2; X-Env: shadow",
                v2_remove_headers="Cookie", v2_strip_prefix="/api", v2_add_prefix="/v2")
    assert rw.url("/api/a?x=1") == "/v2/a?x=1" and rw.url("/other") == "/v2/other"
    assert rw.headers([("Cookie", "s=1"), ("Authorization", "Bearer v1"), ("Accept", "*/*")]) == [
        ("Accept", "*/*"), ("Authorization", "Bearer v2"), ("X-Env", "shadow")]


def test_token_bucket_and_breaker_states() -> None:
    bucket = TokenBucket(10, burst=2)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.1) is True and bucket.take(0.1) is False
    b = CircuitBreaker(threshold=3, cooldown_s=30)
    for t in range(2):
        b.record(False, t)
    assert b.state == "closed" and b.allow(2)
    b.record(False, 2)
    assert b.state == "open" and not b.allow(10)
    assert b.allow(32) and b.state == "half_open" and not b.allow(32)  # exactly one probe
    b.record(False, 33)
    assert b.state == "open" and not b.allow(40)
    assert b.allow(63)
    b.record(True, 64)
    assert b.state == "closed" and b.allow(64)


async def test_breaker_opens_on_a_dead_v2_records_skips_and_closes_when_it_returns(
        http_server, settings_factory) -> None:
    state = {"down": True, "calls": 0}

    async def v2_handler(request: web.Request) -> web.Response:
        state["calls"] += 1
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
    settings = settings_factory(v1=v1, v2=v2, breaker_failures=10, breaker_cooldown_s=0.5,
                                replay_concurrency=1)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        for i in range(30):
            async with client.get(f"{p.url}/x/{i}", headers={"X-Request-Id": f"a{i}"}) as r:
                assert r.status == 200

        async def decided(n: int) -> bool:
            o = await p.store.outcomes()
            return sum(o.values()) == n and o.get("pending", 0) == 0

        await wait_for(lambda: decided(30), 30, "30 decided")
        # 10 failed replays (aiohttp retries an idempotent request once on a reset keep-alive
        # connection, so V2 saw up to 20 calls), then the breaker stopped calling the dead V2
        assert 10 <= state["calls"] <= 20
        outcomes = await p.store.outcomes()
        assert outcomes == {"v2_error": 10, "skipped": 20}
        x = await p.store.get("a29")
        assert x is not None and x.v2 is not None and x.v2.skipped == "breaker_open"
        state["down"] = False
        await wait_for(lambda: _after(0.6), 5, "the cool-down")
        for i in range(30, 40):
            async with client.get(f"{p.url}/x/{i}") as r:
                assert r.status == 200
        await wait_for(lambda: decided(40), 30, "40 decided")
        assert (await p.store.outcomes()).get("match") == 10  # probe succeeded: closed again
        assert p.subscriber.breaker.state == "closed"


_start: list[float] = []


async def _after(seconds: float) -> bool:
    import time

    if not _start:
        _start.append(time.monotonic())
    if time.monotonic() - _start[0] >= seconds:
        _start.clear()
        return True
    return False


def test_ordering_key_from_header_or_cookie() -> None:
    from subscriber.policy import ordering_key

    assert ordering_key(Request("GET", "/", [("X-Session", "s1")]), "X-Session") == "h:s1"
    assert ordering_key(Request("GET", "/", [("Cookie", "a=1; sid=xyz")]), "sid") == "c:xyz"
    assert ordering_key(Request("GET", "/", []), "sid") is None


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

            async def decided() -> bool:
                o = await p.store.outcomes()
                return sum(o.values()) == 60 and o.get("pending", 0) == 0

            await wait_for(decided, 60, "60 decided")
            outcomes = await p.store.outcomes()
            assert p.subscriber.peak_inflight <= 4
            assert outcomes["v2_error"] >= 10 and outcomes["skipped"] >= 40
            assert outcomes["v2_error"] + outcomes["skipped"] == 60
            assert p.subscriber.breaker.state == "open"
    finally:
        await fault.stop()
