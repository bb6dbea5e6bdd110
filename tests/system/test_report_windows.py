"""Reports for a time window, end to end: traffic in two phases, minutes apart, through
the real proxy, Redis, subscriber, V2 and comparer; `since`/`until` on the API and on the
command line count only the phase they hold."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from shadow.ids import new_id
from shadow.model import Answer, Request, RequestEvent, ResponseEvent
from shadow.windows import bucket_of, iso
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import shadow


def app(version: int) -> web.Application:
    """GET /items/{n}: V2 answers odd items with the id as a string (a mismatch)."""

    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": str(n) if version == 2 and n % 2 else n})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    return application


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(shadow, *args)


async def test_since_counts_only_the_second_phase_of_traffic(http_server, settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        # phase 1, five minutes ago: as the proxy published it then (its events carry their
        # own times); the subscriber replays it to V2 now
        then = time.time() - 300
        for n in range(6):  # three matches, three mismatches
            ident = new_id()
            body = orjson.dumps({"id": n})  # what V1 answered
            p.publisher.offer(RequestEvent(ident, ident, then + n,
                                           Request("GET", f"/items/{n}", [])))
            p.publisher.offer(ResponseEvent(ident, then + n + 0.01, Answer(
                200, [("Content-Type", "application/json; charset=utf-8")], body, len(body),
                latency_ms=1.0)))
        await wait_for(lambda: _settled(p, 6), 60, "phase 1 compared")
        # phase 2, now: real requests through the proxy, from the start of this minute on
        since = bucket_of(time.time())
        for n in (10, 12, 13, 14):  # three matches, one mismatch
            async with client.get(f"{p.url}/items/{n}") as r:
                assert r.status == 200
        await wait_for(lambda: _settled(p, 10), 60, "phase 2 compared")

        async with client.get(f"{p.api_url}/api/summary?since={iso(since)}") as r:
            second = await r.json()
        assert (second["total"], second["matched"], second["mismatched"]) == (4, 3, 1)
        assert second["window"]["since"] == iso(since)
        async with client.get(f"{p.api_url}/api/summary?until={iso(since)}") as r:
            first = await r.json()
        assert (first["total"], first["matched"], first["mismatched"]) == (6, 3, 3)
        everything = await p.summary()
        assert (everything["total"], everything["matched"], everything["mismatched"]) == \
            (10, 6, 4)

        report = await run("report", "--api", p.api_url, "--json", "--since", iso(since) or "")
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["total"] == 4
        text = await run("report", "--api", p.api_url, "--since", iso(since) or "")
        assert f"window: {iso(since)} to now" in text.stdout, text.stdout


async def _settled(p: Pipeline, total: int) -> bool:
    """`total` exchanges counted, none pending."""
    outcomes = await p.store.outcomes()
    return sum(outcomes.values()) == total and outcomes.get("pending", 0) == 0


async def test_since_and_until_on_the_command_line_reach_the_api(reports_api) -> None:
    from comparer.api import STORE_KEY
    from tests.test_store_contract import answer, exchange_events, ingest

    api = await reports_api()
    now = time.time()
    for i, (age_s, v2) in enumerate([(7200, None), (7200, answer({"id": "1"})),
                                     (60, answer({"id": 2, "more": 1}))]):
        await ingest(api.app[STORE_KEY], exchange_events(i, ts=now - age_s, v2=v2))
    url = f"http://127.0.0.1:{api.port}"

    async def json_of(*args: str) -> Any:
        done = await run(*args, "--api", url, "--json")
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)

    assert (await json_of("report", "--since", "1h"))["total"] == 1
    assert (await json_of("report", "--until", "1h"))["total"] == 2
    assert (await json_of("report"))["total"] == 3
    [recent] = (await json_of("classes", "--since", "1h"))["classes"]
    assert recent["count"] == 1
    assert len((await json_of("classes"))["classes"]) == 2
    assert [x["id"] for x in (await json_of("mismatches", "--since", "1h"))["items"]] == \
        ["X000000002"]
    assert [x["id"] for x in (await json_of("mismatches", "--until", "1h"))["items"]] == \
        ["X000000001"]
    verdict = await json_of("verdict", "--min-samples", "1", "--until", "1h")
    assert verdict["window"]["until"] is not None
    assert "match rate 1/2" in verdict["routes"][0]["reason"]
    text = await run("verdict", "--api", url, "--min-samples", "1", "--since", "1h")
    assert "window: " in text.stdout and "rounds down" in text.stdout
    bad = await run("report", "--api", url, "--since", "yesterday")
    assert bad.returncode == 2 and "400" in bad.stderr and "15m" in bad.stderr, bad.stderr
