"""One poison answer never stalls a batch (#17 item 10): a V1 answer nested hundreds or
thousands of levels deep, or with object keys MongoDB refuses, is judged like any other;
and whatever step still fails for one exchange (noise memory, diff, store write) makes that
exchange a compare_error, with the reason, while the rest of its batch is decided."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from comparer import Comparer, ReportsApi
from comparer.stores.mongo import MongoStore
from comparer.stores.sqlite import SQLiteStore
from shadow.codec import encode_event
from shadow.diff import MAX_DIFF_DEPTH, MAX_VALUE_CHARS, clip_depth, json_differences
from shadow.errors import StoreError
from shadow.model import (
    Answer,
    CandidateEvent,
    Comparison,
    Event,
    Exchange,
    Request,
    RequestEvent,
    ResponseEvent,
)
from shadow.noise import V1Memory
from tests.conftest import wait_for
from tests.pipeline import Pipeline

ODD_KEYS = {"a\x00b": 1, "$where": {"$gt": ""}, "x.y": [{"p.q": 2}], "%2E": 3}


def nested(depth: int) -> bytes:
    """A JSON object `depth` levels deep, built as text (Python could not even build it)."""
    return b'{"a":' * depth + b'"leaf"' + b"}" * depth


def poison_apps() -> tuple[web.Application, web.Application]:
    """V1 and V2 agree on /ok/{n}; on the poison routes they differ, so the diff has to walk
    into (and keep values of) the hostile structures."""

    def make(version: int) -> web.Application:
        async def ok(request: web.Request) -> web.Response:
            return web.json_response({"n": int(request.match_info["n"])})

        async def deep(request: web.Request) -> web.Response:
            body = nested(int(request.match_info["depth"])) if version == 1 else b'{"a":"flat"}'
            return web.Response(body=body, content_type="application/json")

        async def odd(request: web.Request) -> web.Response:
            return web.json_response({"o": ODD_KEYS if version == 1 else []})

        app = web.Application()
        app.router.add_get("/ok/{n}", ok)
        app.router.add_get("/deep/{depth}", deep)
        app.router.add_get("/odd", odd)
        return app

    return make(1), make(2)


def with_store(p: Pipeline, backend: str) -> Pipeline:
    """The pipeline on MongoDB's semantics (mongomock-motor) instead of SQLite."""
    if backend == "mongomock":
        from mongomock_motor import AsyncMongoMockClient

        p.store = MongoStore("mongodb://mock/shadow", client=AsyncMongoMockClient(),
                             database=f"t{uuid.uuid4().hex[:8]}")
        p.comparer.store = p.comparer.notifier.store = p.store
        p.api = ReportsApi(p.settings, p.store, p.redis, keys=p.keys)
    return p


@pytest.mark.parametrize("backend", ["sqlite", "mongomock"])
async def test_deep_and_odd_keyed_answers_do_not_stall_their_batch(http_server, settings_factory,
                                                                   backend: str):
    v1_app, v2_app = poison_apps()
    v1, v2 = await http_server(v1_app), await http_server(v2_app)
    paths = {f"ok-{i}": f"/ok/{i}" for i in range(8)}
    paths |= {"deep-300": "/deep/300", "deep-1000": "/deep/1000", "deep-3000": "/deep/3000",
              "odd": "/odd"}
    async with with_store(Pipeline(settings_factory(v1=v1, v2=v2)), backend) as p, \
            aiohttp.ClientSession() as client:
        await p.comparer.stop()  # hold the comparer back: every exchange lands in one batch
        for rid, path in paths.items():
            async with client.get(p.url + path, headers={"X-Request-Id": rid}) as r:
                assert r.status == 200
                if rid == "deep-3000":
                    assert await r.read() == nested(3000)  # the client got V1's answer whole

        async def replayed() -> bool:
            return await p.redis.xlen(p.keys.v2) == len(paths) and \
                await p.redis.xlen(p.keys.v1) == 2 * len(paths)

        await wait_for(replayed, 60, "every request answered by V1 and replayed to V2")
        await p.comparer.start()

        async def decided() -> bool:
            outcomes = await p.store.outcomes()
            return sum(outcomes.values()) == len(paths) and not outcomes.get("pending")

        await wait_for(decided, 60, "every exchange of the batch decided")
        for i in range(8):
            x = await p.store.get(f"ok-{i}")
            assert x is not None and x.outcome == "match", (i, x and x.outcome, x and x.flags)
        for rid in ("deep-300", "deep-1000", "deep-3000"):
            x = await p.store.get(rid)
            assert x is not None and x.outcome == "mismatch", (rid, x and x.flags)
            assert x.diff and all(len(d.path) < 400 for d in x.diff)
            assert all(len(orjson.dumps(d.v1)) <= MAX_VALUE_CHARS + 300 for d in x.diff)
        deep = await p.store.get("deep-300")
        assert deep is not None and [(d.path, d.kind) for d in deep.diff] == [("$.a", "type")]
        odd = await p.store.get("odd")
        assert odd is not None and odd.outcome == "mismatch"
        assert [(d.path, d.kind, d.v1, d.v2) for d in odd.diff] == [("$.o", "type", ODD_KEYS, [])]
        async with client.get(f"{p.api_url}/api/exchanges/odd") as r:
            assert r.status == 200 and (await r.json())["diff"][0]["v1"] == ODD_KEYS
        summary = await p.summary()
        assert summary["pending"] == 0 and summary["matched"] == 8
        assert summary["mismatched"] == 4 and summary["compare_errors"] == 0


