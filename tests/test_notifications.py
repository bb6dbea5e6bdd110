"""--notify-url through the real comparer: a local webhook receiver (a real aiohttp server on
127.0.0.1) records what it is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from comparer import open_store
from comparer.notifier import Notifier
from shadow.keys import REPLAYERS
from tests.conftest import wait_for
from tests.pipeline import Pipeline


class Receiver:
    """A webhook receiver: records every POST; answers `statuses` in turn (then 200), or
    never answers while `hang` is set."""

    def __init__(self, statuses: list[int] | None = None, hang: bool = False) -> None:
        self.posts: list[bytes] = []
        self.statuses = list(statuses or [])
        self.hang = hang
        self.hanging = 0
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append(await request.read())
        if self.hang:
            self.hanging += 1
            await self.release.wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/T000/B000/secret-token", self.handle)
        return app

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for body in self.posts]


@pytest.fixture
async def receiver(http_server) -> AsyncIterator[Callable[..., Any]]:
    made: list[Receiver] = []

    async def start(**kwargs: Any) -> tuple[Receiver, str]:
        r = Receiver(**kwargs)
        made.append(r)
        return r, await http_server(r.app()) + "/hooks/T000/B000/secret-token"

    yield start
    for r in made:
        r.release.set()  # a hanging handler returns: the server can stop


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("shadow_notifications_total", {"result": result}) or 0.0


def v1_app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["n"], "name": "x"})

    app = web.Application()
    app.router.add_get("/{kind}/{n}", item)
    return app


def v2_app() -> web.Application:
    """/same/N answers as V1; /renamed/N renames a field; /k{K}/N adds field fK (one class per
    K, each on a route of its own)."""

    async def item(request: web.Request) -> web.Response:
        kind, n = request.match_info["kind"], request.match_info["n"]
        body: dict[str, Any] = {"id": n, "name": "x"}
        if kind == "renamed":
            body["title"] = body.pop("name")
        elif kind.startswith("k"):
            body[f"f{kind[1:]}"] = 1
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/{kind}/{n}", item)
    return app


async def get(client: aiohttp.ClientSession, p: Pipeline, *paths: str) -> None:
    for path in paths:
        async with client.get(p.url + path) as r:
            assert r.status == 200


async def post_json(url: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        assert r.status == 200, await r.text()


async def test_a_new_class_is_told_once_and_again_only_after_the_debounce(
        http_server, receiver, settings_factory) -> None:
    rx, url = await receiver()
    settings = settings_factory(v1=await http_server(v1_app()), v2=await http_server(v2_app()),
                                notify_url=url)
    pipeline = Pipeline(settings)
    pipeline.comparer.notifier.interval_s = 0.05  # the class book refreshed at once
    async with pipeline as p, aiohttp.ClientSession() as client:
        notifier = p.comparer.notifier
        sent = counted("sent")
        await get(client, p, "/same/1", "/renamed/1")
        await wait_for(lambda: len(rx.posts) == 1, what="the new class told")
        await wait_for(lambda: counted("sent") == sent + 1, what="its delivery counted")
        text = rx.json()[0]["text"]  # Slack's incoming-webhook format by default
        assert text.startswith("shadow: new mismatch class ")
        assert "GET /renamed/{id}" in text and "$.name" in text

        # the same class again: known, nothing to tell
        await get(client, p, "/renamed/2", "/renamed/3")
        await wait_for(lambda: p.comparer.completed == 4, what="4 exchanges compared")
        assert len(rx.posts) == 1 and all(d.queue.empty() for d in notifier.destinations)

        # marked fixed, then seen again within 10 minutes: reopened, but debounced
        (cls,) = await p.store.classes()
        await post_json(f"{p.api_url}/api/classes/{cls['signature']}", {"status": "fixed"})
        ticks = notifier.ticks
        await wait_for(lambda: notifier.ticks >= ticks + 2, what="the class book refreshed")
        debounced = counted("debounced")
        await get(client, p, "/renamed/4")
        await wait_for(lambda: p.comparer.completed == 5, what="5 exchanges compared")
        assert counted("debounced") == debounced + 1
        assert len(rx.posts) == 1 and all(d.queue.empty() for d in notifier.destinations)

        # past the debounce window (made short here), a reopened class is told
        notifier.debounce.every_s = 0.0
        await post_json(f"{p.api_url}/api/classes/{cls['signature']}", {"status": "fixed"})
        ticks = notifier.ticks
        await wait_for(lambda: notifier.ticks >= ticks + 2, what="the class book refreshed")
        await get(client, p, "/renamed/5")
        await wait_for(lambda: len(rx.posts) == 2, what="the reopened class told")
        assert rx.json()[1]["text"].startswith("shadow: mismatch class marked fixed is back")


async def test_generic_json_receivers_get_the_documented_object(http_server, receiver,
                                                                settings_factory) -> None:
    rx, url = await receiver()
    settings = settings_factory(v1=await http_server(v1_app()), v2=await http_server(v2_app()),
                                notify_url=url, notify_format="json")
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await get(client, p, "/renamed/7")
        await wait_for(lambda: len(rx.posts) == 1, what="the new class told")
        x = await p.store.get(next(iter(rx.json()))["example"])
    (doc,) = rx.json()
    assert doc["event"] == "new_class" and doc["time"].endswith("Z")
    assert doc["method"] == "GET" and doc["route"] == "/renamed/{id}"
    assert doc["class_status"] == "new" and doc["v1_status"] == doc["v2_status"] == 200
    assert set(doc["paths"]) == {"$.name", "$.title"}
    assert x is not None and doc["signature"] == x.signature


async def test_a_failing_receiver_gets_the_notice_again(http_server, receiver,
                                                        settings_factory) -> None:
    rx, url = await receiver(statuses=[500])  # 500, then 200
    settings = settings_factory(v1=await http_server(v1_app()), v2=await http_server(v2_app()),
                                notify_url=url)
    retries = REGISTRY.get_sample_value("shadow_notification_retries_total") or 0.0
    sent = counted("sent")
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        await get(client, p, "/renamed/1")
        await wait_for(lambda: counted("sent") == sent + 1, what="the notice delivered")
    assert len(rx.posts) == 2 and rx.posts[0] == rx.posts[1]
    assert REGISTRY.get_sample_value("shadow_notification_retries_total") == retries + 1


async def test_a_receiver_that_hangs_never_holds_the_comparer_back(http_server, receiver,
                                                                   settings_factory) -> None:
    """The receiver never answers: the comparer goes on comparing (and telling new classes),
    the notices that do not fit in the queue are dropped and counted."""
    rx, url = await receiver(hang=True)
    settings = settings_factory(v1=await http_server(v1_app()), v2=await http_server(v2_app()),
                                notify_url=url)
    pipeline = Pipeline(settings)
    (destination,) = pipeline.comparer.notifier.destinations
    destination.queue = asyncio.Queue(1)
    destination.timeout_s = 3600.0  # the first notice stays in flight for the whole test
    dropped = counted("dropped")
    async with pipeline as p, aiohttp.ClientSession() as client:
        await get(client, p, "/k0/1")
        await wait_for(lambda: rx.hanging == 1, what="the receiver holding the first notice")
        # five more classes and a hundred more exchanges while the receiver still hangs
        await get(client, p, *(f"/k{k}/{n}" for k in range(1, 6) for n in range(20)))
        await wait_for(lambda: p.comparer.completed == 101, what="101 exchanges compared")
        assert rx.hanging == 1 and len(rx.posts) == 1  # still the first one
        assert counted("dropped") >= dropped + 4  # one queued, the others dropped
        assert len(await p.store.classes()) == 6


async def test_a_route_turning_ready_is_told(http_server, receiver, settings_factory) -> None:
    rx, url = await receiver()
    settings = settings_factory(v1=await http_server(v1_app()), v2=await http_server(v2_app()),
                                notify_url=url, notify_format="json")
    pipeline = Pipeline(settings)
    pipeline.comparer.notifier.interval_s = 0.05
    # gates a test can meet with 60 exchanges (the default needs thousands to prove 99.9%)
    pipeline.comparer.notifier.verdict_options = {"min_match": 0.9, "min_samples": 20,
                                                  "max_latency_ratio": 1e6}
    async with pipeline as p, aiohttp.ClientSession() as client:
        await wait_for(lambda: p.comparer.notifier.ticks >= 1, what="the first watch pass")
        await asyncio.gather(*(get(client, p, f"/same/{n}") for n in range(60)))
        await wait_for(lambda: any(d["event"] == "verdict_changed" for d in rx.json()),
                       what="the verdict change told")
        ready = REGISTRY.get_sample_value("shadow_route_ready",
                                          {"method": "GET", "route": "/same/{id}"})
    (doc,) = [d for d in rx.json() if d["event"] == "verdict_changed"]
    assert doc["route"] == "/same/{id}" and doc["ready"] is True and doc["was_ready"] is False
    assert ready == 1.0


async def test_a_group_falling_behind_is_told_once(receiver, settings_factory, redis,
                                                   keys) -> None:
    """A stream whose newest entry is 999 s younger than the oldest one the replayers have
    not been given: past --notify-behind-s, told; the next pass (still behind) tells nothing."""
    rx, url = await receiver()
    settings = settings_factory(notify_url=url, notify_format="json", notify_behind_s=300)
    await redis.xgroup_create(keys.v1, REPLAYERS, id="0", mkstream=True)
    await redis.xadd(keys.v1, {"e": b"{}"}, id="1000-0")
    await redis.xadd(keys.v1, {"e": b"{}"}, id="1000000-0")
    store = open_store(settings.store)
    await store.open()
    notifier = Notifier(settings, redis, store, keys)
    try:
        await notifier.start()  # its first watch pass runs at once
        await wait_for(lambda: len(rx.posts) == 1, what="the lag told")
        await notifier.watch_streams()
        assert all(d.queue.empty() for d in notifier.destinations)
    finally:
        await notifier.stop()
        await store.close()
    (doc,) = rx.json()
    assert doc["event"] == "pipeline_behind" and doc["group"] == REPLAYERS
    assert doc["stream"] == keys.v1 and doc["behind_s"] == 999.0 and doc["threshold_s"] == 300
    assert len(rx.posts) == 1
