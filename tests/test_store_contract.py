"""One contract, every store: SQLite always, MongoDB through mongomock-motor always, and a
real MongoDB whenever SHADOW_TEST_MONGO_URL is set (docker compose up mongo)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from comparer.store import Store
from comparer.stores.mongo import MongoStore
from comparer.stores.sqlite import SQLiteStore
from shadow.compare import compare
from shadow.filters import Filters
from shadow.keep import EVERYTHING, KeepPolicy, unit
from shadow.model import Answer, CandidateEvent, Event, Request, RequestEvent, ResponseEvent
from shadow.rules import OTHER_ROUTE
from shadow.windows import ALL_TIME, Window, window

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


async def ingest(store: Store, events: list[Event], keep: KeepPolicy = EVERYTHING) -> list[str]:
    ready = await store.apply(events)
    results = [(x.id, compare(x.request, x.v1, x.v2, x.route)) for x in ready
               if x.v1 is not None and x.v2 is not None]
    return await store.complete(results, keep=keep)


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


async def kept(store: Store) -> list[str]:
    """The ids of the exchange documents the store still holds."""
    items, _ = await store.list_exchanges(Filters(limit=1000))
    return [x["id"] for x in items]


async def test_retention_deletesdocuments_by_count_and_age_and_keeps_their_counts(store: Store):
    for i in range(10):
        await ingest(store, exchange_events(i, ts=time.time() - 1000 + i))
    assert await store.retain(max_age_s=None, max_docs=6) == 4
    assert await store.get(xid(3)) is None and await store.get(xid(4)) is not None
    assert len(await kept(store)) == 6
    assert await store.count() == 10  # counted, whether the document is kept or not
    await ingest(store, exchange_events(20, ts=time.time()))
    assert await store.retain(max_age_s=500, max_docs=None) == 6
    assert await kept(store) == [xid(20)]
    assert (await store.summary())["total"] == 11


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


async def test_summary_equals_arecount_of_thedocuments(store: Store):
    await _seed_listing(store)
    await store.apply(exchange_events(50)[:2])
    summary = await store.summary()
    items, _ = await store.list_exchanges(Filters(limit=1000))
    by_outcome: dict[str, int] = {}
    for x in items:
        by_outcome[x["outcome"] or "?"] = by_outcome.get(x["outcome"] or "?", 0) + 1
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


# ---- rollups and windows ----

T0 = 1_700_000_040.0  # a minute boundary (1_700_000_040 = 28_333_334 minutes)
assert T0 % 60 == 0


async def seed_minutes(store: Store) -> None:
    """Exchanges over four minutes: matches, two mismatch classes, a V2 error status, a
    pending one and one V2 never answered (v1_only after expiry)."""
    plan = [  # (i, seconds after T0, path, v2)
        (0, 0.0, "/items/1", answer({"id": 0})),
        (1, 30.0, "/items/1", answer({"id": "1"})),
        (2, 59.9, "/users/2", answer({"id": 2}, status=500)),
        (3, 60.0, "/users/2", answer({"id": 3, "extra": True})),
        (4, 61.0, "/items/1", answer({"id": "4"})),
        (5, 119.5, "/items/1", answer({"id": 5}, latency=50.0)),
        (6, 125.0, "/users/2", answer({"id": 6, "extra": True})),
        (7, 200.0, "/items/1", answer({"id": 7})),
    ]
    for i, dt, path, v2 in plan:
        await ingest(store, exchange_events(i, path=path, v2=v2, ts=T0 + dt))
    await store.apply(exchange_events(8, ts=T0 + 130.0)[:2])  # V2 never answers
    await store.expire(older_than_ts=T0 + 131.0)
    await store.apply(exchange_events(9, ts=T0 + 190.0)[:1])  # pending


async def documents(store: Store) -> list[dict[str, Any]]:
    items, _ = await store.list_exchanges(Filters(limit=1000))
    return [dict(x) for x in items]


def recount(docs: list[dict[str, Any]], w: Window) -> dict[str, Any]:
    """What every report must say for the window, counted from the documents."""
    held = [x for x in docs if w.holds(x["ts"])]
    outcomes = Counter(x["outcome"] for x in held)
    routes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    pairs: dict[tuple[str, str], Counter[tuple[int, int]]] = defaultdict(Counter)
    classes: Counter[str] = Counter()
    for x in held:
        key = (x["method"] or "?", x["route"] or "?")
        routes[key][x["outcome"]] += 1
        if x["outcome"] in ("match", "mismatch"):
            pairs[key][(x["v1_status"], x["v2_status"])] += 1
        if x["outcome"] == "mismatch":
            classes[x["signature"]] += 1
    return {"outcomes": dict(outcomes), "routes": {k: dict(v) for k, v in routes.items()},
            "pairs": {k: dict(v) for k, v in pairs.items()}, "classes": dict(classes),
            "kept": {k: sum(v.values()) for k, v in routes.items()}}


async def reported(store: Store, w: Window) -> dict[str, Any]:
    """What the store's reports say for the window, in recount's shape."""
    s = await store.summary(w)
    names = {"matched": "match", "mismatched": "mismatch", "v2_errors": "v2_error",
             "pending": "pending", "v1_only": "v1_only", "skipped": "skipped",
             "v1_missing": "v1_missing", "compare_errors": "compare_error"}
    routes = {(r["method"], r["route"]): {o: dict(r)[k] for k, o in names.items() if dict(r)[k]}
              for r in s["routes"]}
    pairs = {(r["method"], r["route"]): {(p["v1"], p["v2"]): p["count"] for p in r["status_pairs"]}
             for r in s["routes"] if r["status_pairs"]}
    classes = {c["signature"]: c["count"] for c in await store.classes(window=w)}
    assert s["total"] == await store.count(w) == sum((await store.outcomes(w)).values())
    assert s["window"]["since_ts"] == w.since and s["window"]["until_ts"] == w.until
    assert s["kept"] == sum(r["kept"] for r in s["routes"])
    return {"outcomes": await store.outcomes(w), "routes": routes, "pairs": pairs,
            "classes": classes,
            "kept": {(r["method"], r["route"]): r["kept"] for r in s["routes"] if r["kept"]}}


def counted_only(summary: Any) -> Any:
    """A summary without its documents held (`kept`): what deleting documents never
    changes."""
    return {**summary, "kept": None,
            "routes": [{**r, "kept": None} for r in summary["routes"]]}


WINDOWS = [ALL_TIME, window(T0, T0 + 60), window(T0 + 60), window(None, T0 + 120),
           window(T0 + 120, T0 + 180), window(T0 + 600)]


async def test_rollups_equal_arecount_of_the_exchanges_in_every_window(store: Store):
    await seed_minutes(store)
    docs = await documents(store)
    assert len(docs) == 10
    for w in WINDOWS:
        assert await reported(store, w) == recount(docs, w), w
    first = await store.summary(window(T0, T0 + 60))
    assert (first["total"], first["matched"], first["mismatched"]) == (3, 1, 2)
    last = await store.summary(window(T0 + 120))
    assert (last["total"], last["v1_only"], last["pending"], last["matched"]) == (4, 1, 1, 1)
    assert (await store.summary(window(T0 + 600)))["total"] == 0
    # latency histograms per minute: the slow V2 answer is in the second minute only
    [items] = [r for r in (await store.summary(window(T0 + 60, T0 + 120)))["routes"]
               if r["route"] == "/items/{id}"]
    assert items["v2_latency_ms"]["p99"] == pytest.approx(50.0, rel=0.05)
    [items] = [r for r in first["routes"] if r["route"] == "/items/{id}"]
    assert items["v2_latency_ms"]["p99"] == pytest.approx(5.0, rel=0.05)


async def test_windows_are_exact_to_the_minute(store: Store):
    for i, dt in enumerate((0.0, 59.9, 60.0, 125.0)):
        await ingest(store, exchange_events(i, ts=T0 + dt))
    assert await store.count(window(T0 + 60)) == 2  # on a boundary: from that minute on
    assert await store.count(window(T0 + 30)) == 4  # since rounds down to T0
    assert await store.count(window(T0 + 59.99)) == 4
    assert await store.count(window(None, T0 + 60)) == 2  # until on a boundary: before it
    assert await store.count(window(None, T0 + 60.5)) == 3  # until rounds up to T0 + 120
    assert await store.count(window(T0 + 60, T0 + 120)) == 1
    assert await store.count(window(T0 + 61, T0 + 61)) == 1  # one instant: its whole minute
    assert await store.count(window(T0 + 120, T0 + 180)) == 1
    assert await store.count(window(T0 + 180)) == 0


async def test_deletingdocuments_changes_no_count(store: Store):
    await seed_minutes(store)
    reports = {w: (counted_only(await store.summary(w)), await store.classes(window=w),
                   await store.route_evidence(w), await store.outcomes(w), await store.count(w))
               for w in WINDOWS}
    assert await store.retain(max_age_s=1, max_docs=None) == 7  # all but each class's last
    left = await documents(store)
    assert sorted(x["signature"] for x in left) == sorted(c["signature"]
                                                          for c in await store.classes())
    for w, before in reports.items():
        assert (counted_only(await store.summary(w)), await store.classes(window=w),
                await store.route_evidence(w), await store.outcomes(w),
                await store.count(w)) == before, w
    assert (await store.summary())["kept"] == len(await documents(store))


async def test_a_part_late_or_out_of_order_moves_its_count_within_its_own_minute(store: Store):
    late = exchange_events(1, ts=T0 + 10)
    await store.apply(late[:2])  # V2 has not answered
    assert await store.outcomes(window(T0, T0 + 60)) == {"pending": 1}
    await store.expire(older_than_ts=T0 + 100)
    assert await store.outcomes(window(T0, T0 + 60)) == {"v1_only": 1}
    assert await ingest(store, late[2:]) == [xid(1)]  # V2's answer after the join timeout
    assert await store.outcomes(window(T0, T0 + 60)) == {"match": 1}
    assert await store.outcomes() == {"match": 1}
    # the answers come first, stamped in the next minute; the request's own time wins
    req, resp, cand = exchange_events(2, ts=T0 + 59.995, v2=answer({"id": "2"}))
    await store.apply([resp])
    assert await store.outcomes(window(T0 + 60, T0 + 120)) == {"pending": 1}
    assert await ingest(store, [cand]) == [xid(2)]
    assert await store.outcomes(window(T0 + 60, T0 + 120)) == {"mismatch": 1}
    await store.apply([req])
    assert await store.outcomes(window(T0 + 60, T0 + 120)) == {}
    assert await store.outcomes(window(T0, T0 + 60)) == {"match": 1, "mismatch": 1}
    [cls] = await store.classes(window=window(T0, T0 + 60))
    assert cls["count"] == 1
    [ev] = await store.route_evidence(window(T0, T0 + 60))
    assert (ev.route, ev.compared, ev.matched, sum(ev.failing.values())) == \
        ("/items/{id}", 2, 1, 1)
    assert await store.route_evidence(window(T0 + 60, T0 + 120)) == []
    assert await store.count() == 2


async def test_classes_in_a_window_count_there_and_keep_their_triage(store: Store):
    for i in range(6):  # one class: 2 in the first minute, 4 in the third
        await ingest(store, exchange_events(i, ts=T0 + (10 if i < 2 else 130) + i,
                                            v2=answer({"id": str(i)})))
    [everything] = await store.classes()
    await store.set_class_status(everything["signature"], "bug", ticket="T-1")
    [first] = await store.classes(window=window(T0, T0 + 60))
    [third] = await store.classes(window=window(T0 + 120))
    assert (first["count"], third["count"]) == (2, 4)
    for c in (first, third):
        assert (c["status"], c["ticket"], c["examples"]) == \
            ("bug", "T-1", everything["examples"])
    assert T0 <= (first["first_seen"] or 0) <= (first["last_seen"] or 0) <= T0 + 60
    assert T0 + 120 <= (third["first_seen"] or 0) <= (third["last_seen"] or 0) <= T0 + 180
    assert await store.classes(window=window(T0 + 60, T0 + 120)) == []
    assert await store.classes(signature=everything["signature"],
                               window=window(T0 + 120)) == [third]


async def test_a_write_cancelled_anywhere_leaves_no_transaction_open(store: Store):
    """The comparer's sweep (expiry) is not shielded: a stop cancels it wherever it is. The
    next write must still work, and the counts must still equal the documents."""
    for step in range(12):
        await store.apply(exchange_events(step, ts=T0 + step)[:2])  # pending, V2 missing
        task = asyncio.ensure_future(store.expire(older_than_ts=T0 + 1000))
        for _ in range(step):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await ingest(store, exchange_events(100 + step, ts=T0 + step)) == [xid(100 + step)]
    await store.expire(older_than_ts=T0 + 1000)
    docs = await documents(store)
    assert await reported(store, ALL_TIME) == recount(docs, ALL_TIME)


# ---- evidence: which documents are kept (shadow.keep) ----

HOUR = 1_700_002_800.0  # an hour boundary
assert HOUR % 3600 == 0


def sampled(**kw: Any) -> KeepPolicy:
    return KeepPolicy(**{"mode": "sampled", **kw})


def kept_ks(ids: list[str], n: int) -> set[str]:
    """The ids the reservoir keeps when `ids` are the 1st, 2nd... of one group in an hour."""
    return {ident for k, ident in enumerate(ids, 1) if k <= n or unit(ident) < n / k}


async def held(store: Store) -> set[str]:
    return set(await kept(store))


async def sibling(s: Store) -> Store:
    """A new, empty store of the same backend (opened)."""
    other: Store
    if isinstance(s, SQLiteStore):
        other = SQLiteStore(f"sqlite:///{s.path}.sibling")
    else:
        assert isinstance(s, MongoStore)
        other = MongoStore(s.url, client=s._client, database=f"{s.database}s")
    await other.open()
    return other


async def test_keep_all_keeps_every_document(store: Store):
    for i in range(30):
        await ingest(store, exchange_events(i, v2=answer({"id": str(i)}) if i % 3 else None),
                     keep=KeepPolicy("all"))
    assert len(await held(store)) == 30
    summary = await store.summary()
    assert (summary["total"], summary["kept"]) == (30, 30)
    assert [(r["route"], r["total"], r["kept"]) for r in summary["routes"]] == \
        [("/items/{id}", 30, 30)]


async def test_matches_are_sampled_and_the_first_of_each_route_each_hour_kept(store: Store):
    policy = sampled(matches=0.02)
    ids: dict[str, list[str]] = {"/items/1": [], "/users/1": []}
    for i in range(200):
        path = "/items/1" if i % 2 else "/users/1"
        ids[path].append(xid(i))
        await ingest(store, exchange_events(i, path=path, ts=HOUR + i), keep=policy)
    expected = {x for route in ids.values() for k, x in enumerate(route)
                if k == 0 or unit(x) < 0.02}
    assert await held(store) == expected
    assert len(expected) < 20  # a sample, not everything
    await ingest(store, exchange_events(500, path="/items/1", ts=HOUR + 3600), keep=policy)
    assert xid(500) in await held(store)  # the first match of the route in a new hour
    summary = await store.summary()
    assert (summary["total"], summary["matched"]) == (201, 201)
    assert summary["kept"] == len(expected) + 1
    assert {r["route"]: r["kept"] for r in summary["routes"]} == {
        "/items/{id}": len(expected & set(ids["/items/1"])) + 1,
        "/users/{id}": len(expected & set(ids["/users/1"]))}
    hour = await store.summary(window(HOUR, HOUR + 3600))
    assert (hour["total"], hour["kept"]) == (200, len(expected))


async def test_a_class_keeps_n_examples_per_hour_then_a_reservoir_sample(store: Store):
    policy = sampled(per_class_hour=5)
    first, second = [xid(i) for i in range(60)], [xid(i) for i in range(100, 110)]
    for i in range(60):  # one class, one hour
        await ingest(store, exchange_events(i, v2=answer({"id": str(i)}), ts=HOUR + i),
                     keep=policy)
    for i in range(100, 110):  # the next hour: five again
        await ingest(store, exchange_events(i, v2=answer({"id": str(i)}), ts=HOUR + 3600 + i),
                     keep=policy)
    expected = kept_ks(first, 5) | kept_ks(second, 5)
    assert await held(store) == expected
    assert 10 < len(expected) < 40  # about 5 * (1 + ln(60 / 5)) + 5
    [cls] = await store.classes()
    assert cls["count"] == 70 and set(cls["examples"]) <= expected  # examples are held
    assert (await store.summary())["kept"] == len(expected)


async def test_new_and_reopened_classes_are_always_kept(store: Store):
    policy = sampled(per_class_hour=0, matches=0.0)  # nothing kept but what must be
    for i in range(5):
        await ingest(store, exchange_events(i, v2=answer({"id": str(i)}), ts=HOUR + i),
                     keep=policy)
    assert await held(store) == {xid(0)}  # the one that made the class new
    [cls] = await store.classes()
    await store.set_class_status(cls["signature"], "fixed")
    for i in range(5, 9):
        await ingest(store, exchange_events(i, v2=answer({"id": str(i)}), ts=HOUR + i),
                     keep=policy)
    assert await held(store) == {xid(0), xid(5)}  # and the one that reopened it
    [again] = await store.classes()
    assert again["status"] == "new" and again["reopened"] and again["count"] == 9
    assert again["examples"] == [xid(0), xid(5)]  # the held ones: the dropped are none
    batch = [e for i in range(20, 23)  # a new class, three at once: the first opens it
             for e in exchange_events(i, v2=answer({"id": i, "extra": 1}), ts=HOUR + i)]
    await ingest(store, batch, keep=policy)
    assert await held(store) == {xid(0), xid(5), xid(20)}


async def test_errors_skips_and_expired_exchanges_are_capped_per_route_outcome_and_hour(
        store: Store):
    policy = sampled(per_class_hour=3)
    failed = Answer(None, error="connection refused", latency_ms=1.0)
    errors: dict[str, list[str]] = {"/items/1": [], "/users/1": []}
    for i in range(40):
        path = "/items/1" if i % 2 else "/users/1"
        errors[path].append(xid(i))
        await ingest(store, exchange_events(i, path=path, v2=failed, ts=HOUR + i), keep=policy)
    assert (await store.outcomes())["v2_error"] == 40
    expected = kept_ks(errors["/items/1"], 3) | kept_ks(errors["/users/1"], 3)
    assert await held(store) == expected
    lonely = [xid(i) for i in range(100, 130)]  # V2 never answers: v1_only at the timeout
    await store.apply([e for i in range(100, 130)
                       for e in exchange_events(i, ts=HOUR + i)[:2]])
    assert await store.expire(older_than_ts=HOUR + 1000, keep=policy) == 30
    expected |= kept_ks(lonely, 3)
    assert await held(store) == expected
    assert (await store.outcomes())["v1_only"] == 30
    assert (await store.summary())["kept"] == len(expected) < 40


async def test_a_part_of_a_dropped_exchange_is_never_stored_or_counted_again(store: Store):
    policy = sampled(per_class_hour=1, matches=0.0)
    for i in range(3):
        await ingest(store, exchange_events(i, ts=HOUR + i), keep=policy)
    assert await held(store) == {xid(0)}
    before = await reported(store, ALL_TIME)
    for i in (1, 2):  # each part again, alone and together: re-delivered, or late
        for event in exchange_events(i, ts=HOUR + i):
            assert await ingest(store, [event], keep=policy) == []
        assert await ingest(store, exchange_events(i, ts=HOUR + i), keep=policy) == []
        assert await store.get(xid(i)) is None
    assert await store.expire(older_than_ts=HOUR + 10_000, keep=policy) == 0
    assert await held(store) == {xid(0)}
    assert await reported(store, ALL_TIME) == before
    assert await store.count() == 3
    # an exchange whose answers came first, decided and dropped, then its request: the
    # request is late, and ignored too
    req, resp, cand = exchange_events(3, ts=HOUR + 3)
    assert await ingest(store, [resp, cand], keep=policy) == [xid(3)]
    assert await store.get(xid(3)) is not None  # no request yet: kept (it names the route)
    # V2 answers after the join timeout, for an exchange dropped as v1_only: ignored
    for i in (10, 11):
        await store.apply(exchange_events(i, ts=HOUR + i)[:2])
    await store.expire(older_than_ts=HOUR + 10_000, keep=policy)
    assert await store.get(xid(10)) is not None and await store.get(xid(11)) is None
    assert await ingest(store, [exchange_events(11, ts=HOUR + 11)[2]], keep=policy) == []
    assert await store.outcomes() == {"match": 4, "v1_only": 2}
    assert await ingest(store, [exchange_events(10, ts=HOUR + 10)[2]], keep=policy) == [xid(10)]
    assert await store.outcomes() == {"match": 5, "v1_only": 1}  # a kept one still completes


async def test_the_counts_are_everything_written_whatever_was_dropped(store: Store):
    """Rollups = a recount of every exchange written (kept + dropped), in every window; the
    documents held are counted apart, and are those the store still has."""
    everything = await sibling(store)
    policy = sampled(per_class_hour=2, matches=0.05)
    try:
        for i in range(240):
            ts = T0 + i * 1.5  # six minutes
            v2 = (answer({"id": str(i % 3)}) if i % 5 == 0 else
                  answer({"id": i}, status=503) if i % 7 == 0 else
                  Answer(None, error="timeout") if i % 11 == 0 else None)
            events = exchange_events(i, path=f"/r{i % 3}/1", ts=ts, v2=v2)
            if i % 13 == 0:
                events = events[:2]  # V2 never answers
            await ingest(store, events, keep=policy)
            await ingest(everything, events)
        await store.expire(older_than_ts=T0 + 10_000, keep=policy)
        await everything.expire(older_than_ts=T0 + 10_000)
        docs = await documents(store)
        assert 0 < len(docs) < 120
        assert {x["id"] for x in docs} <= {x["id"] for x in await documents(everything)}
        for w in [*WINDOWS, window(T0 + 120, T0 + 240)]:
            ours, theirs = await reported(store, w), await reported(everything, w)
            assert ours.pop("kept") == recount(docs, w)["kept"], w
            theirs.pop("kept")
            assert ours == theirs, w
        summary = await store.summary()
        assert summary["total"] == 240 and summary["kept"] == len(docs)
    finally:
        await everything.close()


async def test_retention_never_deletes_a_class_s_last_example(store: Store):
    policy = sampled(per_class_hour=3)
    old = time.time() - 10_000
    for i in range(12):  # two classes, long ago
        await ingest(store, exchange_events(i, path=f"/c{i % 2}/1", v2=answer({"id": str(i)}),
                                            ts=old + i), keep=policy)
    classes = {c["signature"] for c in await store.classes()}
    assert len(classes) == 2
    await store.retain(max_age_s=60, max_docs=None)
    docs = await documents(store)
    assert {x["signature"] for x in docs} == classes  # each class has its last example
    assert len(docs) == 2
    assert (await store.summary())["kept"] == 2
    assert await store.count() == 12


async def tombstones(s: Store) -> set[str]:
    if isinstance(s, SQLiteStore):
        async with s.db.execute("SELECT id FROM dropped") as cur:
            return {row[0] async for row in cur}
    assert isinstance(s, MongoStore)
    return {d["_id"] async for d in s.db.dropped.find({}, {"_id": 1})}


async def keep_hours(s: Store) -> set[int]:
    if isinstance(s, SQLiteStore):
        async with s.db.execute("SELECT DISTINCT hour FROM keep_counts") as cur:
            return {row[0] async for row in cur}
    assert isinstance(s, MongoStore)
    return {d["hour"] async for d in s.db.keep_counts.find({}, {"hour": 1})}


async def test_tombstones_and_keep_counters_go_with_the_documents_age_limit(store: Store):
    policy = sampled(matches=0.0)  # the first match of the hour kept, the others dropped
    now = HOUR + 30 * 86400.0
    old, young = now - 20 * 86400, now - 600
    for i in range(6):
        await ingest(store, exchange_events(i, ts=old + i), keep=policy)
        await ingest(store, exchange_events(10 + i, ts=young + i), keep=policy)
    assert await tombstones(store) == {xid(i) for i in (1, 2, 3, 4, 5, 11, 12, 13, 14, 15)}
    assert len(await keep_hours(store)) == 2
    await store.retain(max_age_s=14 * 86400, now=now)
    assert await tombstones(store) == {xid(i) for i in (11, 12, 13, 14, 15)}
    assert await keep_hours(store) == {int(young // 3600 * 3600)}
    assert await held(store) == {xid(10)} and await store.count() == 12


async def test_tombstones_go_once_the_streams_horizon_passes_their_latest_part(store: Store):
    """forget_tombstones(t): the tombstones of exchanges whose latest part came before t go
    (no part of them is left in the streams: shadow.horizon), in batches; those decided without
    V1's answer stay (it may still come), until the documents' age limit."""
    store.delete_batch = 2  # type: ignore[attr-defined]
    policy = sampled(per_class_hour=0, matches=0.0)  # only what must be kept is kept
    for i in range(6):  # matches 10 s apart: the first of the route this hour is kept
        await ingest(store, exchange_events(i, ts=HOUR + 10 * i), keep=policy)
    req, resp, cand = exchange_events(6, ts=HOUR + 1)
    assert isinstance(cand, CandidateEvent)
    late = CandidateEvent(cand.id, HOUR + 500.0, cand.answer)  # V2 answered 500 s later
    await ingest(store, [req, resp, late], keep=policy)
    await store.apply(exchange_events(7, ts=HOUR + 2)[:2])  # V2 never answers: v1_only
    await store.apply(exchange_events(8, ts=HOUR + 3)[::2])  # V1's answer missing: v1_missing
    skip = CandidateEvent(xid(9), HOUR + 4, Answer(None, skipped="method_not_replayed"))
    await store.apply([exchange_events(9, ts=HOUR + 4)[0], skip])  # skipped, without V1's
    assert await store.expire(older_than_ts=HOUR + 100, keep=policy) == 3
    assert await held(store) == {xid(0)}
    assert await tombstones(store) == {xid(i) for i in range(1, 10)}
    counted = await reported(store, ALL_TIME)

    assert await store.forget_tombstones(HOUR + 25) == 3  # parts before: 10, 20; 7's at 2.01
    assert await tombstones(store) == {xid(i) for i in (3, 4, 5, 6, 8, 9)}
    assert await store.forget_tombstones(HOUR + 25) == 0
    assert await store.forget_tombstones(HOUR + 499) == 3  # 6's latest part is V2's, at 500
    assert await tombstones(store) == {xid(i) for i in (6, 8, 9)}
    assert await store.forget_tombstones(HOUR + 10_000) == 1
    assert await tombstones(store) == {xid(8), xid(9)}  # V1's answer may still come
    # a late V1 answer of those is still ignored; the age limit takes them
    assert await ingest(store, [exchange_events(8, ts=HOUR + 3)[1]], keep=policy) == []
    assert await reported(store, ALL_TIME) == counted
    await store.retain(max_age_s=86400, now=HOUR + 2 * 86400)
    assert await tombstones(store) == set()
