"""Evidence, not a log, end to end: with the default keep policy, traffic through the real
proxy, Redis, subscriber, V2 and comparer is counted whole while only a few exchange
documents are kept; `shadow report` says both."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import ROOT


def app(version: int) -> web.Application:
    """GET /items/{n} and /users/{n}: the same answer from V1 and V2; /users/{n} with n
    divisible by 10 differs in V2 (one mismatch class)."""

    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": n, "name": f"item {n}"})

    async def user(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": str(n) if version == 2 and n % 10 == 0 else n})

    application = web.Application()
    application.router.add_get("/items/{n}", item)
    application.router.add_get("/users/{n}", user)
    return application


async def test_500_matches_are_counted_and_only_a_few_documents_kept(http_server,
                                                                     settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    # the default policy; tombstones kept for the hour (counted below): the streams' horizon
    # (test_tombstones_go_once_the_traffic_is_drained) would let them go a minute after
    settings = settings_factory(v1=v1, v2=v2, keep="sampled", tombstone_margin_s=3600)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        sem = asyncio.Semaphore(16)

        async def send(path: str) -> None:
            async with sem, client.get(p.url + path) as r:
                assert r.status == 200

        await asyncio.gather(*(send(f"/items/{n}") for n in range(500)))

        async def compared() -> bool:
            s = await p.summary()
            return bool(s["matched"] == 500 and s["pending"] == 0)

        await wait_for(compared, 60, "500 matches compared")
        summary = await p.summary()
        assert (summary["total"], summary["compared"], summary["matched"]) == (500, 500, 500)
        # the first match of the route (each hour: two when the traffic crossed one) and
        # about one in a thousand besides
        assert 1 <= summary["kept"] <= 6, summary["kept"]
        [route] = summary["routes"]
        assert (route["route"], route["total"], route["kept"]) == \
            ("/items/{id}", 500, summary["kept"])

        # a mismatch class keeps its first examples; its matches are sampled like the others
        await asyncio.gather(*(send(f"/users/{n}") for n in range(100)))

        async def all_compared() -> bool:
            return bool((await p.summary())["compared"] == 600)

        await wait_for(all_compared, 60, "600 exchanges compared")
        summary = await p.summary()
        [cls] = await p.store.classes()
        assert (summary["mismatched"], cls["count"]) == (10, 10)
        users = next(r for r in summary["routes"] if r["route"] == "/users/{id}")
        assert 10 <= users["kept"] <= 16  # the 10 mismatches (under 20 an hour) and a match or so
        for example in cls["examples"]:
            assert await p.store.get(example) is not None
        report = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "shadow", "report", "--api", p.api_url],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "COLUMNS": "300"})
        assert report.returncode == 0, report.stderr
        assert "600 exchanges: " in report.stdout
        assert f"; {summary['kept']} kept as documents" in " ".join(report.stdout.split())

    db = sqlite3.connect(settings.store.removeprefix("sqlite:///"))
    try:
        documents = db.execute("SELECT count(*) FROM exchanges").fetchone()[0]
        tombstones = db.execute("SELECT count(*) FROM dropped").fetchone()[0]
    finally:
        db.close()
    assert documents == summary["kept"] and documents + tombstones == 600


async def test_tombstones_go_once_the_traffic_is_drained(http_server, settings_factory):
    """The tombstones of the exchanges the keep policy dropped go once the streams hold nothing
    of them any more (the streams' horizon, here with a margin of a second): the store keeps the
    few documents and the counts, nothing per dropped exchange."""
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    settings = settings_factory(v1=v1, v2=v2, keep="sampled", tombstone_margin_s=1.0)
    p = Pipeline(settings)
    p.comparer.housekeeper.interval_s = 0.1
    async with p, aiohttp.ClientSession() as client:
        for n in range(200):
            async with client.get(f"{p.url}/items/{n}") as r:
                assert r.status == 200

        async def compared() -> bool:
            return bool((await p.summary())["matched"] == 200)

        await wait_for(compared, 60, "200 matches compared")

        def stored() -> tuple[int, int]:
            db = sqlite3.connect(settings.store.removeprefix("sqlite:///"))
            try:
                return (db.execute("SELECT count(*) FROM exchanges").fetchone()[0],
                        db.execute("SELECT count(*) FROM dropped").fetchone()[0])
            finally:
                db.close()

        kept = (await p.summary())["kept"]
        assert 1 <= kept <= 6
        await wait_for(lambda: stored() == (kept, 0), 60, "every tombstone gone")
        summary = await p.summary()
        assert (summary["total"], summary["matched"], summary["kept"]) == (200, 200, kept)
