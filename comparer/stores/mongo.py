"""The MongoDB store (motor). Every driver call lives in this module, so moving to
PyMongo's own async client is a one-file change.

One document per exchange id (`_id`); parts are written with conditional upserts
(the first copy of a part wins), completion is atomic (find_one_and_update on an
undecided document), a TTL index enforces the age limit.

Counts live in rollup collections, per minute (roll_counts, roll_latency, roll_status:
indexed by bucket, method, route) and for all time (route_counts, route_latency,
route_status); a latency document holds its key's whole histogram (comparer.histograms:
`h: {"<latency bucket>": n}`, written with $inc). Every write of an exchange reads its state before (atomically, with
find_one_and_update) and adds the difference it made to the rollups with $inc upserts, in
one bulk write per batch; deleting a document changes no count. Without multi-document
transactions the two writes are not atomic: a comparer killed between them loses those
increments (the document is there; a redelivered part finds it written and adds nothing).
Reports read only the rollups.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from comparer import histograms, records
from comparer.timeline import Timeline, frame, shape
from shadow import codec, horizon, keep, model, segments
from shadow.credentials import mask_url
from shadow.deploys import Deploy, FixedIn, deploy, reopens
from shadow.errors import StoreError
from shadow.filters import Filters
from shadow.keep import EVERYTHING, KeepPolicy
from shadow.model import Comparison, Difference, Event, Exchange, RouteKey
from shadow.reports_model import ExchangeSummary, MismatchClass, SegmentSummary, Summary
from shadow.rules import OTHER_ROUTE
from shadow.stats import RouteEvidence
from shadow.windows import ALL_TIME, DAY_S, Window, coarsen, floor_to, fold_marks

log = logging.getLogger("shadow.store")

COMPARED = list(model.DIFFED)
_UNDECIDED = list(model.UNDECIDED)
_DUPLICATE_KEY = 11000
_ROUTES_COUNT = "routes"  # the `meta` document counting the admitted routes
_SEGMENTS_COUNT = "segments"  # the `meta` document counting the admitted segments
_SCHEMA = "schema"  # the `meta` document with the store's schema version
# 1: rollups (a store without the document and with exchanges is older); 2: evidence
# (shadow.keep: documents held per rollup key, tombstones in `dropped`, counters in
# `keep_counts`); 3: one latency histogram per document (comparer.histograms), not one
# document per latency bucket
SCHEMA_VERSION = 3
_HEARTBEAT_S = 120.0  # a migration silent this long died: the next opener starts it again
_FOLDS = "folds"  # the `meta` document with compaction's boundaries per level
_HOUSEKEEPER = "housekeeper"  # the `meta` document naming the process doing housekeeping
_LEASE_S = 300.0  # a housekeeper silent this long died: another one takes over

# each rollup collection and its key fields (a unique index, bucket first when bucketed)
_ROLLUPS = records.ROLLUP_KEYS
_CONTRIBUTION = {f: 1 for f in records.CONTRIBUTION_FIELDS}
_DECIDING = {**_CONTRIBUTION, "v1_ts": 1, "v2_ts": 1}  # and what a tombstone says (_keep)
_BUCKETED = [name for name in _ROLLUPS if name.startswith("roll_")]  # compacted, by bucket

# Keys of JSON objects from the traffic (inside diff values) that BSON or MongoDB refuse:
# a NUL anywhere, a leading `$`, a dot. They are stored percent-escaped (`%` itself too, so
# the escaping reverses exactly) and read back as they were.
_KEY_UNSAFE = re.compile(r"[\x00.%]|^\$")
_KEY_ESCAPED = re.compile(r"%(00|2E|24|25)")


def storable_key(key: str) -> str:
    return _KEY_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", key)


def original_key(key: str) -> str:
    return _KEY_ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), key) if "%" in key else key


def _keys(value: Any, key: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {key(str(k)): _keys(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v, key) for v in value]
    return value


def _diff_doc(diff: list[Difference]) -> list[dict[str, Any]]:
    """A diff as stored: values from the traffic with their object keys made storable."""
    return [{**d, "v1": _keys(d["v1"], storable_key), "v2": _keys(d["v2"], storable_key)}
            for d in codec.storable(codec.diff_to_list(diff))]


def _part_fields(p: records.Part) -> tuple[str, dict[str, Any]]:
    """The part's name in the document (written once: the first copy wins) and its fields."""
    if isinstance(p, records.RequestPart):
        return "request", {"request": codec.pack_part(p.request), "request_id": p.request_id,
                           "method": p.method, "url": p.url, "route": p.route,
                           "segment": p.segment}
    fields = {p.side: codec.pack_part(p.answer), f"{p.side}_status": p.status,
              f"{p.side}_latency_ms": p.latency_ms, f"{p.side}_bucket": p.bucket,
              f"{p.side}_ts": p.ts}
    if p.side == "v2" and p.answer.get("skipped") is not None:
        fields["v2_skipped"] = True  # what expiry asks of a compressed answer
    return p.side, fields


def _diff_from_doc(raw: list[dict[str, Any]] | None) -> list[Difference]:
    return codec.diff_from_list([{**d, "v1": _keys(d.get("v1"), original_key),
                                  "v2": _keys(d.get("v2"), original_key)} for d in raw or []])


def _database_name(url: str) -> str:
    m = re.match(r"^mongodb(?:\+srv)?://[^/]*/([^?]+)", url)
    return m.group(1) if m and m.group(1) else "shadow"


