"""Segments and fixes in both stores (#13 items 5 and 3): counts, classes and the verdict's
evidence per segment as well as per route, segments admitted up to a cap by every replica
together, windows that partition each segment's counts exactly, stores from before segments
migrated, and a class marked fixed that waits for the deploy of its fix."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comparer.store import Store
from comparer.stores.mongo import MongoStore
from comparer.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from shadow.compare import compare
from shadow.deploys import deploy, fixed_in
from shadow.keep import KeepPolicy
from shadow.model import Event
from shadow.segments import NONE, OTHER
from shadow.windows import ALL_TIME, Window, window
from tests.test_store_contract import (  # noqa: F401
    HOUR,
    T0,
    answer,
    exchange_events,
    held,
    store,
    twin,
    xid,
)


async def ingest(s: Store, events: list[Event], segment: str = NONE,
                 keep: KeepPolicy | None = None) -> list[str]:
    """Store and compare an exchange's events, its request counted in `segment`."""
    ready = await s.apply(events, None, {e.id: segment for e in events})
    results = [(x.id, compare(x.request, x.v1, x.v2, x.route)) for x in ready
               if x.v1 is not None and x.v2 is not None]
    return await (s.complete(results) if keep is None else s.complete(results, keep=keep))


def wrong(i: int) -> Any:
    return answer({"id": str(i)})  # V2's bug: the id as a string


async def seed_tenants(s: Store) -> None:
    """/items: acme clean (6), globex with a bug (4 of 6); /users: acme only (3 clean); two
    exchanges without a tenant; spread over three minutes."""
    n = 0
    for tenant, path, bad in (("acme", "/items/1", 0), ("globex", "/items/1", 4),
                              ("acme", "/users/1", 0), (NONE, "/items/1", 0)):
        for k in range({"acme": 6 if path == "/items/1" else 3, "globex": 6}.get(tenant, 2)):
            v2 = wrong(n) if k < bad else None
            await ingest(s, exchange_events(n, path=path, ts=T0 + 60 * (k % 3) + k, v2=v2),
                         tenant)
            n += 1


async def test_counts_classes_and_evidence_per_segment(store: Store):  # noqa: F811
    await seed_tenants(store)
    everyone = await store.summary()
    assert everyone["total"] == 17 and "segment" not in everyone
    acme, globex = await store.summary(segment="acme"), await store.summary(segment="globex")
    assert (acme["total"], acme["matched"], acme["mismatched"], acme["segment"]) == \
        (9, 9, 0, "acme")
    assert sorted((r["route"], r["total"]) for r in acme["routes"]) == \
        [("/items/{id}", 6), ("/users/{id}", 3)]
    assert (globex["total"], globex["mismatched"]) == (6, 4)
    assert [r["route"] for r in globex["routes"]] == ["/items/{id}"]  # never on /users
    assert globex["routes"][0]["classes"] == 1 and acme["routes"][0]["classes"] == 0
    none = await store.summary(segment=NONE)
    assert (none["total"], none["segment"]) == (2, "(none)")
    assert (await store.summary(segment="initech"))["total"] == 0

    [cls] = await store.classes()
    assert await store.classes(segment="acme") == []
    [theirs] = await store.classes(segment="globex")
    assert theirs == {**cls, "count": 4}
    [windowed] = await store.classes(window=window(T0, T0 + 60), segment="globex")
    assert windowed["count"] == 2  # k = 0 and 3: the first minute
    assert await store.classes(window=window(T0, T0 + 60), segment="acme") == []

    evidence = {e.route: e for e in await store.route_evidence(segment="globex")}
    assert list(evidence) == ["/items/{id}"]
    assert (evidence["/items/{id}"].compared, evidence["/items/{id}"].matched,
            sum(evidence["/items/{id}"].failing.values())) == (6, 2, 4)
    clean = {e.route: (e.compared, e.matched, e.failing) for e in
             await store.route_evidence(segment="acme")}
    assert clean == {"/items/{id}": (6, 6, {}), "/users/{id}": (3, 3, {})}

    listed = {s["segment"]: s for s in await store.segments()}
    assert {k: (v["total"], v["mismatched"], v["routes"]) for k, v in listed.items()} == \
        {"acme": (9, 0, 2), "globex": (6, 4, 1), "(none)": (2, 0, 1)}
    assert [s["segment"] for s in await store.segments()] == ["acme", "globex", "(none)"]
    assert listed["globex"]["match_rate"] == round(2 / 6, 6)
    first = {s["segment"]: s["total"] for s in await store.segments(window(T0, T0 + 60))}
    assert first == {"acme": 3, "globex": 2, "(none)": 1}


