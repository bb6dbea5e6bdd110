"""A store written before rollups is migrated when it is opened: its exchanges are counted
into the rollups once (in batches, with progress lines), and every report then says what a
store written with rollups from the start says."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path

import pytest

from comparer.store import Store
from comparer.stores import mongo
from comparer.stores.mongo import MongoStore
from comparer.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from shadow.errors import StoreError
from tests.test_store_contract import (
    WINDOWS,
    counted_only,
    documents,
    recount,
    reported,
    seed_minutes,
)

OLD_SCHEMA = (Path(__file__).parent / "data" / "sqlite_store_v0.sql").read_text()


async def reports(store: Store) -> list[object]:
    return [(counted_only(await store.summary(w)), await store.classes(window=w),
             await store.route_evidence(w)) for w in WINDOWS]


def old_sqlite_store(path: Path, written: Path) -> None:
    """A store as the schema before rollups made it (its DDL and triggers), holding the
    exchanges and classes of the store at `written`."""
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("ATTACH DATABASE ? AS written", (str(written),))
    for table in ("exchanges", "classes"):  # the columns the old schema has
        columns = ", ".join(row[1] for row in db.execute(f"PRAGMA main.table_info({table})"))
        db.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM written.{table}")
    db.commit()
    assert db.execute("SELECT sum(n) FROM route_stats").fetchone()[0] == 10  # old triggers
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


async def test_an_sqlite_store_from_before_rollups_is_migrated_at_open(tmp_path: Path, caplog):
    reference = SQLiteStore(f"sqlite:///{tmp_path / 'new.db'}")
    await reference.open()
    await seed_minutes(reference)
    expected = await reports(reference)
    await reference.close()
    old_sqlite_store(tmp_path / "old.db", tmp_path / "new.db")

    store = SQLiteStore(f"sqlite:///{tmp_path / 'old.db'}")
    store.migrate_batch = 3  # 10 exchanges: four steps
    with caplog.at_level(logging.INFO, logger="shadow.store"):
        await store.open()
    try:
        progress = [r.getMessage() for r in caplog.records if r.name == "shadow.store"]
        assert "counting its 10 exchanges into the rollups" in progress[0]
        assert [p.split(": ")[-1] for p in progress[1:]] == \
            ["3/10 exchanges counted", "6/10 exchanges counted", "9/10 exchanges counted",
             "10/10 exchanges counted"]
        async with store.db.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone())[0] == SCHEMA_VERSION  # type: ignore[index]
        async with store.db.execute("SELECT name FROM sqlite_master WHERE name IN "
                                    "('route_stats', 'exchanges_delete')") as cur:
            assert await cur.fetchall() == []  # the old aggregates and triggers are gone
        assert await reports(store) == expected
        docs = await documents(store)
        for w in WINDOWS:
            assert await reported(store, w) == recount(docs, w)
        assert await store.retain(max_age_s=1, max_docs=None) == 7  # not classes' last examples
        assert await reports(store) == expected  # no old trigger takes counts away
    finally:
        await store.close()
    caplog.clear()
    again = SQLiteStore(f"sqlite:///{tmp_path / 'old.db'}")
    with caplog.at_level(logging.INFO, logger="shadow.store"):
        await again.open()  # migrated once: nothing to do
    assert await reports(again) == expected and not caplog.records
    await again.close()


async def test_an_sqlite_store_from_a_newer_shadow_is_refused(tmp_path: Path):
    path = tmp_path / "newer.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    store = SQLiteStore(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="written by a newer shadow .*upgrade shadow"):
        await store.open()


async def test_a_mongodb_store_from_before_rollups_is_migrated_at_open(caplog):
    from mongomock_motor import AsyncMongoMockClient

    client = AsyncMongoMockClient()
    reference = MongoStore("mongodb://mock/shadow", client=client, database="new")
    await reference.open()
    await seed_minutes(reference)
    expected = await reports(reference)
    old_db = f"old{uuid.uuid4().hex[:8]}"
    for name in ("exchanges", "classes"):  # what a store written before rollups holds
        await client[old_db][name].insert_many(await reference.db[name].find({}).to_list(None))

    store = MongoStore("mongodb://mock/shadow", client=client, database=old_db)
    store.migrate_batch = 4
    with caplog.at_level(logging.INFO, logger="shadow.store"):
        await store.open()
    progress = [r.getMessage() for r in caplog.records if r.name == "shadow.store"]
    assert "counting its ~10 exchanges into the rollups" in progress[0]
    assert [p.split(": ")[-1] for p in progress[1:]] == \
        ["4/~10 exchanges counted", "8/~10 exchanges counted", "10 exchanges counted"]
    assert await reports(store) == expected
    assert await store.retain(max_age_s=1, max_docs=None) == 7  # not classes' last examples
    assert await reports(store) == expected
    caplog.clear()
    again = MongoStore("mongodb://mock/shadow", client=client, database=old_db)
    with caplog.at_level(logging.INFO, logger="shadow.store"):
        await again.open()
    assert await reports(again) == expected and not caplog.records


async def test_an_sqlite_store_whose_rollups_had_triggers_loses_them(tmp_path: Path):
    """Schema 1 kept the rollups with triggers on exchanges: left there, they would count
    every write a second time."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'one.db'}")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "one.db")
    db.execute("CREATE TRIGGER x_count_insert AFTER INSERT ON exchanges BEGIN "
               "UPDATE route_counts SET n = n + 1; END")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    await store.open()
    try:
        await seed_minutes(store)
        docs = await documents(store)
        for w in WINDOWS:
            assert await reported(store, w) == recount(docs, w)
    finally:
        await store.close()