class MongoStore:
    migrate_batch = 10_000  # exchanges counted per step when migrating an older store

    fold_batch = 2000  # rollup rows folded per step (compaction)
    delete_batch = 500  # documents (or rollup rows) deleted per step (retention)
    marks_refresh_s = 5.0  # how stale a writer's copy of compaction's boundaries may be

    def __init__(self, url: str, *, client: Any = None, database: str | None = None) -> None:
        self.url = url
        self._client = client
        self._own_client = client is None
        self.database = database or _database_name(url)
        self._db: Any = None
        self._marks_read: tuple[float, dict[int, int]] | None = None  # (monotonic time, marks)
        self._me = uuid.uuid4().hex  # this handle, as a housekeeper
        # mongomock (the contract suite's in-memory MongoDB) cannot take this pymongo's
        # UpdateOne in bulk_write: there, rollup increments go one by one
        self._bulk = not any(c.__module__.startswith("mongomock") for c in type(client).__mro__)

    async def open(self) -> None:
        if self._db is not None:
            return
        if self._client is None:
            from motor.motor_asyncio import AsyncIOMotorClient

            self._client = AsyncIOMotorClient(self.url, serverSelectionTimeoutMS=5000, tz_aware=True)
        self._db = self._client[self.database]
        x = self._db.exchanges
        try:
            await x.create_index("request_id")
            await x.create_index("ts")
            await x.create_index([("route", 1), ("method", 1)])
            await x.create_index([("outcome", 1), ("_id", -1)])
            await x.create_index("signature")
            if "created_at_1" in await x.index_information():
                # an older shadow's TTL index: retention deletes now, never a class's last example
                await x.drop_index("created_at_1")
            await self._add_segments()
            for name, fields in _ROLLUPS.items():
                if name not in records.HISTOGRAMS:
                    await self._db[name].create_index([(f, 1) for f in fields], unique=True)
            await self._ensure_rollups()
            for name in records.HISTOGRAMS:  # unique once older latency documents are merged
                await self._db[name].create_index([(f, 1) for f in _ROLLUPS[name]], unique=True)
            await self._db.deploys.create_index([("target", 1), ("ts", -1)])
            await self._db.dropped.create_index([("no_v1", 1), ("ts", 1)])  # forget_tombstones
            if await self._db.meta.find_one({"_id": _ROUTES_COUNT}) is None:
                await self._count_existing_routes()
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"cannot open MongoDB store {mask_url(self.url)}: "
                             f"{mask_url(str(e))}") from e

    async def _add_segments(self) -> None:
        """The count rollups of a store written before segments: their rows get segment ''
        (none) and their unique index without a segment goes, so the one with it (created
        next) is the only one. Idempotent: every process opening the store may run it."""
        for name in ("roll_counts", "route_counts"):
            before = "_".join(f"{f}_1" for f in _ROLLUPS[name] if f != "segment")
            if before not in await self._db[name].index_information():
                continue
            await self._db[name].update_many({"segment": {"$exists": False}},
                                             {"$set": {"segment": segments.NONE}})
            with contextlib.suppress(Exception):  # another process dropped it first
                await self._db[name].drop_index(before)

    async def _ensure_rollups(self) -> None:
        """A store written before rollups gets them, counted from its exchanges once, by the
        first process that opens it (the others wait for it)."""
        from pymongo.errors import DuplicateKeyError

        meta = self._db.meta
        while True:
            doc = await meta.find_one({"_id": _SCHEMA})
            if doc is not None and doc.get("version", 0) >= SCHEMA_VERSION:
                return
            now = time.time()
            if doc is None:
                empty = await self._db.exchanges.find_one({}, {"_id": 1}) is None
                try:
                    await meta.insert_one({"_id": _SCHEMA, "version": SCHEMA_VERSION if empty
                                           else 0, "heartbeat": now})
                except DuplicateKeyError:
                    continue  # another process got there first
                if empty:
                    return
            elif await meta.find_one_and_update(  # take over a migration that died
                    {"_id": _SCHEMA, "version": {"$lt": SCHEMA_VERSION},
                     "heartbeat": {"$lt": now - _HEARTBEAT_S}},
                    {"$set": {"heartbeat": now}}) is None:
                log.info("MongoDB store %s: another process is counting its exchanges into "
                         "the rollups; waiting", self.database)
                await asyncio.sleep(2.0)
                continue
            version = 0 if doc is None else doc.get("version", 0)
            if version < 2:  # counted already (schema 1): its documents only need counting as held
                await self._count_existing(held_only=version >= 1)
            if version >= 1:  # its latency documents, one per latency bucket (schema 3)
                await self._latency_histograms()
            await meta.update_one({"_id": _SCHEMA}, {"$set": {"version": SCHEMA_VERSION}})
            return

    async def _count_existing(self, *, held_only: bool = False) -> None:
        """Count every exchange of a store written before rollups into them (`held_only`: a
        store written before evidence: only as documents held), from zero (a migration that
        died left partial counts), in batches, with a progress line each."""
        for name in _ROLLUPS:
            if not held_only or name.endswith("_kept"):
                await self._db[name].delete_many({})
        total = await self._db.exchanges.estimated_document_count()
        log.info("MongoDB store %s: counting its ~%d exchanges into the rollups (once, after "
                 "an upgrade)", self.database, total)
        done = 0
        rollup = records.Rollup()
        async for doc in self._db.exchanges.find({}, _CONTRIBUTION).sort("_id", 1):
            if held_only:
                rollup.hold(doc, +1)
            else:
                rollup.add(doc, +1)
            done += 1
            if done % self.migrate_batch == 0:
                await self._count(rollup)
                rollup = records.Rollup()
                await self._db.meta.update_one({"_id": _SCHEMA},
                                               {"$set": {"heartbeat": time.time()}})
                log.info("MongoDB store %s: %d/~%d exchanges counted", self.database, done,
                         total)
        await self._count(rollup)
        log.info("MongoDB store %s: %d exchanges counted", self.database, done)

    async def _latency_histograms(self) -> None:
        """Schema 3: the latency documents of an older store, one per latency bucket (with a
        `latency` field), become one histogram per key. Each key's histogram is set from
        them, then they are deleted: a migration that dies midway is finished by the next
        opener, never counted twice (no other process writes meanwhile)."""
        async for journal in self.db.folds.find({"table": {"$in": list(records.HISTOGRAMS)}}):
            await self._finish_fold(journal)  # a compaction that died, as it was written
        for name in records.HISTOGRAMS:
            rows, keys = self.db[name], _ROLLUPS[name]
            old = {"latency": {"$exists": True}}
            if await rows.find_one(old, {"_id": 1}) is not None:
                log.info("MongoDB store %s: %s becomes one latency histogram per document "
                         "(once, after an upgrade)", self.database, name)
            key: tuple[Any, ...] | None = None
            group: list[dict[str, Any]] = []
            async for d in rows.find(old).sort([(k, 1) for k in keys]):
                if tuple(d.get(k) for k in keys) != key:
                    await self._merge_latency(name, group)
                    key, group = tuple(d.get(k) for k in keys), []
                group.append(d)
            await self._merge_latency(name, group)
            for index, spec in (await rows.index_information()).items():
                if any(field == "latency" for field, _ in spec["key"]):
                    await rows.drop_index(index)

    async def _merge_latency(self, name: str, group: list[dict[str, Any]]) -> None:
        """One key's older latency documents into its histogram ($set: idempotent), then
        deleted."""
        if not group:
            return
        keys = _ROLLUPS[name]
        h: dict[int, int] = {}
        for d in group:
            h[int(d["latency"])] = h.get(int(d["latency"]), 0) + int(d.get("n") or 0)
        sets = {f"{histograms.FIELD}.{b}": n for b, n in h.items() if n}
        if sets:
            await self.db[name].update_one(
                {**{k: group[0].get(k) for k in keys}, "latency": {"$exists": False}},
                {"$set": sets}, upsert=True)
        await self.db[name].delete_many({"_id": {"$in": [d["_id"] for d in group]}})

    async def _count_existing_routes(self, chunk: int = 1000) -> None:
        """Once, on a store written before the route cap: the routes it holds keep their
        place under it (streamed: there may be many)."""
        from pymongo.errors import BulkWriteError

        async def insert(routes: list[dict[str, Any]]) -> None:
            try:
                await self._db.routes.insert_many(routes, ordered=False)
            except BulkWriteError:
                pass  # another process counted them too

        batch: list[dict[str, Any]] = []
        async for row in self._db.exchanges.aggregate([{"$group": {"_id": "$route"}}]):
            if isinstance(row["_id"], str) and row["_id"] != OTHER_ROUTE:
                batch.append({"_id": row["_id"]})
            if len(batch) >= chunk:
                await insert(batch)
                batch = []
        if batch:
            await insert(batch)
        n = await self._db.routes.count_documents({})
        await self._db.meta.update_one({"_id": _ROUTES_COUNT}, {"$max": {"n": n}}, upsert=True)

    async def close(self) -> None:
        if self._db is not None:  # another process may take over housekeeping at once
            with contextlib.suppress(Exception):
                await self._db.meta.update_one({"_id": _HOUSEKEEPER, "owner": self._me},
                                               {"$set": {"until": 0.0}})
        self._db = None
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    @property
    def db(self) -> Any:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    # ---- writes ----

    async def _upsert_part(self, ident: str, part: str, fields: dict[str, Any],
                           ts: float, rollup: records.Rollup,
                           ) -> tuple[dict[str, Any] | None, dict[str, Any]] | None:
        """Write one part unless the document has it already (the first copy wins), and add
        what it changed to `rollup`. Returns the document's state before and after, if
        written."""
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        try:
            before = await self.db.exchanges.find_one_and_update(
                {"_id": ident, part: None},
                {"$set": codec.storable(fields),
                 "$setOnInsert": {"outcome": model.PENDING, "created_at": datetime.now(UTC)},
                 "$min": {"ts": ts}},
                projection=_CONTRIBUTION, upsert=True, return_document=ReturnDocument.BEFORE)
        except DuplicateKeyError:
            return None  # that part is already stored: the first copy wins
        after = {"outcome": model.PENDING, **(before or {}),
                 **{k: v for k, v in fields.items() if k in _CONTRIBUTION}}
        old_ts = (before or {}).get("ts")
        after["ts"] = ts if old_ts is None else min(old_ts, ts)
        rollup.move(before, after)
        return before, after

    async def _count(self, rollup: records.Rollup) -> None:
        """Add a batch's count changes to the rollups: per minute and all time, one bulk
        write of $inc upserts per collection."""
        from pymongo import UpdateOne

        batches: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for name, rows in rollup.writes().items():
            fields, counts = _ROLLUPS[name], records.ROLLUP_COUNTS[name]
            batches[name] = [(dict(zip(fields, key, strict=True)),
                              {"$inc": dict(zip(counts, by, strict=True))}) for key, by in rows]
        for name, hists in rollup.histograms().items():
            batches[name] = [(dict(zip(_ROLLUPS[name], key, strict=True)),
                              {"$inc": histograms.increments(h)}) for key, h in hists]
        for name, writes in batches.items():
            if writes and self._bulk:
                await self.db[name].bulk_write([UpdateOne(q, u, upsert=True) for q, u in writes],
                                               ordered=False)
            else:
                for q, u in writes:
                    await self.db[name].update_one(q, u, upsert=True)

    async def apply(self, events: list[Event], routes: Mapping[str, str] | None = None,
                    segments: Mapping[str, str] | None = None) -> list[Exchange]:
        rollup = records.Rollup(await self._folded())
        gone = await self._dropped({e.id for e in events})  # decided, document dropped
        created: dict[str, dict[str, Any]] = {}  # documents this batch created: their state
        try:
            for p in records.parts(events, routes, segments):
                if p.id in gone:
                    continue  # a late or re-delivered part: never stored or counted again
                moved = await self._upsert_part(p.id, *_part_fields(p), p.ts, rollup)
                if moved is not None and (moved[0] is None or p.id in created):
                    created[p.id] = moved[1]
            # dropped while this batch wrote (by another replica): what it created goes
            for ident in await self._dropped(set(created)):
                if (await self.db.exchanges.delete_one({"_id": ident})).deleted_count:
                    rollup.move(created[ident], None)
        finally:
            await self._count(rollup)  # what was written is counted, even if a part failed
        ids = list({e.id for e in events})
        if not ids:
            return []
        cursor = self.db.exchanges.find({"_id": {"$in": ids}, "v1": {"$ne": None},
                                         "v2": {"$ne": None}, "outcome": {"$in": _UNDECIDED}})
        return [_exchange(doc) async for doc in cursor]

    async def complete(self, results: list[tuple[str, Comparison]], *,
                       keep: KeepPolicy = EVERYTHING) -> list[str]:
        recorded: list[tuple[str, Comparison]] = []
        routes: dict[str, tuple[str | None, str | None]] = {}
        rollup = records.Rollup(await self._folded())
        now = time.time()
        decided_states: dict[str, dict[str, Any]] = {}
        held: set[str] = set()
        try:
            for ident, c in results:
                decided = {"outcome": c.outcome, "signature": c.signature,
                           "stale": int("stale" in c.flags)}
                before = await self.db.exchanges.find_one_and_update(
                    {"_id": ident, "outcome": {"$in": _UNDECIDED}},
                    {"$set": {**decided, "diff": _diff_doc(c.diff),
                              "diff_paths": [d.path for d in c.diff], "flags": c.flags,
                              "compared_at": now, "replay_delay_ms": c.replay_delay_ms,
                              "noise": _diff_doc(c.noise)}},
                    projection=_DECIDING)
                if before is not None:  # else decided before: a re-delivery, never counted twice
                    recorded.append((ident, c))
                    routes[ident] = (before.get("method"), before.get("route"))
                    decided_states[ident] = {**before, **decided}
                    rollup.move(before, decided_states[ident])
            held = await self._keep(keep, decided_states, rollup, [
                (ident, c.signature) for ident, c in recorded
                if c.outcome == model.MISMATCH and c.signature])
        finally:
            await self._count(rollup)
        t = records.tally(recorded, routes,
                          {ident: s.get("ts") for ident, s in decided_states.items()})
        for (method, route), n in t.noise_observed.items():
            await self.db.noise_observed.update_one({"method": method, "route": route},
                                                    {"$inc": {"n": n}}, upsert=True)
        for (method, route, path), n in t.noise.items():
            await self.db.noise.update_one({"method": method, "route": route, "path": path},
                                           {"$inc": {"n": n}}, upsert=True)
        for rule, n in t.rule_hits.items():
            await self.db.rule_stats.update_one({"_id": rule}, {"$inc": {"suppressed": n}},
                                                upsert=True)
        for hit in t.classes:  # a class's examples: documents held
            await self._count_class(hit if hit.example in held else
                                    dataclasses.replace(hit, example=None), now)
        return [ident for ident, _ in recorded]

    async def _dropped(self, ids: set[str]) -> set[str]:
        """Of `ids`, the exchanges decided whose documents the keep policy dropped."""
        if not ids:
            return set()
        return {d["_id"] async for d in self.db.dropped.find({"_id": {"$in": sorted(ids)}},
                                                            {"_id": 1})}

    async def _keep(self, policy: KeepPolicy, decided: dict[str, dict[str, Any]],
                    rollup: records.Rollup, hits: list[tuple[str, str]]) -> set[str]:
        """The keep policy (shadow.keep) on exchanges just decided (`decided`: their states
        now, by id): each document it does not keep gets a tombstone in `dropped`, then is
        deleted, and is no longer held (`rollup`); its counts stay. `hits`: the mismatches
        decided, in order (exchange id, signature). Returns the ids whose documents are kept."""
        from pymongo.errors import BulkWriteError

        if policy.keeps_all or not decided:
            return set(decided)
        signatures = sorted({sig for _, sig in hits})
        found = await self.db.classes.find({"_id": {"$in": signatures}},
                                           {"status": 1, "fixed_in": 1}).to_list(None) \
            if signatures else []
        book = {d["_id"]: d.get("status", model.CLASS_NEW) for d in found}
        fixed = {d["_id"]: (d.get("fixed_in"), await self._fix_due(d.get("fixed_in")))
                 for d in found if d.get("status") == model.CLASS_FIXED}
        opens = keep.openers(records.reopening(
            hits, fixed, {ident: s.get("ts") for ident, s in decided.items()}), book)
        items = [keep.Decided(ident, s.get("ts"), s.get("method"), s.get("route"), s["outcome"],
                              s.get("signature"), ident in opens) for ident, s in decided.items()]
        seen = {key: await self._seen(key, n) for key, n in keep.groups(items).items()}
        choice = keep.choose(policy, items, seen)
        gone = [ident for ident in decided if ident not in choice.kept]
        if gone:
            try:  # the tombstones first: a document is never gone without one
                await self.db.dropped.insert_many([_tombstone(ident, decided[ident])
                                                   for ident in gone], ordered=False)
            except BulkWriteError:
                pass  # some were there already (a retried batch)
            await self.db.exchanges.delete_many({"_id": {"$in": gone}})
            for ident in gone:
                rollup.forget(decided[ident])
        return choice.kept

    async def _seen(self, key: keep.GroupKey, n: int) -> int:
        """Add `n` exchanges to a keep counter (atomically, across replicas): how many it
        had counted before them."""
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        hour, grp = key
        for attempt in range(2):
            try:
                doc = await self.db.keep_counts.find_one_and_update(
                    {"_id": f"{hour} {grp}"}, {"$inc": {"n": n}, "$setOnInsert": {"hour": hour}},
                    upsert=True, return_document=ReturnDocument.AFTER)
                return int(doc["n"]) - n
            except DuplicateKeyError:  # two replicas created it at once: it is there now
                if attempt:
                    raise
        return 0

    async def _fix_due(self, fixed: FixedIn | None) -> float | None:
        """When the deploy a class marked fixed expects its fix in went live: its time, or
        the first V2 deploy marked with its version (None: not yet, or no deploy)."""
        if fixed is None or fixed.get("ts") is not None:
            return None if fixed is None else fixed["ts"]
        if not fixed.get("version"):
            return None
        first = await self.db.deploys.find({"target": "v2", "version": fixed["version"]}) \
            .sort("ts", 1).limit(1).to_list(1)
        return float(first[0]["ts"]) if first else None

    async def _count_class(self, hit: records.ClassHit, now: float) -> None:
        classes = self.db.classes
        marked = await classes.find_one({"_id": hit.signature, "status": model.CLASS_FIXED},
                                        {"fixed_in": 1})
        if marked is not None:  # reopened by a mismatch received once its fix was live
            fixed = marked.get("fixed_in")
            due = await self._fix_due(fixed)
            if reopens(fixed, due, hit.ts):
                await classes.update_one(
                    {"_id": hit.signature, "status": model.CLASS_FIXED},
                    {"$set": {"status": model.CLASS_NEW, "reopened_at": now, "fixed_in": None,
                              "reopened_after": None if fixed is None else {**fixed, "ts": due}}})
        await classes.update_one(
            {"_id": hit.signature},
            {"$inc": {"count": 1}, "$max": {"last_seen": now}, "$min": {"first_seen": now},
             "$push": {"examples": {"$each": [hit.example] if hit.example else [],
                                    "$slice": records.MAX_EXAMPLES}},
             "$setOnInsert": {"method": hit.method, "route": hit.route, "paths": hit.paths,
                              "status": model.CLASS_NEW, "ticket": None, "note": None,
                              "reopened_at": None}},
            upsert=True)

    async def expire(self, older_than_ts: float, *, keep: KeepPolicy = EVERYTHING) -> int:
        expired = 0
        rollup = records.Rollup(await self._folded())
        decided: dict[str, dict[str, Any]] = {}
        try:
            for rule in records.EXPIRY:
                query: dict[str, Any] = {"outcome": model.PENDING, "ts": {"$lt": older_than_ts},
                                         "v1": {"$ne": None} if rule.v1 else None}
                if rule.v2 is not None:
                    query["v2"] = {"$ne": None} if rule.v2 else None
                if rule.v2_skipped:  # stored compressed (v2_skipped) or, before, as a document
                    query["$or"] = [{"v2_skipped": True},
                                    {"v2.skipped": {"$exists": True, "$ne": None}}]
                found = [d["_id"] async for d in self.db.exchanges.find(query, {"_id": 1})]
                for ident in found:  # one by one: each one's count moves from its state before
                    before = await self.db.exchanges.find_one_and_update(
                        {**query, "_id": ident}, {"$set": {"outcome": rule.outcome}},
                        projection=_DECIDING)
                    if before is not None:
                        decided[ident] = {**before, "outcome": rule.outcome}
                        rollup.move(before, decided[ident])
                        expired += 1
            await self._keep(keep, decided, rollup, [])
        finally:
            await self._count(rollup)
        return expired

    async def admit_routes(self, routes: list[str], max_routes: int) -> set[str]:
        return await self._admit("routes", _ROUTES_COUNT, records.routes_to_admit(routes),
                                 max_routes)

    async def admit_segments(self, names: list[str], max_segments: int) -> set[str]:
        return await self._admit("segments", _SEGMENTS_COUNT, segments.to_admit(names),
                                 max_segments)

    async def _admit(self, collection: str, counter: str, wanted: list[str], cap: int,
                     ) -> set[str]:
        """Of `wanted`, the names `collection` holds, and new ones it takes while the `meta`
        document `counter` counts fewer than `cap` (atomically, across every process)."""
        from pymongo.errors import DuplicateKeyError

        if not wanted:
            return set()
        known = {d["_id"] async for d in self.db[collection].find({"_id": {"$in": wanted}},
                                                                 {"_id": 1})}
        for name in wanted:
            if name in known:
                continue
            try:  # take a slot: fails (duplicate _id) once `cap` are taken
                await self.db.meta.find_one_and_update(
                    {"_id": counter, "n": {"$lt": cap}}, {"$inc": {"n": 1}}, upsert=True)
            except DuplicateKeyError:
                break  # full: the rest count as the overflow
            try:
                await self.db[collection].insert_one({"_id": name})
            except DuplicateKeyError:  # another process admitted it meanwhile: give back the slot
                await self.db.meta.update_one({"_id": counter}, {"$inc": {"n": -1}})
            known.add(name)
        return known

    # ---- housekeeping: compaction and retention, off the ingest path ----

    async def _lead(self) -> bool:
        """Whether this handle does the housekeeping now: one process at a time (a lease in
        `meta`, taken over once its holder has been silent for _LEASE_S)."""
        from pymongo.errors import DuplicateKeyError

        now = time.time()
        try:
            await self.db.meta.find_one_and_update(
                {"_id": _HOUSEKEEPER, "$or": [{"owner": self._me}, {"until": {"$lt": now}}]},
                {"$set": {"owner": self._me, "until": now + _LEASE_S}}, upsert=True)
        except DuplicateKeyError:
            return False  # another process holds it
        return True

    async def _marks(self, field: str) -> dict[int, int]:
        """Compaction's boundaries per span: `published` (reports, writes) or `folded`."""
        doc = await self.db.meta.find_one({"_id": _FOLDS}) or {}
        return {int(span): int(level[field]) for span, level in doc.get("levels", {}).items()}

    async def _folded(self) -> dict[int, int]:
        """Where writes count an exchange: in the coarser bucket before compaction's
        published boundaries, as read at most `marks_refresh_s` ago (compaction folds only
        below boundaries published longer ago than that)."""
        now = time.monotonic()
        if self._marks_read is None or now - self._marks_read[0] >= self.marks_refresh_s:
            self._marks_read = (now, await self._marks("published"))
        return self._marks_read[1]

    async def resolve(self, window: Window) -> Window:
        if window.all_time:
            return window
        return coarsen(window, await self._marks("published"))

    async def compact(self, now: float | None = None, *, settle_s: float = 60.0) -> int:
        """Fold the rollups' old rows into 10 minutes, hours and days
        (shadow.windows.FOLDS), a batch at a time, each through a journal (`folds`) so that a
        compaction that dies is finished by the next one, never counted twice. `settle_s`
        must exceed `marks_refresh_s`. Returns the rows folded."""
        if not await self._lead():
            return 0
        now = time.time() if now is None else now
        async for journal in self.db.folds.find({}):  # left by a compaction that died
            await self._finish_fold(journal)
        levels = (await self.db.meta.find_one({"_id": _FOLDS}) or {}).get("levels", {})
        todo: dict[int, tuple[int, int]] = {}
        for span, target in fold_marks(now).items():
            level = levels.setdefault(str(span), {"published": 0, "published_at": 0.0,
                                                  "settled": 0, "folded": 0})
            at = level["published_at"]
            if target > level["published"] and now - at >= settle_s:
                level.update(settled=level["published"], published=target, published_at=now)
            end = level["published"] if now - level["published_at"] >= settle_s \
                else level["settled"]
            todo[span] = (int(level["folded"]), int(end))
        await self.db.meta.update_one({"_id": _FOLDS}, {"$set": {"levels": levels}}, upsert=True)
        self._marks_read = None
        folded, floor = 0, 0
        for span, (start, end) in sorted(todo.items(), reverse=True):  # days first
            start = max(start, floor)
            floor = end
            if start < end:
                folded += await self._fold_level(span, start, end)
        return folded

    async def _fold_level(self, span: int, start: int, end: int) -> int:
        folded = 0
        for name in _BUCKETED:
            lo = start
            while True:
                found = await self.db[name].find({"bucket": {"$gte": lo, "$lt": end}}) \
                    .sort("bucket", 1).limit(self.fold_batch).to_list(self.fold_batch)
                if not found:
                    break
                last = found[-1]["bucket"]
                # the rows to fold: off a `span` boundary (the rows on one are the coarser ones);
                # the next batch starts with the last bucket seen, or after it when coarse
                lo = last if last % span else last + 1
                rows = [r for r in found if r["bucket"] % span]
                if not rows:
                    continue
                journal = {"_id": uuid.uuid4().hex, "table": name,
                           "ids": [r["_id"] for r in rows], "incs": _fold_increments(name, rows, span)}
                await self.db.folds.insert_one(journal)
                await self._finish_fold(journal)
                folded += len(rows)
                await asyncio.sleep(0)  # the comparer's writes go first
        await self.db.meta.update_one({"_id": _FOLDS}, {"$set": {f"levels.{span}.folded": end}})
        return folded

    async def _finish_fold(self, journal: dict[str, Any]) -> None:
        """Apply one fold: add its increments to the coarser rows, each at most once (the
        row remembers the fold's id until the end), then delete the rows folded. Run again
        on a fold that died midway, it does what is left."""
        from pymongo.errors import DuplicateKeyError

        name, jid, ids = journal["table"], journal["_id"], journal["ids"]
        rows = self.db[name]
        targets = [_fold_target(name, key, by) for key, by in journal["incs"]]
        if await rows.find_one({"_id": {"$in": ids}}, {"_id": 1}) is not None:
            for q, inc in targets:
                try:
                    await rows.update_one({**q, "folds": {"$ne": jid}},
                                          {"$inc": inc, "$push": {"folds": jid}}, upsert=True)
                except DuplicateKeyError:
                    pass  # added before the fold died
            await rows.delete_many({"_id": {"$in": ids}})
        for q, _ in targets:
            await rows.update_one(q, {"$pull": {"folds": jid}})
        await self.db.folds.delete_one({"_id": jid})

    async def retain(self, *, max_age_s: float | None = None, max_docs: int | None = None,
                     max_bytes: int | None = None, rollup_max_age_s: float | None = None,
                     now: float | None = None) -> int:
        if not await self._lead():
            return 0  # another process does it
        now = time.time() if now is None else now
        deleted = 0
        if max_age_s is not None:
            deleted += await self._delete_documents({"ts": {"$lt": now - max_age_s}},
                                                    self.delete_batch)
            await self._forget_dropped(now - max_age_s)
        if max_docs is not None:
            excess = await self.db.exchanges.estimated_document_count() - max_docs
            if excess > 0:
                deleted += await self._delete_oldest(excess)
        if max_bytes is not None and await self.size_bytes() > max_bytes:
            async def enough() -> bool:
                return await self.size_bytes() <= max_bytes

            deleted += await self._delete_oldest(enough=enough)
            if not await enough():
                log.warning("MongoDB store %s holds %d bytes, over --store-max-bytes %d, with "
                            "no document left to delete but each class's last example: raise "
                            "the budget or lower --rollup-max-age-s", self.database,
                            await self.size_bytes(), max_bytes)
        if rollup_max_age_s is not None:
            await self._forget_buckets(floor_to(now - rollup_max_age_s, DAY_S))
        return deleted

    async def forget_tombstones(self, before_ts: float) -> int:
        if not await self._lead():
            return 0  # another process does it
        forgotten = 0
        while True:
            ids = [d["_id"] async for d in self.db.dropped.find(
                {"no_v1": False, "ts": {"$lt": before_ts}}, {"_id": 1}).limit(self.delete_batch)]
            if ids:
                forgotten += (await self.db.dropped.delete_many({"_id": {"$in": ids}})).deleted_count
            if len(ids) < self.delete_batch:
                return forgotten
            await asyncio.sleep(0)

    async def _forget_dropped(self, before_ts: float) -> None:
        """Delete the keep policy's tombstones of exchanges older than `before_ts` (with the
        documents' age limit), oldest first by id (ids are time-ordered: a key range from the
        start, no index on ts), a batch at a time; and its counters of the hours before."""
        after = ""
        while True:
            rows = await self.db.dropped.find({"_id": {"$gt": after}}, {"ts": 1}) \
                .sort("_id", 1).limit(self.delete_batch).to_list(self.delete_batch)
            doomed = [d["_id"] for d in rows if (d.get("ts") or 0) < before_ts]
            if doomed:
                await self.db.dropped.delete_many({"_id": {"$in": doomed}})
            if len(doomed) < len(rows) or len(rows) < self.delete_batch:
                break
            after = rows[-1]["_id"]
            await asyncio.sleep(0)
        await self.db.keep_counts.delete_many({"hour": {"$lt": keep.hour_of(before_ts)}})

    async def _delete_oldest(self, n: int | None = None,
                             enough: Callable[[], Awaitable[bool]] | None = None) -> int:
        """Go over the oldest documents (by id), `n` of them or until `enough()`, deleting
        all but each class's last example, a batch at a time; each batch's edge is found with
        a skip of a batch plus the examples kept, never an OFFSET over the collection."""
        deleted = spared = seen = 0
        step = 1 if enough is not None else self.delete_batch  # the budget: a few first
        while n is None or seen < n:
            if enough is not None and await enough():
                break
            take = step if n is None else min(step, n - seen)
            edge = await self.db.exchanges.find({}, {"_id": 1}).sort("_id", 1) \
                .skip(spared + take - 1).limit(1).to_list(1)
            got = await self._delete_documents(  # no edge: fewer left than the step, all go
                {"_id": {"$lte": edge[0]["_id"]}} if edge else {}, self.delete_batch)
            deleted, spared, seen = deleted + got, spared + take - got, seen + take
            if not edge:
                break
            step = min(step * 2, self.delete_batch)
            await asyncio.sleep(0)  # the comparer's writes go first
        return deleted

    async def _forget_buckets(self, before: int) -> None:
        """Delete the rollups' buckets before `before` (all-time counts stay), in batches."""
        for name in _BUCKETED:
            while True:
                ids = [d["_id"] async for d in self.db[name].find(
                    {"bucket": {"$lt": before}}, {"_id": 1}).limit(self.delete_batch)]
                if not ids:
                    break
                await self.db[name].delete_many({"_id": {"$in": ids}})
                await asyncio.sleep(0)

    async def size_bytes(self) -> int:
        """The database's data and indexes (dbStats dataSize + indexSize: the data before
        WiredTiger's compression, so somewhat more than the disk holds)."""
        try:
            stats = await self.db.command("dbStats")
        except NotImplementedError:  # mongomock (the contract suite): the documents' BSON
            import bson

            total = 0
            for name in await self.db.list_collection_names():
                async for d in self.db[name].find({}):
                    total += len(bson.encode(d))
            return total
        return int(stats.get("dataSize", 0)) + int(stats.get("indexSize", 0))

    async def _delete_documents(self, query: dict[str, Any], chunk: int = 5000) -> int:
        """Delete the exchange documents matching `query`, by id, in batches: they are no
        longer held (records.Rollup.forget), their counts stay; a class's last example (its
        newest document, when no other is left) is never deleted. Returns how many."""
        deleted = 0
        last: str | None = None
        while True:
            q = query if last is None else {"$and": [query, {"_id": {"$gt": last}}]}
            docs = await self.db.exchanges.find(q, _CONTRIBUTION).sort("_id", 1).limit(chunk) \
                .to_list(chunk)
            if not docs:
                return deleted
            by_class: dict[str, list[str]] = {}
            for d in docs:
                if d.get("signature"):
                    by_class.setdefault(d["signature"], []).append(d["_id"])
            spared = {max(ids) for sig, ids in by_class.items()
                      if await self.db.exchanges.find_one(
                          {"signature": sig, "_id": {"$nin": ids}}, {"_id": 1}) is None}
            doomed = [d for d in docs if d["_id"] not in spared]
            if doomed:
                await self.db.exchanges.delete_many({"_id": {"$in": [d["_id"] for d in doomed]}})
                rollup = records.Rollup(await self._folded())
                for d in doomed:
                    rollup.forget(d)
                await self._count(rollup)
                deleted += len(doomed)
            last = docs[-1]["_id"]

    async def set_class_status(self, signature: str, status: str, ticket: str | None = None,
                               note: str | None = None, fixed_in: FixedIn | None = None,
                               ) -> MismatchClass | None:
        changes: dict[str, Any] = {"status": records.checked_status(status),
                                   "updated_at": time.time(),
                                   "fixed_in": fixed_in if status == model.CLASS_FIXED else None}
        if ticket is not None:
            changes["ticket"] = ticket
        if note is not None:
            changes["note"] = note
        result = await self.db.classes.update_one({"_id": signature}, {"$set": changes})
        if result.matched_count == 0:
            return None
        return next(iter(await self.classes(signature=signature)), None)

    async def add_deploy(self, d: Deploy) -> None:
        doc = {"_id": d["id"], "ts": d["ts"], "target": d["target"], "version": d["version"],
               "note": d["note"]}
        await self.db.deploys.update_one({"_id": d["id"]}, {"$setOnInsert": doc}, upsert=True)

    # ---- reads ----

    async def deploys(self, target: str | None = None, limit: int = 100,
                      version: str | None = None) -> list[Deploy]:
        query = {k: v for k, v in (("target", target), ("version", version)) if v is not None}
        cursor = self.db.deploys.find(query).sort([("ts", -1), ("_id", -1)]).limit(int(limit))
        return [deploy(d["_id"], d["ts"], d["target"], d.get("version"), d.get("note"))
                async for d in cursor]

    async def add_suspected(self, observed: dict[tuple[str, str], int],
                            paths: dict[tuple[str, str, str], int]) -> None:
        for (method, route), n in observed.items():
            await self.db.repeats.update_one({"method": method, "route": route},
                                             {"$inc": {"n": n}}, upsert=True)
        for (method, route, path), n in paths.items():
            await self.db.suspected.update_one({"method": method, "route": route, "path": path},
                                               {"$inc": {"n": n}}, upsert=True)

    async def suspected(self) -> dict[RouteKey, list[str]]:
        return records.learned_noise(await self._counted("suspected", "path"),
                                     await self._counted("repeats"))

    async def _counted(self, collection: str, *fields: str) -> list[Any]:
        """(method, route, *fields, n) of each document of a counting collection."""
        return [(d["method"], d["route"], *(d[f] for f in fields), d["n"])
                async for d in self.db[collection].find({})]

    async def rule_hits(self) -> dict[str, int]:
        return {d["_id"]: int(d.get("suppressed", 0))
                async for d in self.db.rule_stats.find({})}

    async def get(self, key: str) -> Exchange | None:
        doc = await self.db.exchanges.find_one({"_id": key})
        if doc is None:
            found = await self.db.exchanges.find({"request_id": key}).sort("_id", -1).limit(1) \
                .to_list(1)
            doc = found[0] if found else None
        return None if doc is None else _exchange(doc)

    async def count(self, window: Window = ALL_TIME) -> int:
        return sum((await self.outcomes(window)).values())

    async def outcomes(self, window: Window = ALL_TIME) -> dict[str, int]:
        rows = await self._rolled("counts", await self.resolve(window), ("outcome",))
        return {o: n for (o,), (n, _) in rows.items() if n > 0}

    async def _rolled(self, kind: str, window: Window, by: tuple[str, ...],
                      match: dict[str, Any] | None = None, *, bounds: bool = False,
                      ) -> dict[tuple[Any, ...], tuple[int, ...]]:
        """Sums of a rollup (counts, latency or status) in the window, grouped `by` these
        fields: (n, stale) for counts, (n,) otherwise, and the first and last bucket when
        `bounds`. All time reads the all-time collection; a window, the buckets in it (by
        the index on bucket)."""
        query = dict(match or {})
        if window.all_time and not bounds:
            name = f"route_{kind}"
        else:
            name = f"roll_{kind}"
            span = {k: v for k, v in (("$gte", window.since), ("$lt", window.until))
                    if v is not None}
            if span:
                query["bucket"] = span
        sums = {"n": {"$sum": "$n"}}
        if kind == "counts":
            sums["stale"] = {"$sum": "$stale"}
        if bounds:
            sums.update(first={"$min": "$bucket"}, last={"$max": "$bucket"})
        pipeline = [{"$match": query},
                    {"$group": {"_id": {f: f"${f}" for f in by}, **sums}}]
        out: dict[tuple[Any, ...], tuple[int, ...]] = {}
        async for row in self.db[name].aggregate(pipeline):
            out[tuple(row["_id"].get(f) for f in by)] = tuple(row[k] for k in sums)
        return out

    async def _latency(self, window: Window) -> dict[tuple[Any, ...], int]:
        """The latency histograms of the window summed per (method, route, side, latency
        bucket): the window's documents (one per time bucket, route and side) unwound on the
        server."""
        query: dict[str, Any] = {}
        name = "route_latency" if window.all_time else "roll_latency"
        span = {k: v for k, v in (("$gte", window.since), ("$lt", window.until)) if v is not None}
        if span:
            query["bucket"] = span
        h = histograms.FIELD
        out: dict[tuple[Any, ...], int] = {}
        async for row in self.db[name].aggregate([
                {"$match": query},
                {"$project": {"method": 1, "route": 1, "side": 1, h: {"$objectToArray": f"${h}"}}},
                {"$unwind": f"${h}"},
                {"$group": {"_id": {"method": "$method", "route": "$route", "side": "$side",
                                    "latency": f"${h}.k"}, "n": {"$sum": f"${h}.v"}}}]):
            k = row["_id"]
            out[(k.get("method"), k.get("route"), k.get("side"), int(k["latency"]))] = row["n"]
        return out

    async def list_exchanges(self, f: Filters) -> tuple[list[ExchangeSummary], str | None]:
        query: dict[str, Any] = dict(records.filter_fields(f))
        if f.path is not None:
            query["diff_paths"] = {"$regex": re.escape(f.path)}
        if f.url is not None:
            query["url"] = {"$regex": re.escape(f.url)}
        if f.since is not None or f.until is not None:
            query["ts"] = {k: v for k, v in (("$gte", f.since), ("$lt", f.until)) if v is not None}
        if f.cursor is not None:
            query["_id"] = {"$lt": f.cursor}
        projection = {"request": 0, "v1": 0, "v2": 0}
        docs = await self.db.exchanges.find(query, projection).sort("_id", -1).limit(f.limit + 1) \
            .to_list(f.limit + 1)
        items = [records.exchange_summary({**d, "id": d["_id"]}) for d in docs[:f.limit]]
        return items, (items[-1]["id"] if len(docs) > f.limit else None)

    async def classes(self, *, signature: str | None = None, window: Window = ALL_TIME,
                      segment: str | None = None) -> list[MismatchClass]:
        counted: dict[tuple[Any, ...], tuple[int, ...]] = {}
        query: dict[str, Any] = {"_id": signature} if signature is not None else {}
        marks = await self._marks("published")
        window = coarsen(window, marks)
        if not window.all_time or segment is not None:
            match: dict[str, Any] = {"outcome": model.MISMATCH, "signature": {"$ne": ""}}
            if signature is not None:
                match["signature"] = signature
            if segment is not None:
                match["segment"] = segment
            counted = await self._rolled("counts", window, ("signature",), match,
                                         bounds=not window.all_time)
            query = {"_id": {"$in": [sig for (sig,) in counted]}}
        docs = await self.db.classes.find(query).to_list(None)
        book = [records.class_doc(d["_id"], d.get("method"), d.get("route"), d.get("paths", []),
                                  d.get("count", 0), d.get("first_seen"), d.get("last_seen"),
                                  d.get("examples", []), d.get("status", model.CLASS_NEW),
                                  d.get("ticket"), d.get("note"), d.get("reopened_at"),
                                  d.get("fixed_in"), d.get("reopened_after"))
                for d in docs]
        if window.all_time and segment is not None:  # one segment's, over all time
            return records.segment_classes([(sig, n) for (sig,), (n, _) in counted.items()],
                                           book)
        if not window.all_time:
            return records.window_classes(
                [(sig, n, first, last) for (sig,), (n, _, first, last) in counted.items()], book,
                marks)
        return sorted(book, key=lambda c: (-c["count"], c["signature"]))

    async def summary(self, window: Window = ALL_TIME, segment: str | None = None) -> Summary:
        def mr(key: tuple[Any, ...]) -> tuple[str, str]:
            return key[0] or "?", key[1] or "?"

        window = await self.resolve(window)
        counts = await self._rolled("counts", window, ("method", "route", "outcome"),
                                    None if segment is None else {"segment": segment})
        latency = await self._latency(window)
        statuses = await self._rolled("status", window,
                                      ("method", "route", "v1_status", "v2_status"))
        held = await self._rolled("kept", window, ("method", "route", "outcome"))
        return records.summary(records.Aggregates(
            [(*mr(k), k[2], n) for k, (n, _) in counts.items() if n > 0],
            [(*mr(k), k[2], k[3], n) for k, n in latency.items() if n > 0],
            [(*mr(k), k[2] or 0, k[3] or 0, n) for k, (n,) in statuses.items() if n > 0],
            await self.classes(window=window, segment=segment),
            stale=sum(stale for _, stale in counts.values()),
            noise=await self._counted("noise", "path"), observed=await self._counted("noise_observed"),
            suspected=await self._counted("suspected", "path"),
            repeats=await self._counted("repeats"),
            kept=[(*mr(k), k[2], n) for k, (n,) in held.items() if n > 0]), window, segment)

    async def route_evidence(self, window: Window = ALL_TIME,
                             segment: str | None = None) -> list[RouteEvidence]:
        window = await self.resolve(window)
        # mismatches per class and V2 errors per kind (their signatures name it)
        match: dict[str, Any] = {"outcome": {"$in": [model.MISMATCH, model.V2_ERROR]}}
        if segment is not None:
            match["segment"] = segment
        rows = await self._rolled("counts", window, ("method", "route", "signature"), match)
        return records.evidence(await self.summary(window, segment),
                                await self.classes(window=window, segment=segment),
                                [(*k, n) for k, (n, _) in rows.items() if n > 0])

    async def segments(self, window: Window = ALL_TIME) -> list[SegmentSummary]:
        rows = await self._rolled("counts", await self.resolve(window),
                                  ("segment", "method", "route", "outcome"))
        return records.segment_list([(k[0] or segments.NONE, k[1] or "?", k[2] or "?", k[3], n)
                                     for k, (n, _) in rows.items() if n > 0])

    async def timeline(self, window: Window = ALL_TIME, step_s: int | None = None, *,
                       now: float | None = None) -> Timeline:
        """The dashboard's time series (comparer.timeline): the window's rollup counts per
        step (default: about 120 points), overall, per route and per mismatch class."""
        window = await self.resolve(window)
        marks = await self._marks("published")
        span = {k: v for k, v in (("$gte", window.since), ("$lt", window.until)) if v is not None}
        by = ("bucket", "method", "route", "outcome", "signature")
        rows = []
        async for row in self.db.roll_counts.aggregate([
                {"$match": {"bucket": span} if span else {}},
                {"$group": {"_id": {f: f"${f}" for f in by}, "n": {"$sum": "$n"}}}]):
            if row["n"] > 0:
                rows.append(tuple(row["_id"].get(f) for f in by) + (row["n"],))
        first = min((r[0] for r in rows), default=None)
        last = max((r[0] for r in rows), default=None)
        lo, hi, step = frame(window, first, last, step_s, time.time() if now is None else now)
        return shape(rows, await self.classes(), window, step, lo, hi, marks)


