"""The spine, end to end on real parts: proxy -> Redis -> subscriber -> V2 -> comparer -> SQLite."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import aiohttp
import orjson
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import ROOT, start_proxy_process, with_key
from tests.rawhttp import RawServer, exchange


def v1_app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": n, "name": f"item {n}", "tags": ["a", "b"]},
                                 headers={"Cache-Control": "max-age=60"})

    async def create(request: web.Request) -> web.Response:
        return web.json_response({"created": (await request.json())["n"]}, status=201)

    app = web.Application()
    app.router.add_get("/items/{n}", item)
    app.router.add_post("/items", create)
    return app


def v2_app() -> web.Application:
    """Per n % 4: 0 same answer, 1 a renamed field, 2 a 500, 3 a reset connection."""

    async def item(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        body = {"id": n, "name": f"item {n}", "tags": ["a", "b"]}
        if n % 4 == 1:
            body["title"] = body.pop("name")
        if n % 4 == 2:
            return web.json_response({"error": "boom"}, status=500)
        if n % 4 == 3:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        return web.json_response(body, headers={"Cache-Control": "max-age=60"})

    async def create(request: web.Request) -> web.Response:
        raise AssertionError("V2 must never receive a POST without --allow-side-effects")

    app = web.Application()
    app.router.add_get("/items/{n}", item)
    app.router.add_post("/items", create)
    return app


EXPECTED = {0: "match", 1: "mismatch", 2: "mismatch", 3: "v2_error"}


async def test_thousand_requests_become_thousand_exchanges(http_server, settings_factory) -> None:
    v1 = await http_server(v1_app())
    v2 = await http_server(v2_app())
    # a V2 that resets every 4th connection must not trip the circuit breaker here
    settings = settings_factory(v1=v1, v2=v2, breaker_failures=1_000_000)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        sem = asyncio.Semaphore(32)
        seen: dict[str, str] = {}  # request id -> expected outcome

        async def one(i: int) -> None:
            async with sem:
                rid = f"test-{i}"
                if i % 10 == 9:
                    method, path, data, expected = "POST", "/items", orjson.dumps({"n": i}), "skipped"
                else:
                    method, path, data, expected = "GET", f"/items/{i}", None, EXPECTED[i % 4]
                async with client.request(method, p.url + path, data=data,
                                          headers={"X-Request-Id": rid}) as via_proxy:
                    proxied = (via_proxy.status, await via_proxy.read())
                    assert via_proxy.headers["X-Request-Id"] == rid
                async with client.request(method, v1 + path, data=data) as direct:
                    assert proxied == (direct.status, await direct.read())
                seen[rid] = expected

        await asyncio.gather(*(one(i) for i in range(1000)))

        async def settled() -> bool:
            return (await p.store.outcomes()).get("pending", 0) == 0 and await p.store.count() == 1000

        await wait_for(settled, 300, "1000 decided exchanges")
        for rid, expected in seen.items():
            x = await p.store.get(rid)
            assert x is not None and x.outcome == expected, (rid, x and x.outcome)
        summary = await p.summary()
        want = Counter(seen.values())
        assert summary["total"] == 1000
        assert summary["matched"] == want["match"]
        assert summary["mismatched"] == want["mismatch"]
        assert summary["v2_errors"] == want["v2_error"]
        assert summary["skipped"] == want["skipped"]
        assert summary["dropped_events"] == 0
        route = next(r for r in summary["routes"] if r["route"] == "/items/{id}")
        assert {d["path"] for d in route["top_diffs"]} >= {"$.name", "$.title", "status"}


async def test_header_bytes_that_are_not_utf8_reach_v2_and_the_report_exactly(settings_factory,
                                                                             keys):
    """Through a real proxy process, Redis and a real subscriber process (so nothing in this
    test process stands in for them): V2 gets the very bytes V1 got, and the reports API
    shows the exchange (the readable value plus the exact bytes)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Raw: caf\xe9\r\n\r\nok"
    v1, v2 = RawServer(lambda r: answer), RawServer(lambda r: answer)
    settings = settings_factory(v1=await v1.start(), v2=await v2.start())
    common = ["--redis", str(settings.redis), "--stream-prefix", keys.prefix,
              "--log-level", "info"]
    proxy, port = await start_proxy_process("--v1", str(settings.v1), "--listen", "127.0.0.1:0",
                                            *common)
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "subscriber", "--v2", str(settings.v2), *common,
        cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, env=with_key())
    p = Pipeline(settings)  # only its comparer and API run: proxy and subscriber are the above
    try:
        await p.store.open()
        await p.comparer.start()
        await p.api.start()
        head, body = await exchange(port, b"GET /odd HTTP/1.1\r\nHost: x\r\nX-Bin: caf\xe9\r\n\r\n")
        assert body == b"ok" and b"X-Raw: caf\xe9" in head
        await wait_for(lambda: _compared(p), 120, "the exchange compared")
        assert v1.requests[0].header(b"x-bin") == b"caf\xe9"
        assert v2.requests[0].header(b"x-bin") == b"caf\xe9"
        rid = v1.requests[0].header(b"x-request-id")
        assert rid is not None
        async with aiohttp.ClientSession() as s, \
                s.get(f"{p.api_url}/api/exchanges/{rid.decode()}") as r:
            assert r.status == 200
            shown = await r.json()
        assert ["X-Bin", "caf\ufffd", "Y2Fm6Q=="] in shown["request"]["headers"]
        assert shown["outcome"] == "match"
        show = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shadow", "show", rid.decode(), "--api", p.api_url, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(show.communicate(), 120)
        assert show.returncode == 0, err.decode()
        assert "X-Raw: caf\ufffd" in out.decode()
    finally:
        for proc in (proxy, subscriber):
            proc.terminate()
            await proc.wait()
        await p.api.stop()
        await p.comparer.stop()
        await p.store.close()
        await p.redis.aclose()
        await v1.stop()
        await v2.stop()


async def _compared(p: Pipeline) -> bool:
    return (await p.summary())["compared"] == 1