async def test_an_sqlite_store_from_before_evidence_counts_its_documents_as_held(tmp_path: Path):
    """Schema 2 had rollups but no documents held (kept), tombstones or keep counters: at
    open, its documents are counted as held, once; its counts stay as they are."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'two.db'}")
    await store.open()
    await seed_minutes(store)
    expected = await reports(store)
    await store.close()
    db = sqlite3.connect(tmp_path / "two.db")
    for table in ("roll_kept", "route_kept", "dropped", "keep_counts"):
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    for _ in range(2):  # the second open finds it done
        await store.open()
        try:
            assert await _user_version(store) == SCHEMA_VERSION
            assert await reports(store) == expected
            docs = await documents(store)
            for w in WINDOWS:
                assert await reported(store, w) == recount(docs, w)  # kept included
            assert (await store.summary())["kept"] == len(docs) == 10
        finally:
            await store.close()


async def _user_version(store: SQLiteStore) -> int:
    async with store.db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_a_mongodb_store_from_before_evidence_counts_its_documents_as_held():
    from mongomock_motor import AsyncMongoMockClient

    client = AsyncMongoMockClient()
    name = f"one{uuid.uuid4().hex[:8]}"
    store = MongoStore("mongodb://mock/shadow", client=client, database=name)
    await store.open()
    await seed_minutes(store)
    expected = await reports(store)
    for held in ("roll_kept", "route_kept"):  # schema 1 had none
        await store.db[held].drop()
    await store.db.meta.update_one({"_id": "schema"}, {"$set": {"version": 1, "heartbeat": 0.0}})
    await store.close()
    again = MongoStore("mongodb://mock/shadow", client=client, database=name)
    await again.open()
    assert (await again.db.meta.find_one({"_id": "schema"}))["version"] == mongo.SCHEMA_VERSION
    assert await reports(again) == expected
    docs = await documents(again)
    for w in WINDOWS:
        assert await reported(again, w) == recount(docs, w)
    assert (await again.summary())["kept"] == len(docs) == 10


async def test_mongodb_fold_journals_of_latency_histograms_are_applied_once_old_ones_too():
    """A compaction that died leaves its journal (the rows it folds, what it adds to the coarser
    row): the next one applies it once. A journal written before histograms (a document per
    latency bucket) is applied as it was written by the migration, before its documents
    become histograms."""
    from mongomock_motor import AsyncMongoMockClient

    client = AsyncMongoMockClient()
    name = f"j{uuid.uuid4().hex[:8]}"
    store = MongoStore("mongodb://mock/shadow", client=client, database=name)
    await store.open()
    hour = 1_700_002_800
    key = {"method": "GET", "route": "/r/{id}", "side": "v1"}
    rows = store.db.roll_latency
    # today's kind: a minute's histogram folded into its hour, then the fold died
    minute = await rows.insert_one({"bucket": hour + 60, **key, "h": {"52": 3, "60": 1}})
    await rows.insert_one({"bucket": hour, **key, "h": {"52": 1}})
    await store.db.folds.insert_one({"_id": "new", "table": "roll_latency",
                                     "ids": [minute.inserted_id],
                                     "incs": [[[hour, *key.values()], {"h": {"52": 3, "60": 1}}]]})
    await store.compact(hour + 3 * 3600, settle_s=0)  # hours stay hours
    assert await store.compact(hour + 3 * 3600, settle_s=0) == 0
    [row] = await rows.find({}).to_list(None)
    assert (row["bucket"], row["h"]) == (hour, {"52": 4, "60": 1})
    # a store from before histograms, with a fold of two minutes into their hour that died
    await rows.drop()
    await rows.create_index([(k, 1) for k in ("bucket", *key, "latency")], unique=True)
    ids = [(await rows.insert_one({"bucket": hour + m, **key, "latency": 52, "n": 2})).inserted_id
           for m in (60, 120)]
    await rows.insert_one({"bucket": hour, **key, "latency": 60, "n": 5})
    await store.db.folds.insert_one({"_id": "old", "table": "roll_latency", "ids": ids,
                                     "incs": [[[hour, *key.values(), 52], [4]]]})
    await store.db.meta.update_one({"_id": "schema"}, {"$set": {"version": 2, "heartbeat": 0.0}})
    await store.close()
    again = MongoStore("mongodb://mock/shadow", client=client, database=name)
    await again.open()
    try:
        [row] = await again.db.roll_latency.find({}).to_list(None)
        assert (row["bucket"], row["h"], "latency" in row) == (hour, {"52": 4, "60": 5}, False)
        assert await again.db.folds.count_documents({}) == 0
    finally:
        await again.close()
