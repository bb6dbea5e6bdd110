"""Segments on real traffic (#13 item 5): real V1 and V2 (aiohttp on port 0) behind the real
proxy, Redis, subscriber and comparer, with --segment-by. Two tenants, one with a bug only V2
has for it: `shadow verdict --segment` says one is ready and the other is not; tenants past
--max-segments count as one segment, (other); a tenant named by a secret-looking header
reaches the store as its token, one per tenant."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import shadow

GATES = ("--min-match", "80", "--min-samples", "10", "--latency-floor-ms", "3600000")


def apps() -> tuple[web.Application, web.Application]:
    """V1 and V2 of /items/{n}: V2 gets the id wrong (a string) for the tenant globex only."""

    def make(version: int) -> web.Application:
        async def item(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            buggy = version == 2 and request.headers.get("X-Tenant") == "globex"
            return web.json_response({"id": str(n) if buggy else n})

        application = web.Application()
        application.router.add_get("/items/{n}", item)
        return application

    return make(1), make(2)


async def send(p: Pipeline, client: aiohttp.ClientSession, requests: list[tuple[str, dict[str, str]]],
               total: int) -> None:
    """Each (path, headers) through the proxy, then wait until `total` exchanges are decided."""
    sem = asyncio.Semaphore(8)

    async def one(path: str, headers: dict[str, str]) -> None:
        async with sem, client.get(p.url + path, headers=headers) as r:
            assert r.status == 200, path
            await r.read()

    await asyncio.gather(*(one(path, headers) for path, headers in requests))

    async def settled() -> bool:
        outcomes = await p.store.outcomes()
        return sum(outcomes.values()) == total and not outcomes.get("pending")

    await wait_for(settled, 90, f"{total} exchanges decided")


async def test_two_tenants_one_with_a_bug_give_one_ready_and_one_not_ready_segment(
        http_server, settings_factory):
    v1_app, v2_app = apps()
    v1, v2 = await http_server(v1_app), await http_server(v2_app)
    settings = settings_factory(v1=v1, v2=v2, segment_by="header:X-Tenant")
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await send(p, client, [(f"/items/{n}", {"X-Tenant": tenant})
                               for tenant in ("acme", "globex") for n in range(30)]
                   + [("/items/99", {})], 61)
        api = ("--api", p.api_url)

        acme = await asyncio.to_thread(shadow, "verdict", "--segment", "acme", *GATES, *api)
        assert acme.returncode == 0, acme.stdout + acme.stderr
        assert "segment: acme" in acme.stdout and "READY for cutover" in acme.stdout
        globex = await asyncio.to_thread(shadow, "verdict", "--segment", "globex", *GATES, *api)
        assert globex.returncode == 1, globex.stdout + globex.stderr
        assert "match rate 0/30" in globex.stdout and "failing classes" in globex.stdout
        everyone = await asyncio.to_thread(shadow, "verdict", *GATES, *api)
        assert everyone.returncode == 1 and "match rate 31/61" in everyone.stdout
        as_json = json.loads((await asyncio.to_thread(
            shadow, "verdict", "--json", "--segment", "globex", *GATES, *api)).stdout)
        assert as_json["segment"] == "globex" and as_json["ready"] is False
        markdown = await asyncio.to_thread(shadow, "verdict", "--markdown", "--segment", "acme",
                                           *GATES, *api)
        assert "## shadow verdict: READY for cutover (segment acme)" in markdown.stdout

        segments = json.loads((await asyncio.to_thread(shadow, "segments", "--json", *api)).stdout)
        assert segments["segment_by"] == "header:X-Tenant"
        assert [(s["segment"], s["total"], s["matched"], s["mismatched"])
                for s in segments["segments"]] == \
            [("acme", 30, 30, 0), ("globex", 30, 0, 30), ("(none)", 1, 1, 0)]
        table = await asyncio.to_thread(shadow, "segments", *api)
        assert "globex" in table.stdout and "segments (header:X-Tenant)" in table.stdout

        classes = await asyncio.to_thread(shadow, "classes", "--json", "--segment", "globex", *api)
        [cls] = json.loads(classes.stdout)["classes"]
        assert cls["count"] == 30 and cls["route"] == "/items/{id}"
        none = await asyncio.to_thread(shadow, "classes", "--json", "--segment", "acme", *api)
        assert json.loads(none.stdout)["classes"] == []
        report = json.loads((await asyncio.to_thread(
            shadow, "report", "--json", "--segment", "globex", *api)).stdout)
        assert (report["segment"], report["total"], report["mismatched"]) == ("globex", 30, 30)
        plain = await asyncio.to_thread(shadow, "report", "--segment", "(none)", *api)
        assert plain.returncode == 0 and "segment: (none)" in plain.stdout

        async with client.get(p.api_url + "/api/verdict",
                              params={"segment": "acme", "min_samples": "10"}) as r:
            assert r.status == 200 and (await r.json())["segment"] == "acme"
        async with client.get(p.api_url + "/api/routes", params={"segment": "x" * 129}) as r:
            assert r.status == 400 and "segment must be" in (await r.json())["error"]


async def test_tenants_past_the_cap_count_as_one_segment_and_secrets_as_tokens(
        http_server, settings_factory):
    """--max-segments 2 and the tenant in X-Api-Key, a secret-looking name: the store sees
    tokens, one per tenant; the first two seen keep their places, the rest are (other)."""
    v1_app, v2_app = apps()
    v1, v2 = await http_server(v1_app), await http_server(v2_app)
    settings = settings_factory(v1=v1, v2=v2, segment_by="header:X-Api-Key", max_segments=2)
    keys = ["key-acme-0001", "key-globex-0002", "key-initech-0003", "key-umbrella-0004"]
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await send(p, client, [(f"/items/{n}", {"X-Api-Key": key})
                               for key in keys[:2] for n in range(5)], 10)
        await send(p, client, [(f"/items/{n}", {"X-Api-Key": key})
                               for key in keys[2:] for n in range(4)], 18)
        async with client.get(p.api_url + "/api/segments") as r:
            listed = await r.json()
        named = {s["segment"]: s["total"] for s in listed["segments"]}
        assert named.pop("(other)") == 8 == listed["overflowed"]
        assert sorted(named.values()) == [5, 5] and len(named) == 2
        assert all(name.startswith("tok_") for name in named)
        text = json.dumps(listed)
        assert not any(key in text for key in keys)  # never in clear
        async with client.get(p.api_url + "/api/summary", params={"segment": "(other)"}) as r:
            other = await r.json()
        assert (other["total"], other["segment"]) == (8, "(other)")
        first = next(iter(named))
        async with client.get(p.api_url + "/api/verdict",
                              params={"segment": first, "min_samples": "1"}) as r:
            v: dict[str, Any] = await r.json()
        assert v["routes"][0]["samples"] == 5