def _tombstone(ident: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """The tombstone of a dropped exchange (its state as `_DECIDING` reads it): its latest
    part's time (shadow.horizon.latest), its outcome, and whether V1's answer was missing
    (no_v1: it may still come). Tombstones written before say nothing of V1 (no no_v1): they
    go with the documents' age limit."""
    return {"_id": ident, "ts": horizon.latest(state.get("ts"), state.get("v1_ts"),
                                               state.get("v2_ts")),
            "outcome": state["outcome"], "no_v1": state.get("v1_ts") is None}


def _fold_increments(name: str, rows: list[dict[str, Any]], span: int) -> list[list[Any]]:
    """A fold's journal entries, [coarser key, what to add] for rollup rows off a `span`
    boundary: {count: n} (ROLLUP_COUNTS), or a latency histogram {FIELD: {"<bucket>": n}}
    (field names without dots: the journal is a document)."""
    keys = _ROLLUPS[name]
    if name in records.HISTOGRAMS:
        return [[list(k), {histograms.FIELD: {str(b): n for b, n in h.items()}}]
                for k, h in histograms.fold(
                    [(tuple(r.get(k) for k in keys), histograms.from_doc(r.get(histograms.FIELD)))
                     for r in rows], span)]
    counts = records.ROLLUP_COUNTS[name]
    return [[list(k), dict(zip(counts, by, strict=True))] for k, by in records.fold(
        [(tuple(r.get(k) for k in keys), [int(r.get(c) or 0) for c in counts]) for r in rows],
        span)]


def _fold_target(name: str, key: list[Any], by: list[int] | dict[str, Any],
                 ) -> tuple[dict[str, Any], dict[str, int]]:
    """A journal entry's row and $inc. Journals written before schema 3 hold the counts as a
    list, and a latency row's key ends with its latency bucket."""
    if isinstance(by, dict):
        if name in records.HISTOGRAMS:
            return (dict(zip(_ROLLUPS[name], key, strict=True)),
                    histograms.increments(histograms.from_doc(by[histograms.FIELD])))
        return dict(zip(_ROLLUPS[name], key, strict=True)), by
    if name in records.HISTOGRAMS:  # one document per latency bucket then
        return ({**dict(zip(_ROLLUPS[name], key[:-1], strict=True)), "latency": key[-1]},
                {"n": by[0]})
    return (dict(zip(_ROLLUPS[name], key, strict=True)),
            dict(zip(records.ROLLUP_COUNTS[name], by, strict=True)))


def _exchange(d: dict[str, Any]) -> Exchange:
    request, v1, v2 = (codec.unpack_part(d[p]) if d.get(p) else None
                       for p in ("request", "v1", "v2"))
    return Exchange(
        id=d["_id"], request_id=d.get("request_id"), ts=d.get("ts"), method=d.get("method"),
        url=d.get("url"), route=d.get("route"),
        request=codec.request_from_dict(request) if request else None,
        v1=codec.answer_from_dict(v1) if v1 else None,
        v2=codec.answer_from_dict(v2) if v2 else None,
        v1_secondary=codec.answer_from_dict(v2["secondary"])
        if v2 and v2.get("secondary") else None,
        noise=_diff_from_doc(d.get("noise")),
        outcome=d.get("outcome", model.PENDING), diff=_diff_from_doc(d.get("diff")),
        signature=d.get("signature"), flags=d.get("flags") or [],
        compared_at=d.get("compared_at"), v1_ts=d.get("v1_ts"), v2_ts=d.get("v2_ts"),
        replay_delay_ms=d.get("replay_delay_ms"))
