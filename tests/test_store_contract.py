"""One contract, every store: SQLite always, MongoDB through mongomock-motor always, and a
real MongoDB whenever SHADOW_TEST_MONGO_URL is set (docker compose up mongo)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from comparer.store import Store
from comparer.stores.mongo import MongoStore
from comparer.stores.sqlite import SQLiteStore
from shadow.compare import compare
from shadow.filters import Filters
from shadow.model import Answer, CandidateEvent, Event, Request, RequestEvent, ResponseEvent
from shadow.rules import OTHER_ROUTE

BACKENDS = ["sqlite", "mongomock"] + (["mongodb"] if os.environ.get("SHADOW_TEST_MONGO_URL") else [])


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SQLiteStore(f"sqlite:///{tmp_path / 'contract.db'}")
    elif request.param == "mongomock":
        from mongomock_motor import AsyncMongoMockClient

        s = MongoStore("mongodb://mock/shadow", client=AsyncMongoMockClient(),
                       database=f"t{uuid.uuid4().hex[:8]}")
    else:
        s = MongoStore(os.environ["SHADOW_TEST_MONGO_URL"], database=f"t{uuid.uuid4().hex[:8]}")
    await s.open()
    yield s
    if isinstance(s, MongoStore) and request.param == "mongodb":
        await s.db.client.drop_database(s.database)
    await s.close()


def xid(i: int) -> str:
    return f"X{i:09d}"  # sorts like the proxy's time-ordered ids


def answer(body: object, status: int = 200, latency: float = 5.0) -> Answer:
    raw = orjson.dumps(body)
    return Answer(status, [("Content-Type", "application/json")], raw, len(raw), latency_ms=latency)


def exchange_events(i: int, *, path: str = "/items/1", method: str = "GET",
                    v1: Answer | None = None, v2: Answer | None = None, ts: float | None = None,
                    request_id: str | None = None) -> list[Event]:
    ts = 1_700_000_000.0 + i if ts is None else ts
    ident = xid(i)
    return [
        RequestEvent(ident, request_id or f"req-{i}", ts, Request(method, path, [("Host", "x")])),
        ResponseEvent(ident, ts + 0.01, v1 or answer({"id": i})),
        CandidateEvent(ident, ts + 0.02, v2 or answer({"id": i})),
    ]


async def ingest(store: Store, events: list[Event]) -> list[str]:
    ready = await store.apply(events)
    results = [(x.id, compare(x.request, x.v1, x.v2, x.route)) for x in ready
               if x.v1 is not None and x.v2 is not None]
    return await store.complete(results)


async def test_redelivery_of_any_part_is_idempotent_and_the_first_copy_wins(store: Store):
    events = exchange_events(1)
    assert await ingest(store, events) == [xid(1)]
    for event in events:
        assert await ingest(store, [event]) == []
    other = CandidateEvent(xid(1), 9.9, answer({"id": "changed"}))  # a second replay
    assert await ingest(store, [other]) == []
    x = await store.get(xid(1))
    assert x is not None and x.outcome == "match" and x.v2 is not None
    assert orjson.loads(x.v2.body) == {"id": 1}
    assert await store.count() == 1
    assert (await store.summary())["matched"] == 1


async def test_out_of_order_parts_join(store: Store):
    req, resp, cand = exchange_events(2, v2=answer({"id": "2"}))
    assert await ingest(store, [cand]) == []
    assert await ingest(store, [resp]) == [xid(2)]  # compared as soon as both answers are there
    assert await ingest(store, [req]) == []
    x = await store.get(xid(2))
    assert x is not None and x.outcome == "mismatch" and x.route == "/items/{id}"
    assert x.method == "GET" and x.request_id == "req-2"
    summary = await store.summary()
    assert [(r["method"], r["route"], r["mismatched"]) for r in summary["routes"]] == \
        [("GET", "/items/{id}", 1)]


async def test_completion_is_recorded_exactly_once(store: Store):
    await store.apply(exchange_events(3))
    x = await store.get(xid(3))
    assert x is not None and x.v1 is not None and x.v2 is not None
    result = compare(x.request, x.v1, x.v2, x.route)
    first, second = await asyncio.gather(store.complete([(x.id, result)]),
                                         store.complete([(x.id, result)]))
    assert sorted(first + second) == [xid(3)]
    assert await store.complete([(x.id, result)]) == []
    assert (await store.outcomes()) == {"match": 1}


async def test_lookup_by_request_id_and_expiry(store: Store):
    await ingest(store, exchange_events(4, request_id="client-id"))
    found = await store.get("client-id")
    assert found is not None and found.id == xid(4)
    await store.apply(exchange_events(5)[:2])  # V2 never answers
    assert await store.expire(older_than_ts=time.time()) == 1
    assert (await store.outcomes()) == {"match": 1, "v1_only": 1}
    late = exchange_events(5)[2]  # V2's answer after the join timeout still completes it
    assert await ingest(store, [late]) == [xid(5)]


async def test_retention_by_count_and_age(store: Store):
    for i in range(10):
        await ingest(store, exchange_events(i, ts=time.time() - 1000 + i))
    assert await store.retain(max_age_s=None, max_docs=6) == 4
    assert await store.get(xid(3)) is None and await store.get(xid(4)) is not None
    assert await store.count() == 6
    await ingest(store, exchange_events(20, ts=time.time()))
    assert await store.retain(max_age_s=500, max_docs=None) == 6
    assert await store.count() == 1
    assert (await store.summary())["total"] == 1


async def _seed_listing(store: Store) -> None:
    for i in range(30):
        path = ["/items/1", "/users/2", "/orders/3"][i % 3]
        v2 = answer({"id": i}) if i % 2 == 0 else (
            answer({"id": i}, status=500) if i % 3 == 0 else answer({"id": str(i)}))
        await ingest(store, exchange_events(i, path=path, v2=v2, method="POST" if i == 29 else "GET"))


async def test_every_listing_filter(store: Store):
    await _seed_listing(store)

    async def ids(**kw: Any) -> list[str]:
        items, _ = await store.list_exchanges(Filters(limit=100, **kw))
        return [x["id"] for x in items]

    mismatches = await ids(outcome="mismatch")
    assert mismatches == [xid(i) for i in range(29, -1, -1) if i % 2 == 1]
    assert await ids(outcome="mismatch", route="/users/{id}") == \
        [xid(i) for i in range(29, -1, -1) if i % 2 == 1 and i % 3 == 1]
    assert await ids(method="POST") == [xid(29)]
    assert await ids(v2_status=500) == [xid(i) for i in range(29, -1, -1) if i % 6 == 3]
    assert await ids(v1_status=200, outcome="match") == [xid(i) for i in range(28, -1, -2)]
    assert await ids(path="$.id") == [xid(i) for i in range(29, -1, -1) if i % 2 and i % 3]
    assert await ids(path="status") == [xid(i) for i in range(29, -1, -1) if i % 6 == 3]
    one = (await store.list_exchanges(Filters(outcome="mismatch", limit=1)))[0][0]
    assert one["diff"] and one["signature"]
    assert await ids(signature=one["signature"]) == [x for x in mismatches
                                                     if (await store.get(x)).signature == one["signature"]]  # type: ignore[union-attr]
    assert await ids(since=1_700_000_010.0, until=1_700_000_013.0) == [xid(12), xid(11), xid(10)]


async def test_pagination_has_no_gaps_or_repeats_under_concurrent_inserts(store: Store):
    await _seed_listing(store)
    seen: list[str] = []
    cursor = None
    n = 100
    while True:
        items, cursor = await store.list_exchanges(Filters(limit=7, cursor=cursor))
        seen += [x["id"] for x in items]
        n += 1
        await ingest(store, exchange_events(n))  # newer exchanges arrive while we page
        if cursor is None:
            break
    assert seen == [xid(i) for i in range(29, -1, -1)]


async def test_summary_equals_a_recount_of_the_documents(store: Store):
    await _seed_listing(store)
    await store.apply(exchange_events(50)[:2])
    summary = await store.summary()
    items, _ = await store.list_exchanges(Filters(limit=1000))
    by_outcome: dict[str, int] = {}
    for x in items:
        by_outcome[x["outcome"]] = by_outcome.get(x["outcome"], 0) + 1
    assert summary["total"] == len(items) == 31
    assert (summary["matched"], summary["mismatched"], summary["pending"]) == \
        (by_outcome["match"], by_outcome["mismatch"], by_outcome["pending"])
    for r in summary["routes"]:
        assert r["total"] == sum(1 for x in items if (x["method"] or "?", x["route"] or "?")
                                 == (r["method"], r["route"]))
    items_route = next(r for r in summary["routes"] if r["route"] == "/items/{id}")
    assert items_route["v1_latency_ms"]["p50"] == pytest.approx(5.0, rel=0.05)
    assert {(s["v1"], s["v2"]) for s in items_route["status_pairs"]} == {(200, 200), (200, 500)}


async def test_classes_count_keep_examples_take_a_status_and_reopen(store: Store):
    for i in range(8):
        await ingest(store, exchange_events(i, v2=answer({"id": str(i)})))
    [cls] = await store.classes()
    assert cls["count"] == 8 and len(cls["examples"]) == 5 and cls["status"] == "new"
    assert cls["paths"] == [{"path": "$.id", "kind": "type"}] and cls["route"] == "/items/{id}"
    marked = await store.set_class_status(cls["signature"], "fixed", ticket="JIRA-1")
    assert marked is not None and marked["status"] == "fixed" and marked["ticket"] == "JIRA-1"
    assert await store.set_class_status("0" * 16, "bug") is None
    await ingest(store, exchange_events(9, v2=answer({"id": "9"})))
    [again] = await store.classes()
    assert again["status"] == "new" and again["reopened"] and again["count"] == 9
    evidence = await store.route_evidence()
    assert [(e.route, e.compared, e.matched, sum(e.failing.values())) for e in evidence] == \
        [("/items/{id}", 9, 0, 9)]
    await store.set_class_status(cls["signature"], "accepted")
    [accepted] = await store.route_evidence()
    assert accepted.accepted == 9 and accepted.failing == {}


async def test_header_bytes_that_are_not_utf8_and_huge_numbers_are_stored(store: Store):
    """JSON and BSON cannot carry lone surrogates or integers beyond 64 bits: the stored
    exchange still gives back the exact header bytes (for display and for `shadow replay`)."""
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    huge = b'{"n": 123456789012345678901234567890}'
    v1 = Answer(200, [("Content-Type", "application/json"), ("X-Name", bad)], huge, len(huge))
    events = exchange_events(1, v1=v1, v2=answer({"n": 1}))
    events[0] = RequestEvent(xid(1), "req-1", 1.0, Request("GET", "/items/1", [("X-Bin", bad)]))
    assert await ingest(store, events) == [xid(1)]
    x = await store.get(xid(1))
    assert x is not None and x.request is not None and x.v1 is not None
    assert x.request.headers == [("X-Bin", bad)]
    assert x.v1.headers == v1.headers and x.v1.body == huge
    assert x.outcome == "mismatch" and "$.n" in [d.path for d in x.diff]
    if isinstance(store, MongoStore):  # what a real MongoDB would be sent must be valid BSON
        import bson

        bson.encode(await store.db.exchanges.find_one({"_id": xid(1)}))


async def test_undecided_rows_expire_whichever_half_is_missing(store: Store):
    """After the join timeout every row has an outcome: no V2 answer -> v1_only, no V1 answer
    (a request alone, a request and V2's answer, V2's answer alone) -> v1_missing. A part
    arriving later still completes the exchange."""
    request_only, no_v1, v2_only, no_v2 = (exchange_events(i) for i in (6, 7, 8, 9))
    await store.apply([request_only[0], no_v1[0], no_v1[2], v2_only[2], no_v2[0], no_v2[1]])
    assert await store.expire(older_than_ts=time.time()) == 4
    assert await store.outcomes() == {"v1_missing": 3, "v1_only": 1}
    assert await store.expire(older_than_ts=time.time()) == 0
    summary = await store.summary()
    assert (summary["v1_missing"], summary["v1_only"], summary["pending"]) == (3, 1, 0)
    assert await ingest(store, [no_v1[1]]) == [xid(7)]  # V1's answer, late: compared now
    assert await ingest(store, [no_v2[2]]) == [xid(9)]
    assert await store.outcomes() == {"v1_missing": 2, "match": 2}


async def test_object_keys_mongodb_refuses_are_stored_and_read_back(store: Store):
    """Keys with a NUL, a leading `$` or a dot, from the traffic, inside a diff's values."""
    odd = {"a\x00b": 1, "$where": {"$gt": ""}, "x.y": [{"p.q": 2}], "%2E": 3, "%": {"$": "."}}
    events = exchange_events(1, v1=answer({"o": odd}), v2=answer({"o": []}))
    assert await ingest(store, events) == [xid(1)]
    x = await store.get(xid(1))
    assert x is not None and x.outcome == "mismatch"
    assert [(d.path, d.kind, d.v1, d.v2) for d in x.diff] == [("$.o", "type", odd, [])]
    if isinstance(store, MongoStore):
        import bson

        bson.encode(await store.db.exchanges.find_one({"_id": xid(1)}))


