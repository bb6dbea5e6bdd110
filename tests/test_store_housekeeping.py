"""The store contract, housekeeping part (every backend of tests/test_store_contract.py):
rollup compaction (minutes -> 10 minutes -> hours -> days), retention by age, count, disk
budget and rollup age, deletion while the comparer writes, and compressed stored parts."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson

from comparer import histograms
from comparer.store import Store
from comparer.stores.mongo import MongoStore
from comparer.stores.sqlite import SQLiteStore
from shadow import codec
from shadow.model import Answer, CandidateEvent
from shadow.windows import ALL_TIME, DAY_S, HOUR_S, Window, fold_marks, window
from tests import test_store_contract as contract
from tests.test_store_contract import (
    T0,
    answer,
    documents,
    exchange_events,
    ingest,
    recount,
    reported,
    xid,
)

store = contract.store  # the contract suite's fixture: every backend

NOW = T0 + 6 * DAY_S + 5 * HOUR_S + 1234.5  # the compaction's clock
HOUR_MARK = fold_marks(NOW)[HOUR_S]  # hours before here, then 10 minutes, then minutes
DAY_MARK = fold_marks(NOW)[DAY_S]  # days before here
assert HOUR_MARK == (NOW - 2 * 3600) // 3600 * 3600 and DAY_MARK % DAY_S == 0


def counted_only(summary: Any) -> Any:
    """A summary without the documents held (`kept`): what deleting documents never changes."""
    return {**{k: v for k, v in summary.items() if k != "kept"},
            "routes": [{k: v for k, v in r.items() if k != "kept"} for r in summary["routes"]]}


async def seed_week(store: Store, n: int = 150) -> None:
    """`n` exchanges over the five days before NOW: matches, two mismatch classes, V2 errors
    (500), two routes, slow and fast answers; one pending."""
    for i in range(n):
        ts = NOW - 5 * DAY_S + i * (5 * DAY_S / n) + (i % 7) * 13.0
        v2 = (answer({"id": str(i)}) if i % 5 == 0 else
              answer({"id": i, "extra": 1}) if i % 7 == 0 else
              answer({"id": i}, status=500) if i % 11 == 0 else
              answer({"id": i}, latency=50.0 + i))
        await ingest(store, exchange_events(i, path=f"/r{i % 2}/1", v2=v2, ts=ts))
    await store.apply(exchange_events(n, ts=NOW - 60)[:2])  # pending


async def bucket_rows(s: Store, table: str = "roll_counts") -> int:
    if isinstance(s, SQLiteStore):
        async with s.db.execute(f"SELECT count(*) FROM {table}") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
    assert isinstance(s, MongoStore)
    return int(await s.db[table].count_documents({}))


async def unfolded_rows(s: Store, before: int) -> int:
    """Count rows by minute before `before`."""
    if isinstance(s, SQLiteStore):
        async with s.db.execute("SELECT count(*) FROM roll_counts WHERE bucket < ? AND "
                                "bucket % 3600 != 0", (before,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
    assert isinstance(s, MongoStore)
    return len([d async for d in s.db.roll_counts.find({"bucket": {"$lt": before}})
                if d["bucket"] % 3600])


async def everything(store: Store, w: Window) -> tuple[Any, ...]:
    """Every report for the window: its counts (not the window's rounding, said apart)."""
    summary = await store.summary(w)
    bounds = (summary["window"]["since_ts"], summary["window"]["until_ts"])
    classes = [{**c, "first_seen": None, "last_seen": None}
               for c in await store.classes(window=w)]
    return ({**summary, "window": bounds}, classes, await store.route_evidence(w),
            await store.outcomes(w), await store.count(w))


# windows on the boundaries of the coarser buckets they will fall in
ALIGNED = [ALL_TIME, window(DAY_MARK - DAY_S, DAY_MARK), window(None, DAY_MARK),
           window(DAY_MARK), window(DAY_MARK - 2 * DAY_S, HOUR_MARK - 5 * HOUR_S),
           window(HOUR_MARK - 5 * HOUR_S), window(HOUR_MARK + 600, NOW),
           window(DAY_MARK + HOUR_S, HOUR_MARK + 3600)]


async def test_compaction_keeps_every_report_for_aligned_windows_and_all_time(store: Store):
    await seed_week(store)
    docs = await documents(store)
    before = {w: await everything(store, w) for w in ALIGNED}
    rows = {t: await bucket_rows(store, t) for t in ("roll_counts", "roll_latency")}
    assert await store.compact(NOW, settle_s=0) > 0
    assert await bucket_rows(store, "roll_counts") < rows["roll_counts"] / 2  # folded
    assert await bucket_rows(store, "roll_latency") < rows["roll_latency"]  # (many latencies)
    for w in ALIGNED:
        assert await everything(store, w) == before[w], w
        assert await reported(store, w) == recount(docs, w), w
    assert await store.compact(NOW, settle_s=0) == 0  # nothing left to fold
    # the class's sightings in a window: within the (coarser) buckets it was counted in
    w = window(DAY_MARK - DAY_S, DAY_MARK)
    for c in await store.classes(window=w):
        assert DAY_MARK - DAY_S <= (c["first_seen"] or 0) <= (c["last_seen"] or 0) <= DAY_MARK


async def test_windows_after_compaction_are_exact_to_the_coarser_bucket(store: Store):
    await seed_week(store)
    docs = await documents(store)
    await store.compact(NOW, settle_s=0)
    asked = window(HOUR_MARK - 3 * HOUR_S + 1234, HOUR_MARK - HOUR_S + 5)  # inside hours
    got = await store.resolve(asked)
    assert got == Window(HOUR_MARK - 3 * HOUR_S, HOUR_MARK, HOUR_S, HOUR_S)
    summary = await store.summary(asked)
    assert (summary["window"]["since_ts"], summary["window"]["until_ts"]) == (got.since, got.until)
    assert (summary["window"]["since_bucket_s"], summary["window"]["until_bucket_s"]) == (3600, 3600)
    assert await reported(store, got) == recount(docs, got)
    assert await store.count(asked) == sum(1 for x in docs if got.holds(x["ts"])) > 0
    days = await store.resolve(window(DAY_MARK - DAY_S - 5, NOW - 30))  # a day, then minutes
    assert (days.since, days.since_bucket_s, days.until_bucket_s) == \
        (DAY_MARK - 2 * DAY_S, DAY_S, 60)
    assert await store.count(window(NOW - 7 * DAY_S)) == len(docs)
    # a part arriving late for a compacted stretch is counted there, in its hour
    late = HOUR_MARK - 2 * HOUR_S + 100
    assert await ingest(store, exchange_events(999, ts=late, v2=answer({"id": "999"})))
    hour = window(HOUR_MARK - 2 * HOUR_S, HOUR_MARK - HOUR_S)
    assert await reported(store, hour) == recount(await documents(store), hour)
    assert await unfolded_rows(store, HOUR_MARK) == 0  # counted in its hour: nothing to fold


async def test_rows_are_folded_only_once_their_boundary_has_settled(store: Store):
    """A report that read the boundaries just before they moved still finds its minute rows:
    they are folded only `settle_s` after the boundary moved."""
    await seed_week(store, 60)
    docs = await documents(store)
    assert await store.compact(NOW, settle_s=60) == 0  # moved, nothing folded yet
    w = await store.resolve(window(HOUR_MARK - 3 * HOUR_S + 600))
    assert w.since == HOUR_MARK - 3 * HOUR_S  # reports round already
    assert await store.compact(NOW + 30, settle_s=60) == 0
    assert await store.compact(NOW + 61, settle_s=60) > 0
    for w in ALIGNED:
        assert await reported(store, w) == recount(docs, w), w


async def test_retention_by_age_count_and_rollup_age_deletes_documents_but_no_count(
        store: Store):
    await seed_week(store)
    await store.compact(NOW, settle_s=0)
    windows = ALIGNED[:4]
    reports = {w: counted_only(await store.summary(w)) for w in windows}
    total = len(await documents(store))
    classes = {c["signature"] for c in await store.classes()}
    assert await store.retain(max_age_s=2 * DAY_S, now=NOW) > 0
    left = await documents(store)
    old = [x for x in left if x["ts"] < NOW - 2 * DAY_S]
    assert {x["signature"] for x in old} <= classes and len(old) <= len(classes)  # last examples
    assert len(left) < total
    deleted = await store.retain(max_docs=10, now=NOW)
    assert deleted > 0 and 10 <= len(await documents(store)) <= 10 + len(classes)
    newest = sorted(x["id"] for x in left)[-10:]
    assert set(newest) <= {x["id"] for x in await documents(store)}  # the oldest went first
    for w in windows:
        assert counted_only(await store.summary(w)) == reports[w], w
    # rollups: buckets older than the rollup age go (whole days); all time stays
    await store.retain(rollup_max_age_s=NOW - DAY_MARK, now=NOW)
    assert await store.count(window(None, DAY_MARK)) == 0
    assert await store.count(window(DAY_MARK)) == reports[window(DAY_MARK)]["total"]
    assert counted_only(await store.summary()) == reports[ALL_TIME]


async def test_the_disk_budget_deletes_the_oldest_documents_first(store: Store):
    for i in range(40):  # bodies that do not compress: about 4 KB an exchange
        v1 = answer({"blob": os.urandom(1500).hex()})
        await ingest(store, exchange_events(i, v1=v1, v2=v1, ts=T0 + i))
    await ingest(store, exchange_events(40, ts=T0 + 40, v2=answer({"id": "x"})))  # a class
    await ingest(store, exchange_events(41, ts=T0 + 41))
    full = await store.size_bytes()
    counts = counted_only(await store.summary())
    budget = full - 60_000
    deleted = await store.retain(max_bytes=budget, now=T0 + 100)
    assert deleted > 0
    assert await store.size_bytes() <= budget
    left = sorted(x["id"] for x in await documents(store))
    assert left == [xid(i) for i in range(42 - len(left), 42)]  # the newest stay
    assert counted_only(await store.summary()) == counts
    assert await store.retain(max_bytes=1, now=T0 + 100) > 0  # nothing fits: all but...
    assert [x["id"] for x in await documents(store)] == [xid(40)]  # the class's last example
    assert counted_only(await store.summary()) == counts


async def test_deletion_under_concurrent_ingest_loses_no_count(store: Store):
    store.delete_batch = 3  # type: ignore[attr-defined]  # many short transactions, interleaved
    done_ts = T0
    finished = asyncio.Event()
    deleted = 0

    async def retainer() -> None:
        nonlocal deleted
        while not finished.is_set():
            deleted += await store.retain(max_age_s=0.0, now=done_ts)  # decided ones only
            await asyncio.sleep(0)

    task = asyncio.ensure_future(retainer())
    try:
        for batch in range(30):
            events = []
            for i in range(batch * 10, batch * 10 + 10):
                v2 = answer({"id": str(i)}) if i % 4 == 0 else None
                events += exchange_events(i, path=f"/r{i % 3}/1", v2=v2, ts=T0 + i)
            assert len(await ingest(store, events)) == 10
            done_ts = T0 + batch * 10 + 10
            await asyncio.sleep(0)
    finally:
        finished.set()
        await task
    deleted += await store.retain(max_age_s=0.0, now=done_ts)
    assert deleted > 200
    assert await store.count() == 300
    assert await store.outcomes() == {"match": 225, "mismatch": 75}
    summary = await store.summary()
    assert sorted((r["route"], r["total"]) for r in summary["routes"]) == \
        [("/r0/{id}", 100), ("/r1/{id}", 100), ("/r2/{id}", 100)]
    assert await store.count(window(T0, T0 + 120)) == 120


async def stored_parts(s: Store, ident: str) -> list[Any]:
    """The request, V1 and V2 answers as the store holds them."""
    if isinstance(s, SQLiteStore):
        async with s.db.execute("SELECT request, v1, v2 FROM exchanges WHERE id = ?",
                                (ident,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        return list(row)
    assert isinstance(s, MongoStore)
    doc = await s.db.exchanges.find_one({"_id": ident})
    return [doc.get("request"), doc.get("v1"), doc.get("v2")]


async def store_as_before(s: Store, ident: str, parts: list[dict[str, Any] | None]) -> None:
    """Write the parts back as a shadow from before compression did: JSON text (SQLite), a
    document (MongoDB)."""
    if isinstance(s, SQLiteStore):
        await s.db.execute("UPDATE exchanges SET request = ?, v1 = ?, v2 = ? WHERE id = ?",
                           (*(None if p is None else orjson.dumps(p).decode() for p in parts),
                            ident))
    else:
        assert isinstance(s, MongoStore)
        await s.db.exchanges.update_one(
            {"_id": ident}, {"$set": dict(zip(("request", "v1", "v2"), parts, strict=True)),
                             "$unset": {"v2_skipped": ""}})


async def test_stored_parts_are_compressed_and_older_uncompressed_ones_still_read(store: Store):
    body = {"items": [{"id": k, "name": "widget " * 6, "tags": ["a", "b"]} for k in range(40)]}
    bad = Answer(200, [("Content-Type", "application/json"), ("X-Bin", b"caf\xe9".decode(
        "utf-8", "surrogateescape"))], b"\x00\xff" + orjson.dumps(body), 0, latency_ms=3.0)
    await ingest(store, exchange_events(1, v1=answer(body), v2=bad))
    x = await store.get(xid(1))
    assert x is not None and x.v2 == bad and x.outcome == "mismatch"
    stored = await stored_parts(store, xid(1))
    for part in stored:
        assert isinstance(part, bytes) and part[:1] == codec.PACKED
    as_json = orjson.dumps(codec.answer_to_dict(x.v1))  # type: ignore[arg-type]
    assert len(stored[1]) < len(as_json) / 5
    await store_as_before(store, xid(1), [codec.unpack_part(p) for p in stored])
    assert not isinstance((await stored_parts(store, xid(1)))[1], bytes)
    assert await store.get(xid(1)) == x
    # an older V2 skip still expires as skipped (expiry reads inside the stored answer)
    skip = CandidateEvent(xid(2), T0, Answer(None, skipped="method_not_replayed"))
    await store.apply([exchange_events(2, ts=T0)[0], skip])
    await store_as_before(store, xid(2), [codec.unpack_part(p) if p is not None else None
                                          for p in await stored_parts(store, xid(2))])
    assert await store.expire(older_than_ts=T0 + 100) == 1
    assert await store.outcomes(window(T0, T0 + 60)) == {"skipped": 1}


# ---- latency histograms: one row per time bucket, route and side ----

OLD_LATENCY = {  # a row per latency bucket, as shadow kept them before histograms
    "roll_latency": ("bucket", "method", "route", "side"),
    "route_latency": ("method", "route", "side"),
}


async def latency_rows(s: Store, table: str) -> tuple[int, int]:
    """A latency table's rows, and its distinct keys (without the latency bucket)."""
    keys = OLD_LATENCY[table]
    if isinstance(s, SQLiteStore):
        async with s.db.execute(f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT "
                                f"{', '.join(keys)} FROM {table})) FROM {table}") as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])
    assert isinstance(s, MongoStore)
    docs = await s.db[table].find({}).to_list(None)
    return len(docs), len({tuple(d[k] for k in keys) for d in docs})


async def as_rows_per_latency(s: Store) -> None:
    """Rewrite the latency histograms as an older shadow kept them: a row (document) per
    latency bucket; the store's schema version set back to the one before histograms."""
    if isinstance(s, SQLiteStore):
        for table, keys in OLD_LATENCY.items():
            cols = ", ".join(keys)
            rows = [(*row[:-1], b, n) for row in await s._rows(f"SELECT {cols}, h FROM {table}")
                    for b, n in histograms.decode(row[-1]).items()]
            await s.db.execute(f"DROP TABLE {table}")
            await s.db.execute(f"CREATE TABLE {table} ({cols}, latency INTEGER NOT NULL, n INTEGER "
                               f"NOT NULL, PRIMARY KEY ({cols}, latency)) WITHOUT ROWID")
            await s.db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * (len(keys) + 2))})",
                                   rows)
        await s.db.execute("PRAGMA user_version = 3")
        return
    assert isinstance(s, MongoStore)
    for table, keys in OLD_LATENCY.items():
        docs = await s.db[table].find({}).to_list(None)
        await s.db[table].drop()
        await s.db[table].create_index([(k, 1) for k in (*keys, "latency")], unique=True)
        await s.db[table].insert_many([{**{k: d[k] for k in keys}, "latency": int(b), "n": n}
                                       for d in docs for b, n in d["h"].items()])
    await s.db.meta.update_one({"_id": "schema"}, {"$set": {"version": 2, "heartbeat": 0.0}})


