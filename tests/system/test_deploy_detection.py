"""V2 deploys detected from a version header (#13 item 3): with --v2-version-header, the first
answer of each new version records a V2 deploy marker (one per version, whichever comparer
replica sees it), and the verdict's default window starts at the latest; a class marked fixed
in a version not deployed yet waits for it, and reopens when it mismatches after it, saying
which deploy should have fixed it. Real V1 and V2 (aiohttp on port 0) behind the real proxy,
Redis, subscriber and comparer. (Replicas: tests/test_deploy_detection.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from shadow.ids import new_id
from shadow.model import Answer, Request, RequestEvent, ResponseEvent
from shadow.windows import bucket_ceil
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import shadow

GATES = ("--min-match", "80", "--min-samples", "10", "--latency-floor-ms", "3600000")


class V2:
    """GET /items/{n} with `X-Version: <version>`; while `buggy`, the id as a string."""

    def __init__(self) -> None:
        self.version, self.buggy = "1.0", True

    def app(self) -> web.Application:
        async def item(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            return web.json_response({"id": str(n) if self.buggy else n},
                                     headers={"X-Version": self.version})

        application = web.Application()
        application.router.add_get("/items/{n}", item)
        return application


def v1_app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["n"])})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    return application


def offer(p: Pipeline, ts: float, n: int) -> None:
    """A request to /items/{n} received at `ts`, and V1's answer, as the proxy publishes them
    (the subscriber replays it to the real V2 now)."""
    ident = new_id()
    body = orjson.dumps({"id": n})
    p.publisher.offer(RequestEvent(ident, ident, ts, Request("GET", f"/items/{n}", [])))
    p.publisher.offer(ResponseEvent(ident, ts + 0.01, Answer(
        200, [("Content-Type", "application/json; charset=utf-8")], body, len(body),
        latency_ms=1.0)))


async def settled(p: Pipeline, total: int) -> bool:
    outcomes = await p.store.outcomes()
    return sum(outcomes.values()) == total and not outcomes.get("pending")


async def deploys(client: aiohttp.ClientSession, p: Pipeline) -> list[dict[str, Any]]:
    async with client.get(p.api_url + "/api/deploys") as r:
        assert r.status == 200
        return (await r.json())["deploys"]  # type: ignore[no-any-return]


async def test_two_v2_versions_in_sequence_make_two_markers_and_the_window_starts_at_the_second(
        http_server, settings_factory):
    v2 = V2()
    v1_url, v2_url = await http_server(v1_app()), await http_server(v2.app())
    settings = settings_factory(v1=v1_url, v2=v2_url, v2_version_header="X-Version")
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        api = ("--api", p.api_url)
        # V2 1.0 has the bug: traffic received ten minutes ago, replayed to it now
        for n in range(10):
            offer(p, time.time() - 600 + n, n)
        await wait_for(lambda: settled(p, 10), 60, "the traffic to V2 1.0 compared")
        [first] = await deploys(client, p)
        assert (first["target"], first["version"]) == ("v2", "1.0")
        assert first["note"] == "detected: V2 answered with X-Version: 1.0"
        [cls] = json.loads((await asyncio.to_thread(shadow, "classes", "--json", *api)).stdout)[
            "classes"]
        # the fix is on its way in 2.0: the class waits for it
        marked = await asyncio.to_thread(shadow, "mark", cls["signature"], "fixed",
                                         "--in-deploy", "2.0", *api)
        assert marked.returncode == 0, marked.stderr
        assert "expected in V2 2.0 (not deployed yet" in marked.stdout

        # 2.0 goes live: its first answers record the second marker
        v2.version, v2.buggy = "2.0", False
        for n in range(10, 15):
            async with client.get(f"{p.url}/items/{n}") as r:
                assert r.status == 200
        await wait_for(lambda: settled(p, 15), 60, "the first traffic to V2 2.0 compared")
        second, again = await deploys(client, p)
        assert again == first and (second["version"], second["target"]) == ("2.0", "v2")
        assert second["ts"] >= first["ts"]
        [fixed] = json.loads((await asyncio.to_thread(shadow, "classes", "--json", *api)).stdout)[
            "classes"]
        assert fixed["status"] == "fixed" and fixed["fixed_in"]["version"] == "2.0"

        # traffic from the first whole minute after it on (stamped so: no waiting for a minute)
        start = bucket_ceil(second["ts"])
        for n in range(20, 40):
            offer(p, start + 1 + n / 100, n)
        await wait_for(lambda: settled(p, 35), 60, "the traffic after V2 2.0 compared")
        verdict = json.loads((await asyncio.to_thread(shadow, "verdict", "--json", *GATES,
                                                      *api)).stdout)
        assert verdict["window"]["from_deploy"] == second
        assert verdict["window"]["since_ts"] == start
        assert verdict["ready"] is True, verdict
        text = await asyncio.to_thread(shadow, "verdict", *GATES, *api)
        assert text.returncode == 0 and "from the latest deploy: V2 deploy 2.0 at " in text.stdout
        everything = await asyncio.to_thread(shadow, "verdict", "--all-time", *GATES, *api)
        assert everything.returncode == 1 and "match rate 25/35" in everything.stdout

        # 2.0 regresses: the class reopens, after the deploy that should have fixed it
        v2.buggy = True
        offer(p, start + 5, 99)
        await wait_for(lambda: settled(p, 36), 60, "the regression compared")
        [reopened] = json.loads((await asyncio.to_thread(shadow, "classes", "--json",
                                                         *api)).stdout)["classes"]
        assert reopened["status"] == "new" and reopened["reopened"] is True
        assert reopened["reopened_after"]["version"] == "2.0"
        assert reopened["reopened_after"]["ts"] == second["ts"]
        listed = await asyncio.to_thread(shadow, "classes", *api)
        assert "reopened after V2 2.0" in listed.stdout
        assert len(await deploys(client, p)) == 2  # no new version: no new marker