def test_the_structural_diff_stops_at_its_depth_and_keeps_small_values():
    deep: Any = "leaf"
    for _ in range(5000):  # deeper than any JSON parser here would accept
        deep = {"a": deep}
    [d] = json_differences(deep, {"a": "flat"})
    assert (d.path, d.kind) == ("$.a", "type")
    other: Any = "other leaf"
    for _ in range(5000):
        other = {"a": other}
    [d] = json_differences(deep, other)
    assert d.path == "$" + ".a" * MAX_DIFF_DEPTH and d.kind == "changed"
    assert "nested deeper than" in d.v1 and d.v1 != d.v2  # told apart by digest
    assert json_differences(deep, clip_depth(deep)) == []
    big = {"items": list(range(100_000))}
    [d] = json_differences(big, {"items": None})
    assert isinstance(d.v1, str) and len(d.v1) < MAX_VALUE_CHARS and "sha256" in d.v1
    [d] = json_differences({"s": "x" * 1_000_000}, {"s": "y"})
    assert len(d.v1) < MAX_VALUE_CHARS + 100 and d.v2 == "y"


# ---- the isolation itself: steps that fail for one exchange only ----

class FailingMemory(V1Memory):
    """The noise memory, failing for one URL (as a bug in it would)."""

    def observe(self, request: Request, v1: Answer) -> list[str] | None:
        if request.url == "/memory-fails":
            raise RuntimeError("noise memory bug")
        return super().observe(request, v1)


class RefusingStore(SQLiteStore):
    """A real SQLite store that refuses one exchange's comparison and another one's V1 answer,
    as MongoDB refuses a value it cannot hold."""

    async def apply(self, events: list[Event], routes: Mapping[str, str] | None = None,
                    segments: Mapping[str, str] | None = None) -> list[Exchange]:
        if any(isinstance(e, ResponseEvent) and e.id == "unstorable" for e in events):
            raise StoreError("V1 answer the store cannot hold")
        return await super().apply(events, routes, segments)

    async def complete(self, results: list[tuple[str, Comparison]],
                       **kw: Any) -> list[str]:
        if any(ident == "store-refuses" and c.outcome != "compare_error" for ident, c in results):
            raise StoreError("document too large for the store")
        return await super().complete(results, **kw)


def events_of(ident: str, url: str, body: bytes = b'{"ok":true}') -> list[Event]:
    """Request, V1 and V2 parts, stamped long before the join timeout: an exchange missing a
    part gets its outcome at the comparer's next sweep."""
    a = Answer(200, [("Content-Type", "application/json")], body, len(body), latency_ms=1.0)
    return [RequestEvent(ident, ident, 1.0, Request("GET", url, [])),
            ResponseEvent(ident, 1.1, a), CandidateEvent(ident, 1.2, a)]


async def test_a_step_that_fails_for_one_exchange_makes_it_a_compare_error(
        settings_factory, redis, keys, tmp_path):
    settings = settings_factory()
    store = RefusingStore(f"sqlite:///{tmp_path / 'refusing.db'}")
    await store.open()
    comparer = Comparer(settings, redis, store, keys=keys)
    comparer.memory = FailingMemory()
    staged = [*events_of("memory-fails", "/memory-fails"), *events_of("store-refuses", "/fine"),
              *events_of("unstorable", "/unstorable"),
              *[e for i in range(6) for e in events_of(f"good-{i}", f"/fine/{i}")]]
    for event in staged:  # all staged before the comparer reads: one batch
        await redis.xadd(keys.v2 if isinstance(event, CandidateEvent) else keys.v1,
                         {b"e": encode_event(event)})
    await comparer.start()
    try:
        async def decided() -> bool:
            outcomes = await store.outcomes()
            return sum(outcomes.values()) == 9 and not outcomes.get("pending")

        await wait_for(decided, 60, "the whole batch decided")
    finally:
        await comparer.stop()
    # the V1 answer it could not store: its exchange ends v1_missing after the join timeout,
    # its entry stays unacknowledged (redelivered, then dead-lettered), the rest flowed
    assert await store.outcomes() == {"match": 6, "compare_error": 2, "v1_missing": 1}
    memory = await store.get("memory-fails")
    assert memory is not None and memory.outcome == "compare_error"
    assert memory.flags == ["compare_error:noise_memory: RuntimeError: noise memory bug"]
    refused = await store.get("store-refuses")
    assert refused is not None and refused.outcome == "compare_error"
    assert refused.flags == ["compare_error:store: StoreError: document too large for the store"]
    summary = await store.summary()
    assert (summary["compared"], summary["matched"], summary["compare_errors"]) == (8, 6, 2)
    evidence = {e.route: e for e in await store.route_evidence()}
    assert evidence["/memory-fails"].compare_errors == 1  # a failure, not a match
    assert evidence["/memory-fails"].failing == {}  # and not a mismatch class
    assert evidence["/memory-fails"].compared == 1 and evidence["/memory-fails"].matched == 0
    assert (await redis.xpending(keys.v1, "comparers"))["pending"] == 1
    assert (await redis.xpending(keys.v2, "comparers"))["pending"] == 0
    await store.close()