async def test_segments_are_admitted_up_to_the_cap_by_every_replica_together(store: Store):  # noqa: F811
    replica = twin(store)
    await replica.open()
    try:
        a = await store.admit_segments([f"a{i}" for i in range(4)], 5)
        b = await replica.admit_segments([f"b{i}" for i in range(4)], 5)
        assert len(a | b) == 5
        every = [*(f"a{i}" for i in range(4)), *(f"b{i}" for i in range(4)), "new"]
        assert await store.admit_segments(every, 5) == a | b == \
            await replica.admit_segments(every, 5)
        assert await store.admit_segments([NONE, OTHER], 5) == set()  # never take a place
        # routes and segments are counted apart
        assert await store.admit_routes(["/x"], 1) == {"/x"}
    finally:
        await replica.close()


def counted(s: Any) -> tuple[int, int, int, int]:
    return s["total"], s["matched"], s["mismatched"], s["v2_errors"]


TENANTS = [NONE, "acme", "globex", "tok_0123456789abcdef"]
EXCHANGES = st.lists(st.tuples(st.integers(0, 4), st.floats(0, 59.99),  # minute, second
                               st.sampled_from(TENANTS),
                               st.sampled_from(["match", "bug", "other bug", "error"])),
                     min_size=1, max_size=25)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=EXCHANGES, cut=st.integers(0, 5), backend=st.sampled_from(["sqlite", "mongomock"]))
async def test_windows_partition_every_segment_s_counts_exactly(plan, cut, backend) -> None:
    """Split at any minute, a segment's counts before and after add up to its counts over
    both; the segments' counts add up to the route's; each is a recount of what was sent."""
    s: Store
    if backend == "sqlite":
        s = SQLiteStore("sqlite:///:memory:")
    else:
        from mongomock_motor import AsyncMongoMockClient

        s = MongoStore("mongodb://mock/shadow", client=AsyncMongoMockClient(),
                       database=f"p{uuid.uuid4().hex[:8]}")
    await s.open()
    try:
        v2s = {"match": None, "bug": wrong(0), "other bug": answer({"id": 0, "x": 1}),
               "error": answer({"id": 0}, status=500)}
        for i, (minute, second, tenant, kind) in enumerate(plan):
            v1 = answer({"id": 0})
            await ingest(s, exchange_events(i, ts=T0 + 60 * minute + second, v1=v1,
                                            v2=v2s[kind] or v1), tenant)
        split = T0 + 60 * cut
        windows: list[Window] = [window(T0, split), window(split), ALL_TIME]
        for tenant in TENANTS:
            before, after, whole = [await s.summary(w, tenant) for w in windows]
            assert tuple(a + b for a, b in zip(counted(before), counted(after), strict=True)) \
                == counted(whole)
            sent = [p for p in plan if p[2] == tenant]
            assert whole["total"] == len(sent)
            assert before["total"] == sum(1 for p in sent if p[0] < cut)
            for w in windows:  # its classes' counts are its mismatches there
                assert sum(c["count"] for c in await s.classes(window=w, segment=tenant)) == \
                    (await s.summary(w, tenant))["mismatched"]
        for w in windows:
            per = [counted(await s.summary(w, t)) for t in TENANTS]
            assert tuple(map(sum, zip(*per, strict=True))) == counted(await s.summary(w))
            listed = Counter({x["segment"]: x["total"] for x in await s.segments(w)})
            assert sum(listed.values()) == (await s.summary(w))["total"]
    finally:
        await s.close()


