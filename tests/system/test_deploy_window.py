"""A bug fixed in V2, end to end (#13 item 3): mismatches before a V2 release, its deploy
marked with `shadow deploy mark v2`, clean traffic after it; the verdict's default window
starts at the deploy (ready), `--all-time` still shows the bug (not ready)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import orjson
from aiohttp import web

from shadow.ids import new_id
from shadow.model import Answer, Request, RequestEvent, ResponseEvent
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import shadow


class V2:
    """GET /items/{n}: the id as a string while `buggy` (a mismatch), as V1 has it once fixed."""

    def __init__(self) -> None:
        self.buggy = True

    def app(self) -> web.Application:
        async def item(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            return web.json_response({"id": str(n) if self.buggy else n})

        application = web.Application()
        application.router.add_get("/items/{n}", item)
        return application


def v1_app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["n"])})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    return application


async def settled(p: Pipeline, total: int) -> bool:
    outcomes = await p.store.outcomes()
    return sum(outcomes.values()) == total and not outcomes.get("pending")


async def test_a_bug_fixed_after_a_deploy_marker_stops_counting(http_server, settings_factory):
    v2 = V2()
    v1_url, v2_url = await http_server(v1_app()), await http_server(v2.app())
    async with Pipeline(settings_factory(v1=v1_url, v2=v2_url)) as p, \
            aiohttp.ClientSession() as client:
        # before the release, five minutes ago (events as the proxy published them then):
        # V2 gets the ids wrong
        then = time.time() - 300
        for n in range(10):
            ident = new_id()
            body = orjson.dumps({"id": n})
            p.publisher.offer(RequestEvent(ident, ident, then + n,
                                           Request("GET", f"/items/{n}", [])))
            p.publisher.offer(ResponseEvent(ident, then + n + 0.01, Answer(
                200, [("Content-Type", "application/json; charset=utf-8")], body, len(body),
                latency_ms=1.0)))
        await wait_for(lambda: settled(p, 10), 60, "the traffic before the release compared")
        assert await p.store.outcomes() == {"mismatch": 10}

        # the fix goes live two minutes ago, and is marked
        v2.buggy = False
        marked = await asyncio.to_thread(shadow, "deploy", "mark", "v2", "--version", "2.4.1",
                                         "--note", "ids are numbers again", "--at", "2m",
                                         "--api", p.api_url)
        assert marked.returncode == 0, marked.stderr
        assert "marked: V2 deploy 2.4.1 at " in marked.stdout
        listed = await asyncio.to_thread(shadow, "deploy", "list", "--api", p.api_url)
        assert "V2 deploy 2.4.1 at " in listed.stdout and "(ids are numbers again)" in listed.stdout

        # after it: clean traffic through the proxy
        for n in range(30):
            async with client.get(f"{p.url}/items/{n}") as r:
                assert r.status == 200
        await wait_for(lambda: settled(p, 40), 60, "the traffic after the release compared")
        assert await p.store.outcomes() == {"mismatch": 10, "match": 30}

        gates = ("--min-match", "80", "--min-samples", "10", "--latency-floor-ms", "3600000",
                 "--api", p.api_url)
        ready = await asyncio.to_thread(shadow, "verdict", *gates)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "from the latest deploy: V2 deploy 2.4.1 at " in ready.stdout
        assert "READY for cutover" in ready.stdout
        as_json = await asyncio.to_thread(shadow, "verdict", "--json", *gates)
        [route] = json.loads(as_json.stdout)["routes"]
        assert route["ready"] is True
        # all time: the old mismatches are still there, and still hold the route back
        everything = await asyncio.to_thread(shadow, "verdict", "--all-time", *gates)
        assert everything.returncode == 1, everything.stdout
        assert "match rate 30/40" in everything.stdout
        markdown = await asyncio.to_thread(shadow, "verdict", "--markdown", *gates)
        assert ", from the latest deploy: V2 deploy 2.4.1 at " in markdown.stdout
        assert "## shadow verdict: READY for cutover" in markdown.stdout
