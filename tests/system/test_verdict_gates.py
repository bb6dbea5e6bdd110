"""The verdict's gates on real traffic (#13): real V1 and V2 (aiohttp on port 0) behind the real
proxy, Redis, subscriber and comparer. A V2 that drops connections, one that differs only past
the capture cap, one that is slower: each holds its route back, and says why."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import shadow

SIZE = 100_000  # past the 64 KiB capture cap
BODY = b"abcdefghij" * (SIZE // 10)
LATE = BODY[:80_000] + b"X" + BODY[80_001:]  # differs only at byte 80,001
V2_DELAY_S = 1.0  # V2's own time per answer: V1 answers at once


def app(version: int) -> web.Application:
    """/items/{n}: JSON (V2 drops every 10th connection); /same/{n} and /late/{n}: 100 KB of
    text (V2's /late differs after byte 80,000); /slow/{n}: JSON, V2 after V2_DELAY_S."""

    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if version == 2 and n % 10 == 0:
            assert request.transport is not None
            request.transport.close()  # the connection dropped, no answer
        return web.json_response({"id": n})

    async def same(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    async def late(request: web.Request) -> web.Response:
        return web.Response(body=LATE if version == 2 else BODY, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        if version == 2:
            await asyncio.sleep(V2_DELAY_S)
        return web.json_response({"id": int(request.match_info["n"])})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    application.router.add_get("/same/{n}", same)
    application.router.add_get("/late/{n}", late)
    application.router.add_get("/slow/{n}", slow)
    return application


async def send(p: Pipeline, client: aiohttp.ClientSession, paths: list[str]) -> None:
    """Each path through the proxy (8 at a time), then wait until every one is decided."""
    sem = asyncio.Semaphore(8)

    async def one(path: str) -> None:
        async with sem, client.get(p.url + path) as r:
            assert r.status == 200, path
            await r.read()

    await asyncio.gather(*(one(path) for path in paths))

    async def settled() -> bool:
        outcomes = await p.store.outcomes()
        return sum(outcomes.values()) == len(paths) and not outcomes.get("pending")

    await wait_for(settled, 90, f"{len(paths)} exchanges decided")


async def verdict(p: Pipeline, client: aiohttp.ClientSession, **query: str) -> dict[str, Any]:
    async with client.get(p.api_url + "/api/verdict", params=query) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


def route_of(v: dict[str, Any], route: str) -> dict[str, Any]:
    found = [r for r in v["routes"] if r["route"] == route]
    assert len(found) == 1, (route, v)
    return found[0]  # type: ignore[no-any-return]


async def test_a_v2_that_drops_a_tenth_of_its_connections_is_not_ready(http_server,
                                                                         settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    # no breaker: every request reaches V2 (ten drops in a row never happen here anyway)
    settings = settings_factory(v1=v1, v2=v2, breaker_failures=1_000_000)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await send(p, client, [f"/items/{n}" for n in range(200)])
        assert await p.store.outcomes() == {"match": 180, "v2_error": 20}
        # 180 of 180 compared answers match: without the errors counted, 90% was "ready"
        v = await verdict(p, client, min_match="90", min_samples="100")
        items = route_of(v, "/items/{id}")
        assert v["ready"] is False and items["ready"] is False, items
        assert items["samples"] == 200 and items["v2_errors"] == 20
        kinds = items["v2_error_kinds"]
        assert sum(kinds.values()) == 20 and set(kinds) <= {"connection closed",
                                                            "connection reset"}, kinds
        assert "match rate 180/200" in items["reason"]
        assert "20 V2 errors (connection " in items["reason"]
        assert "V2 error rate 10% (20 errors to 180 clean samples) > 0.1%" in items["reason"]

        # the report a lead pastes into the ticket
        done = await asyncio.to_thread(shadow, "verdict", "--api", p.api_url, "--markdown",
                                       "--min-match", "90")
        assert done.returncode == 1, done.stderr
        text = done.stdout
        assert text.startswith("## shadow verdict: NOT ready for cutover")
        assert "Window: all time" in text
        row = next(line for line in text.splitlines() if line.startswith("| GET /items/\\{id\\}"))
        assert "| **no** | 200 | 90.000% (≥ 85." in row and "| 20 (10%: connection " in row
        assert "- V2 error rate 10% (20 errors to 180 clean samples) > 0.1%" in text


async def test_answers_that_differ_only_past_the_capture_cap_are_mismatches(http_server,
                                                                             settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        assert p.settings.capture_cap_bytes == 64 * 1024 < SIZE
        await send(p, client, [f"/{kind}/{n}" for n in range(5) for kind in ("same", "late")])
        assert await p.store.outcomes() == {"match": 5, "mismatch": 5}
        async with client.get(p.api_url + "/api/mismatches") as r:
            items = (await r.json())["items"]
        assert {x["route"] for x in items} == {"/late/{id}"} and len(items) == 5
        async with client.get(f"{p.api_url}/api/exchanges/{items[0]['id']}") as r:
            late = await r.json()
        [d] = late["diff"]
        assert (d["path"], d["kind"]) == ("$", "body")
        assert d["v1"].startswith(f"differs after the first 64 KiB: {SIZE} bytes, digest ")
        assert late["v1"]["digest"] != late["v2"]["digest"]
        # identical 100 KB answers: a match proven whole, not a match of their first 64 KiB
        async with client.get(p.api_url + "/api/exchanges",
                              params={"route": "/same/{id}", "outcome": "match"}) as r:
            same = (await r.json())["items"]
        assert len(same) == 5 and all("whole_body_equal" in x["flags"] for x in same)
        v = await verdict(p, client, min_match="50", min_samples="1",
                          latency_floor_ms="3600000")
        assert route_of(v, "/same/{id}")["ready"] is True
        assert route_of(v, "/late/{id}")["ready"] is False


async def test_a_slower_v2_trips_the_latency_gate(http_server, settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        await send(p, client, [f"/slow/{n}" for n in range(20)])
        assert await p.store.outcomes() == {"match": 20}
        # every answer matches: only the latency gate can hold the route back
        v = await verdict(p, client, min_match="50", min_samples="1")
        slow = route_of(v, "/slow/{id}")
        latency = slow["latency"]
        # V2 takes at least V2_DELAY_S per answer, V1 answers at once: a loaded machine slows
        # both, and V1 would need over 0.66 s per answer for the ratio to fall to 1.5
        assert latency["v2_ms"]["p99"] >= V2_DELAY_S * 1000 * 0.97  # the histogram's bucket
        assert latency["p99_ratio"] > 1.5 and latency["judged"] is True
        assert slow["ready"] is False and "V2 slower: p99 " in slow["reason"], slow
        assert f"({latency['p99_ratio']:.2f}× > 1.5×)" in slow["reason"]
        # a gate set above what was measured, or a floor above V2's p99: ready
        ratio = str(latency["p99_ratio"] * 2)
        assert (await verdict(p, client, min_match="50", min_samples="1",
                              max_latency_ratio=ratio))["ready"] is True
        assert (await verdict(p, client, min_match="50", min_samples="1",
                              latency_floor_ms="3600000"))["ready"] is True
        assert latency["p95_ratio"] > 1.5