async def test_an_sqlite_store_from_before_segments_counts_its_rows_in_segment_none(
        tmp_path: Path) -> None:
    """Schema 3 had no segment: at open, its count rollups are rebuilt with segment '' (none),
    its exchanges and classes get their new columns, and every report stays the same."""
    path = tmp_path / "three.db"
    old = SQLiteStore(f"sqlite:///{path}")
    await old.open()
    await seed_tenants(old)
    await old.close()
    # what schema 3 had: no segment anywhere, no fix deploys (every row in segment none)
    db = sqlite3.connect(path)
    db.execute("UPDATE exchanges SET segment = NULL")
    db.execute("DELETE FROM segments")
    for table, key in (("route_counts", "method, route, outcome, signature"),
                       ("roll_counts", "bucket, method, route, outcome, signature")):
        db.execute(f"CREATE TABLE old AS SELECT {key}, sum(n) AS n, sum(stale) AS stale "
                   f"FROM {table} GROUP BY {key}")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"CREATE TABLE {table} ({key}, n INTEGER NOT NULL, stale INTEGER NOT NULL, "
                   f"PRIMARY KEY ({key})) WITHOUT ROWID")
        db.execute(f"INSERT INTO {table} SELECT * FROM old")
        db.execute("DROP TABLE old")
    for column in ("segment",):
        db.execute(f"ALTER TABLE exchanges DROP COLUMN {column}")
    for column in ("fixed_in", "reopened_after"):
        db.execute(f"ALTER TABLE classes DROP COLUMN {column}")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()

    for _ in range(2):  # the second open finds it done
        await old.open()
        try:
            async with old.db.execute("PRAGMA user_version") as cur:
                assert (await cur.fetchone())[0] == SCHEMA_VERSION  # type: ignore[index]
            assert [(x["segment"], x["total"]) for x in await old.segments()] == \
                [("(none)", 17)]
            assert (await old.summary())["total"] == 17
            assert (await old.summary(segment=NONE))["total"] == 17
            assert (await old.summary(window(T0, T0 + 60), NONE))["total"] == 6
            assert [c["count"] for c in await old.classes(segment=NONE)] == [4]
        finally:
            await old.close()
    await old.open()
    try:  # and it counts per segment from now on
        await ingest(old, exchange_events(100, ts=T0 + 5, v2=wrong(100)), "acme")
        assert (await old.summary(segment="acme"))["mismatched"] == 1
        assert [c["count"] for c in await old.classes(segment="acme")] == [1]
        assert (await old.summary(segment=NONE))["total"] == 17
    finally:
        await old.close()


async def test_a_mongodb_store_from_before_segments_counts_its_rows_in_segment_none() -> None:
    from mongomock_motor import AsyncMongoMockClient

    client: Any = AsyncMongoMockClient()
    name = f"s{uuid.uuid4().hex[:8]}"
    before = MongoStore("mongodb://mock/shadow", client=client, database=name)
    await before.open()
    await seed_tenants(before)
    # what a store from before segments holds: count rows without one, unique without it
    for coll in ("roll_counts", "route_counts"):
        rows = await before.db[coll].find({}).to_list(None)
        await before.db[coll].drop()
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            key = tuple(r.get(f) for f in ("bucket", "method", "route", "outcome", "signature"))
            doc = merged.setdefault(key, {**{k: v for k, v in r.items()
                                             if k not in ("_id", "segment", "n", "stale")},
                                          "n": 0, "stale": 0})
            doc["n"] += r["n"]
            doc["stale"] += r["stale"]
        await before.db[coll].insert_many(list(merged.values()))
        fields = ["bucket", "method", "route", "outcome", "signature"]
        if coll == "route_counts":
            fields = fields[1:]
        await before.db[coll].create_index([(f, 1) for f in fields], unique=True)
    await before.close()
    again = MongoStore("mongodb://mock/shadow", client=client, database=name)
    await again.open()
    try:
        assert [(x["segment"], x["total"]) for x in await again.segments()] == [("(none)", 17)]
        assert (await again.summary(window(T0, T0 + 60), NONE))["total"] == 6
        assert "bucket_1_method_1_route_1_outcome_1_signature_1" not in \
            await again.db.roll_counts.index_information()
        await ingest(again, exchange_events(100, ts=T0 + 5, v2=wrong(100)), "acme")
        await ingest(again, exchange_events(101, ts=T0 + 6, v2=wrong(101)), NONE)
        assert (await again.summary(window(T0, T0 + 60), "acme"))["mismatched"] == 1
        assert (await again.summary(window(T0, T0 + 60), NONE))["total"] == 7
    finally:
        await again.close()