async def reopened(s: Store) -> Store:
    await s.close()
    again: Store
    if isinstance(s, SQLiteStore):
        again = SQLiteStore(f"sqlite:///{s.path}")
    else:
        assert isinstance(s, MongoStore)
        again = MongoStore(s.url, client=s._client, database=s.database)
    await again.open()
    return again


def latencies(summary: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    return {(r["method"], r["route"]): (r["v1_latency_ms"], r["v2_latency_ms"])
            for r in summary["routes"]}


async def test_latency_percentiles_are_the_same_after_compaction_and_after_the_migration(
        store: Store):
    """Each (time bucket, route, side) is one histogram row however spread the latencies;
    compaction folds histograms, and a store that kept a row per latency bucket is migrated
    into histograms at open: every window's percentiles stay what they were."""
    for i in range(240):  # four days, two routes, ~50 latency buckets per side and route
        ts = NOW - 4 * DAY_S + i * (4 * DAY_S / 240)
        v1, v2 = answer({"id": i}, latency=1.0 + (i * 37) % 50), \
            answer({"id": i}, latency=2.0 + (i * 53) % 97)
        await ingest(store, exchange_events(i, path=f"/r{i % 2}/1", v1=v1, v2=v2, ts=ts))
    before = {w: latencies(await store.summary(w)) for w in ALIGNED}
    assert all(p is not None for a, b in before[ALL_TIME].values() for p in (*a.values(), *b.values()))
    for table in OLD_LATENCY:
        rows, keys = await latency_rows(store, table)
        assert rows == keys, table  # a histogram per key, not a row per latency bucket
    assert await store.compact(NOW, settle_s=0) > 0
    assert (await latency_rows(store, "roll_latency"))[0] < 240  # folded into hours and days
    for w in ALIGNED:
        assert latencies(await store.summary(w)) == before[w], w
    reports = {w: await everything(store, w) for w in ALIGNED}
    await as_rows_per_latency(store)
    assert (await latency_rows(store, "route_latency"))[0] > 4  # a row per latency bucket
    migrated = await reopened(store)
    try:
        for table in OLD_LATENCY:
            rows, keys = await latency_rows(migrated, table)
            assert rows == keys, table
        for w in ALIGNED:
            assert latencies(await migrated.summary(w)) == before[w], w
            assert await everything(migrated, w) == reports[w], w
        await ingest(migrated, exchange_events(999, ts=NOW - 30, v1=answer({"id": 999}, latency=7.0)))
        assert (await migrated.summary(window(NOW - 60)))["total"] == 1
    finally:
        await migrated.close()