def twin(s: Store) -> Store:
    """A second handle on the same store: what another comparer replica has."""
    if isinstance(s, SQLiteStore):
        return SQLiteStore(f"sqlite:///{s.path}")
    assert isinstance(s, MongoStore)
    return MongoStore(s.url, client=s._client, database=s.database)


async def test_routes_are_admitted_up_to_the_cap_by_every_replica_together(store: Store):
    replica = twin(store)
    await replica.open()
    try:
        a, b = await asyncio.gather(store.admit_routes([f"/a{i}" for i in range(5)], 6),
                                    replica.admit_routes([f"/b{i}" for i in range(5)], 6))
        assert len(a | b) == 6  # never more, however the two raced
        every = [*(f"/a{i}" for i in range(5)), *(f"/b{i}" for i in range(5)), "/new"]
        assert await store.admit_routes(every, 6) == a | b
        assert await replica.admit_routes(every, 6) == a | b
        assert await store.admit_routes([OTHER_ROUTE], 6) == set()  # never takes a place
        restarted = twin(store)
        await restarted.open()
        assert await restarted.admit_routes(every, 6) == a | b
        await restarted.close()
    finally:
        await replica.close()


async def forget_routes(s: Store) -> None:
    """What a store written by a version without the route cap lacks: its route book."""
    if isinstance(s, SQLiteStore):
        await s.db.execute("DELETE FROM routes")
    else:
        assert isinstance(s, MongoStore)
        await s.db.routes.drop()
        await s.db.meta.drop()


async def test_routes_stored_before_the_cap_keep_their_places(store: Store):
    for i, path in enumerate(["/one", "/two"]):
        await store.apply(exchange_events(i, path=path))
    await forget_routes(store)
    later = twin(store)  # opened after the upgrade: it counts the routes the store holds
    await later.open()
    try:
        assert await later.admit_routes(["/three"], 2) == set()
        assert await later.admit_routes(["/two", "/three"], 3) == {"/two", "/three"}
    finally:
        await later.close()