async def test_a_class_marked_fixed_reopens_only_after_the_deploy_of_its_fix(store: Store):  # noqa: F811
    for i in range(3):
        await ingest(store, exchange_events(i, v2=wrong(i), ts=HOUR + i))
    [cls] = await store.classes()
    release = deploy("D1", HOUR + 600, "v2", "2.5")
    await store.add_deploy(release)
    marked = await store.set_class_status(cls["signature"], "fixed", fixed_in=fixed_in(release))
    assert marked is not None and marked["fixed_in"] == {"id": "D1", "version": "2.5",
                                                         "ts": HOUR + 600}
    # compared late, received before the fix went live: expected, the class stays fixed
    await ingest(store, exchange_events(3, v2=wrong(3), ts=HOUR + 599))
    [still] = await store.classes()
    assert (still["status"], still["count"], still["reopened"]) == ("fixed", 4, False)
    # received after it: the fix did not work
    await ingest(store, exchange_events(4, v2=wrong(4), ts=HOUR + 601))
    [again] = await store.classes()
    assert (again["status"], again["reopened"], again["fixed_in"]) == ("new", True, None)
    assert again["reopened_after"] == {"id": "D1", "version": "2.5", "ts": HOUR + 600}

    # marked fixed in a version not deployed yet: no mismatch reopens it until it is
    await store.set_class_status(cls["signature"], "fixed", fixed_in=fixed_in(None, "2.6"))
    await ingest(store, exchange_events(5, v2=wrong(5), ts=HOUR + 900))
    assert (await store.classes())[0]["status"] == "fixed"
    await store.add_deploy(deploy("D2", HOUR + 1000, "v2", "2.6"))
    assert [d["id"] for d in await store.deploys("v2", version="2.6")] == ["D2"]
    await ingest(store, exchange_events(6, v2=wrong(6), ts=HOUR + 950))  # before it: no
    assert (await store.classes())[0]["status"] == "fixed"
    await ingest(store, exchange_events(7, v2=wrong(7), ts=HOUR + 1001))
    [third] = await store.classes()
    assert third["status"] == "new" and third["reopened_after"] == \
        {"id": None, "version": "2.6", "ts": HOUR + 1000}
    # marked fixed without a deploy: any mismatch reopens it, as before
    await store.set_class_status(cls["signature"], "bug")
    assert (await store.classes())[0]["fixed_in"] is None
    await store.set_class_status(cls["signature"], "fixed")
    await ingest(store, exchange_events(8, v2=wrong(8), ts=HOUR + 5))
    [fourth] = await store.classes()
    assert (fourth["status"], fourth["reopened_after"]) == ("new", None)


async def test_mismatches_expected_before_the_fix_are_not_kept_as_reopenings(store: Store):  # noqa: F811
    """The keep policy keeps the mismatch that reopens a class: not every mismatch of a
    class waiting for the deploy of its fix."""
    policy = KeepPolicy(mode="sampled", per_class_hour=0, matches=0.0)
    await ingest(store, exchange_events(0, v2=wrong(0), ts=HOUR), keep=policy)
    [cls] = await store.classes()
    await store.set_class_status(cls["signature"], "fixed", fixed_in=fixed_in(None, "3.0"))
    for i in range(1, 4):
        await ingest(store, exchange_events(i, v2=wrong(i), ts=HOUR + i), keep=policy)
    assert await held(store) == {xid(0)}
    await store.add_deploy(deploy("D3", HOUR + 100, "v2", "3.0"))
    await ingest(store, exchange_events(9, v2=wrong(9), ts=HOUR + 101), keep=policy)
    assert await held(store) == {xid(0), xid(9)}  # the one that reopened it
