"""Odd answers and bodies are recorded and flagged; nothing crashes, clients get everything."""

from __future__ import annotations

import os

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline

BINARY = bytes(range(256)) * 4
BIG = os.urandom(200_000)


def app() -> web.Application:
    async def lying_json(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>oops</html>", content_type="application/json")

    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="application/json")

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=BINARY, content_type="application/octet-stream")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def upload(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response({"received": len(data)})

    a = web.Application(client_max_size=10 * 1024 * 1024)
    a.router.add_get("/lying-json", lying_json)
    a.router.add_get("/empty", empty)
    a.router.add_get("/binary", binary)
    a.router.add_get("/big", big)
    a.router.add_put("/upload", upload)
    return a


async def test_odd_bodies_are_recorded_and_flagged(http_server, settings_factory) -> None:
    v1 = await http_server(app())
    v2 = await http_server(app())
    settings = settings_factory(v1=v1, v2=v2)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        cases = {
            "lying-json": ("GET", "/lying-json", None),
            "empty": ("GET", "/empty", None),
            "binary": ("GET", "/binary", None),
            "big": ("GET", "/big", None),
            "upload": ("PUT", "/upload", BIG),
        }
        for rid, (method, path, body) in cases.items():
            async with client.request(method, p.url + path, data=body,
                                      headers={"X-Request-Id": rid}) as r:
                got = await r.read()
            async with client.request(method, v1 + path, data=body) as r:
                assert got == await r.read()  # the client got all of it, byte for byte

        async def recorded() -> bool:
            outcomes = await p.store.outcomes()
            return await p.store.count() == len(cases) and outcomes.get("pending", 0) == 0

        await wait_for(recorded, 30, "every odd exchange decided")

        lying = await p.store.get("lying-json")
        assert lying and lying.outcome == "match" and "v1_invalid_json" in lying.flags
        empty = await p.store.get("empty")
        assert empty and "v1_empty_body" in empty.flags
        binary = await p.store.get("binary")
        assert binary and binary.v1 and binary.v1.body == BINARY and "v1_binary_body" in binary.flags
        big = await p.store.get("big")
        assert big and big.v1 and big.v1.body_truncated and "v1_truncated" in big.flags
        assert big.v1.body == BIG[:65536] and big.v1.body_size == len(BIG)
        upload = await p.store.get("upload")
        assert upload and upload.request and upload.request.body_truncated
        assert upload.request.body == BIG[:65536] and upload.request.body_size == len(BIG)
        assert upload.outcome == "skipped" and "request_truncated" in upload.flags
        assert upload.v2 is not None and upload.v2.skipped == "method_not_replayed"

        async with client.get(f"{p.api_url}/api/exchanges/binary") as r:
            shown = await r.json()
        assert shown["v1"]["body"]["encoding"] == "base64"
        async with client.get(f"{p.api_url}/api/exchanges/nope") as r:
            assert r.status == 404 and "nope" in (await r.json())["error"]


async def test_poison_entry_is_dead_lettered_and_the_rest_flows(http_server, settings_factory):
    v1 = await http_server(app())
    settings = settings_factory(v1=v1, v2=v1)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await p.redis.xadd(p.keys.v1, {b"e": b"{not json"})
        await p.redis.xadd(p.keys.v1, {b"e": b'{"type":"request","id":""}'})
        async with client.get(p.url + "/binary", headers={"X-Request-Id": "after"}) as r:
            assert r.status == 200

        async def flowed() -> bool:
            x = await p.store.get("after")
            return x is not None and x.outcome == "match"

        await wait_for(flowed, 30, "the good exchange after the poison")
        dead = await p.redis.xrange(p.keys.dead)
        reasons = [fields[b"reason"].decode() for _, fields in dead]
        assert len(reasons) >= 2 and all("malformed event" in r for r in reasons)


async def test_an_entry_that_keeps_failing_is_dead_lettered_after_the_delivery_cap(
        http_server, settings_factory):
    """A consumer that crashes on the same entry again and again must not block it forever."""
    v1 = await http_server(app())
    settings = settings_factory(v1=v1, v2=v1, claim_idle_s=1.0, v2_connect_timeout_s=0.2,
                                v2_read_timeout_s=0.2, max_deliveries=3)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await p.comparer.stop()  # hold the comparer back while we stage a cursed entry
        cursed = await p.redis.xadd(p.keys.v2, {b"e": b'{"type":"candidate","id":"cursed",'
                                                     b'"ts":1,"status":200}'})
        await p.redis.xreadgroup("comparers", "crashing", {p.keys.v2: ">"}, count=1)
        for _ in range(3):  # three more deliveries, each "crashed" (never acknowledged)
            await p.redis.xclaim(p.keys.v2, "comparers", "crashing", 0, [cursed])
        await p.comparer.start()
        async with client.get(p.url + "/binary", headers={"X-Request-Id": "healthy"}) as r:
            assert r.status == 200

        async def flowed() -> bool:
            x = await p.store.get("healthy")
            return x is not None and x.outcome == "match" and p.comparer.reader.dead_lettered == 1

        await wait_for(flowed, 30, "the healthy exchange and the cursed one dead-lettered")
        dead = await p.redis.xrange(p.keys.dead)
        assert any(f[b"entry"] == cursed and b"delivered" in f[b"reason"] for _, f in dead)
        assert await p.store.get("cursed") is None


async def test_pending_entries_trimmed_before_processing_are_counted(http_server,
                                                                     settings_factory):
    v1 = await http_server(app())
    settings = settings_factory(v1=v1, v2=v1, claim_idle_s=1.0, v2_connect_timeout_s=0.2,
                                v2_read_timeout_s=0.2)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await p.comparer.stop()
        lost = await p.redis.xadd(p.keys.v2, {b"e": b'{"type":"candidate","id":"gone","ts":1}'})
        await p.redis.xreadgroup("comparers", "dead-consumer", {p.keys.v2: ">"}, count=1)
        await p.redis.xdel(p.keys.v2, lost)  # what MAXLEN trimming does to a slow group
        await p.comparer.start()

        async def counted() -> bool:
            async with client.get(f"{p.api_url}/api/summary") as r:
                return (await r.json()).get("trimmed_unprocessed") == {"comparers": 1}

        await wait_for(counted, 30, "the trimmed entry to be counted")
