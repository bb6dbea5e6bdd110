"""Noise cancellation with a second V1 (--v1-secondary), through the whole pipeline:
3 real bugs over 5,000 requests plus a random timestamp give exactly 3 classes, and the
timestamp is reported as V1's own noise."""

from __future__ import annotations

import asyncio
import random

import aiohttp
from aiohttp import web

from shadow.filters import Filters
from shadow.model import Answer, Request
from shadow.noise import V1Memory
from tests.conftest import wait_for
from tests.pipeline import Pipeline


def app(version: int) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        body = {"id": n, "price": round(n * 1.5, 2), "generated": random.random()}
        if version == 2 and n % 7 == 0:
            body["price"] = round(n * 1.6, 2)  # bug 1: wrong price
        return web.json_response(body)

    async def user(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        body = {"id": n, "email": f"u{n}@example.com", "generated": random.random()}
        if version == 2 and n % 11 == 0:
            del body["email"]  # bug 2: a field lost
        return web.json_response(body)

    async def order(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if version == 2 and n % 13 == 0:
            return web.json_response({"error": "boom"}, status=500)  # bug 3: a crash
        return web.json_response({"id": n, "generated": random.random()})

    a = web.Application()
    a.router.add_get("/items/{n}", item)
    a.router.add_get("/users/{n}", user)
    a.router.add_get("/orders/{n}", order)
    return a


async def test_three_bugs_and_a_timestamp_make_three_classes_and_noise(http_server,
                                                                        settings_factory):
    v1, v1b, v2 = (await http_server(app(1)), await http_server(app(1)),
                   await http_server(app(2)))
    total = 5000
    async with Pipeline(settings_factory(v1=v1, v2=v2, v1_secondary=v1b)) as p, \
            aiohttp.ClientSession() as client:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem, client.get(f"{p.url}/{['items', 'users', 'orders'][i % 3]}/{i}") as r:
                await r.read()

        await asyncio.gather(*(one(i) for i in range(total)))

        async def done() -> bool:
            outcomes = await p.store.outcomes()
            return sum(outcomes.values()) == total and outcomes.get("pending", 0) == 0

        await wait_for(done, 90, f"{total} decided exchanges")
        classes = await p.store.classes()
        shapes = {(c["route"], tuple((x["path"], x["kind"]) for x in c["paths"])) for c in classes}
        assert shapes == {
            ("/items/{id}", (("$.price", "changed"),)),
            ("/users/{id}", (("$.email", "removed"),)),
            ("/orders/{id}", (("$", "changed"), ("status", "status"))),
        }
        summary = await p.summary()
        for r in summary["routes"]:
            assert r["noise"][0]["path"] == "$.generated" and r["noise"][0]["rate"] == 1.0
            assert r["noise"][0]["observed"] == r["compared"]
        items = next(r for r in summary["routes"] if r["route"] == "/items/{id}")
        bugs = sum(1 for i in range(1, total) if i % 3 == 0 and i % 7 == 0)  # 0 * 1.6 == 0
        assert (items["mismatched"], items["matched"]) == (bugs, items["compared"] - bugs)
        sample = (await p.store.list_exchanges(Filters(outcome="match", limit=1)))[0][0]
        shown = await p.store.get(sample["id"])
        assert shown is not None and [d.path for d in shown.noise] == ["$.generated"]
        assert shown.v1_secondary is not None and "noise" in shown.flags
        async with client.get(f"{p.api_url}/api/suggestions") as r:
            suggested = await r.json()
        assert {(s["route"], s["path"], s["rule"]) for s in suggested["suggestions"]} == {
            (route, "$.generated", "ignore") for route in ("/items/{id}", "/users/{id}",
                                                           "/orders/{id}")}


async def test_without_a_second_v1_noise_is_learned_from_repeats_and_hidden_only_on_request(
        http_server, settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))

    async with Pipeline(settings_factory(v1=v1, v2=v2, auto_ignore_noise=True)) as p, \
            aiohttp.ClientSession() as client:
        p.comparer.noise_refresh_s = 0.0  # re-read the learned noise on every batch

        async def send(rounds: int) -> None:
            for _ in range(rounds):
                for n in range(1, 11):  # the same 10 requests again and again
                    async with client.get(f"{p.url}/items/{n}") as r:
                        await r.read()

        async def decided(total: int) -> bool:
            outcomes = await p.store.outcomes()
            return sum(outcomes.values()) == total and outcomes.get("pending", 0) == 0

        await send(2)
        await wait_for(lambda: decided(20), 30, "20 decided")
        summary = await p.summary()
        [items] = summary["routes"]
        assert items["suspected_noise"] == [{"path": "$.generated", "count": 10, "observed": 10,
                                             "rate": 1.0}]
        assert items["mismatched"] == 20  # learned while they were compared: not yet trusted
        await send(3)
        await wait_for(lambda: decided(50), 30, "50 decided")
        latest, _ = await p.store.list_exchanges(Filters(limit=10))
        by_outcome = {x["url"]: x["outcome"] for x in latest}
        assert by_outcome["/items/7"] == "mismatch"  # the real bug (price) stays a mismatch
        assert all(outcome == "match" for url, outcome in by_outcome.items() if url != "/items/7")
        assert all("suspected_noise" in x["flags"] for x in latest)


async def test_suspected_noise_is_only_shown_by_default(http_server, settings_factory):
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        p.comparer.noise_refresh_s = 0.0
        for _ in range(5):
            for n in range(1, 11):
                async with client.get(f"{p.url}/items/{n}") as r:
                    await r.read()

        async def decided() -> bool:
            outcomes = await p.store.outcomes()
            return sum(outcomes.values()) == 50 and outcomes.get("pending", 0) == 0

        await wait_for(decided, 30, "50 decided")
        [items] = (await p.summary())["routes"]
        assert items["mismatched"] == 50 and items["suspected_noise"][0]["observed"] == 40


def test_v1_memory_is_bounded_in_answers_and_bytes_and_still_learns() -> None:
    memory = V1Memory(capacity=1000, max_bytes=160_000)  # at most 10 kB per answer

    def answer(n: int, size: int) -> Answer:
        body = b'{"n": %d, "pad": "%s"}' % (n, b"x" * size)
        return Answer(200, [("Content-Type", "application/json")], body, len(body))

    for i in range(200):
        memory.observe(Request("GET", f"/big/{i}", []), answer(i, 5_000))
        assert memory.bytes <= 160_000
    memory.observe(Request("GET", "/huge", []), answer(0, 20_000))  # over 1/16: not kept
    assert memory.observe(Request("GET", "/huge", []), answer(1, 20_000)) is None
    # recent answers are still remembered, so repeats still teach
    assert memory.observe(Request("GET", "/big/199", []), answer(7, 5_000)) == ["$.n"]
    assert memory.observe(Request("GET", "/big/0", []), answer(7, 5_000)) is None  # evicted
