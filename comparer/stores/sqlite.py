"""The embedded store: one SQLite file in WAL mode, writes batched in transactions.

Counts are rollups (comparer/records.py): per minute of each exchange's ts and for all
time, per route, method, outcome and class, with latency histograms and status pairs.
Every write transaction reads the state of the exchanges it touches before and after its
writes and adds the difference to the rollups, batched, before it commits; deleting an
exchange (retention) changes no count. Reports read only the rollups, for all time or for
a window (a range of minutes), never the exchanges.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiosqlite

from comparer import histograms, records
from comparer.timeline import Timeline, frame, shape
from shadow import codec, horizon, keep, segments
from shadow.deploys import Deploy, FixedIn, deploy
from shadow.errors import StoreError
from shadow.filters import Filters
from shadow.keep import EVERYTHING, KeepPolicy
from shadow.model import (
    CLASS_FIXED,
    CLASS_NEW,
    MISMATCH,
    OUTCOMES,
    PENDING,
    SKIPPED,
    UNDECIDED,
    V1_MISSING,
    V2_ERROR,
    Comparison,
    Event,
    Exchange,
    RouteKey,
)
from shadow.reports_model import ExchangeSummary, MismatchClass, SegmentSummary, Summary
from shadow.rules import OTHER_ROUTE
from shadow.settings import sqlite_path
from shadow.stats import RouteEvidence
from shadow.windows import ALL_TIME, DAY_S, Window, coarsen, floor_to, fold_marks

log = logging.getLogger("shadow.store")


def _sql_set(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_UNDECIDED = _sql_set(UNDECIDED)


# PRAGMA user_version: 0 = before rollups, 1 = rollups kept by triggers (a development
# version), 2 = rollups written with each batch, 3 = evidence (shadow.keep: documents held
# per rollup key, tombstones of dropped documents, the keep policy's counters), 4 = segments
# (shadow.segments: exchanges.segment, a segment key on roll_counts/route_counts, '' for the
# rows before; the segments table) and the deploy a class marked fixed expects its fix in,
# 5 = one latency histogram per row (comparer.histograms) instead of a row per latency bucket,
# and tombstones that say whether V1's answer was missing (the streams' horizon, shadow.horizon,
# deletes the others). Older stores are brought up to date at open.
SCHEMA_VERSION = 5


def _rollup_upsert(table: str) -> str:
    """SQL adding increments to one rollup table (records.ROLLUP_KEYS / ROLLUP_COUNTS)."""
    keys, counts = records.ROLLUP_KEYS[table], records.ROLLUP_COUNTS[table]
    columns = (*keys, *counts)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
            f"({', '.join('?' * len(columns))}) ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in counts))


_ROLLUP_UPSERTS = {table: _rollup_upsert(table) for table in records.ROLLUP_COUNTS}
# a latency histogram merged into its row (shadow_hist_add: comparer.histograms.add)
_HISTOGRAM_UPSERTS = {
    table: (f"INSERT INTO {table} ({', '.join(records.ROLLUP_KEYS[table])}, "
            f"{histograms.FIELD}) VALUES ({', '.join('?' * (len(records.ROLLUP_KEYS[table]) + 1))})"
            f" ON CONFLICT ({', '.join(records.ROLLUP_KEYS[table])}) DO UPDATE SET "
            f"{histograms.FIELD} = shadow_hist_add({histograms.FIELD}, "
            f"excluded.{histograms.FIELD})")
    for table in records.HISTOGRAMS}
_STATE = ", ".join(("id", *records.CONTRIBUTION_FIELDS))  # what an exchange's counts depend on

# triggers of older schemas: before rollups (they took counts away with deleted rows), and
# schema 1's
_OLD_TRIGGERS = ("exchanges_insert", "exchanges_update", "exchanges_delete", "x_count_insert",
                 "x_compared_insert", "x_count_update", "x_compared_update")

# the count rollups, keyed by segment too since schema 4 (rebuilt from older ones at open)
_COUNTS_TABLES = {
    "route_counts": """CREATE TABLE IF NOT EXISTS route_counts (
    method TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL, signature TEXT NOT NULL,
    segment TEXT NOT NULL DEFAULT '', n INTEGER NOT NULL, stale INTEGER NOT NULL,
    PRIMARY KEY (method, route, outcome, signature, segment)) WITHOUT ROWID""",
    "roll_counts": """CREATE TABLE IF NOT EXISTS roll_counts (
    bucket INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL,
    signature TEXT NOT NULL, segment TEXT NOT NULL DEFAULT '', n INTEGER NOT NULL,
    stale INTEGER NOT NULL,
    PRIMARY KEY (bucket, method, route, outcome, signature, segment)) WITHOUT ROWID""",
}
# columns added to older tables (schema 4), with their type
_ADDED_COLUMNS = {"exchanges": (("segment", "TEXT"),),
                  "classes": (("fixed_in", "TEXT"), ("reopened_after", "TEXT"))}

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS exchanges (
    id TEXT PRIMARY KEY,
    request_id TEXT,
    ts REAL,
    method TEXT,
    url TEXT,
    route TEXT,
    request TEXT,
    v1 TEXT,
    v2 TEXT,
    v1_status INTEGER,
    v2_status INTEGER,
    v1_latency_ms REAL,
    v2_latency_ms REAL,
    v1_bucket INTEGER,
    v2_bucket INTEGER,
    v1_ts REAL,
    v2_ts REAL,
    outcome TEXT NOT NULL DEFAULT 'pending',
    diff TEXT,
    diff_paths TEXT,
    signature TEXT,
    flags TEXT,
    compared_at REAL,
    replay_delay_ms REAL,
    stale INTEGER NOT NULL DEFAULT 0,
    noise TEXT,
    segment TEXT)""",
    "CREATE INDEX IF NOT EXISTS exchanges_request_id ON exchanges(request_id)",
    "CREATE INDEX IF NOT EXISTS exchanges_ts ON exchanges(ts)",
    "CREATE INDEX IF NOT EXISTS exchanges_route ON exchanges(route, method)",
    "CREATE INDEX IF NOT EXISTS exchanges_outcome ON exchanges(outcome, id)",
    "CREATE INDEX IF NOT EXISTS exchanges_signature ON exchanges(signature)",
    "CREATE INDEX IF NOT EXISTS exchanges_stale ON exchanges(stale) WHERE stale = 1",
    # all time
    _COUNTS_TABLES["route_counts"],
    # latency histograms (comparer.histograms), one per key
    """CREATE TABLE IF NOT EXISTS route_latency (
    method TEXT NOT NULL, route TEXT NOT NULL, side TEXT NOT NULL, h TEXT NOT NULL,
    PRIMARY KEY (method, route, side)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS route_status (
    method TEXT NOT NULL, route TEXT NOT NULL, v1_status INTEGER NOT NULL,
    v2_status INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, v1_status, v2_status)) WITHOUT ROWID""",
    # by minute (bucket: unix seconds of the minute's start)
    _COUNTS_TABLES["roll_counts"],
    """CREATE TABLE IF NOT EXISTS roll_latency (
    bucket INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, side TEXT NOT NULL,
    h TEXT NOT NULL, PRIMARY KEY (bucket, method, route, side)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS roll_status (
    bucket INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL,
    v1_status INTEGER NOT NULL, v2_status INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (bucket, method, route, v1_status, v2_status)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS noise (
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, path)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS noise_observed (
    method TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS suspected (
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, path)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS repeats (
    method TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route)) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS routes (route TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS segments (segment TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS rule_stats (
    rule TEXT PRIMARY KEY, suppressed INTEGER NOT NULL) WITHOUT ROWID""",
    f"""CREATE TABLE IF NOT EXISTS classes (
    signature TEXT PRIMARY KEY, method TEXT, route TEXT, paths TEXT NOT NULL,
    count INTEGER NOT NULL, first_seen REAL, last_seen REAL, examples TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{CLASS_NEW}', ticket TEXT, note TEXT, reopened_at REAL,
    updated_at REAL, fixed_in TEXT, reopened_after TEXT)""",
    # evidence (shadow.keep): documents held, by minute and for all time (records.Rollup.kept)
    """CREATE TABLE IF NOT EXISTS roll_kept (
    bucket INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (bucket, method, route, outcome)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS route_kept (
    method TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, outcome)) WITHOUT ROWID""",
    # a decided exchange whose document the keep policy dropped: a late or re-delivered part
    # of it is ignored (never stored or counted again). ts: its latest part's time, in whole
    # seconds (shadow.horizon.latest); outcome: its index in model.OUTCOMES; no_v1: 1 when
    # decided without V1's answer (which may still come). Ids are time-ordered: key order is
    # age order. Those with no_v1 = 0 go once the streams' horizon passes them (by ts).
    """CREATE TABLE IF NOT EXISTS dropped (
    id TEXT PRIMARY KEY, ts INTEGER NOT NULL, outcome INTEGER NOT NULL,
    no_v1 INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS dropped_horizon ON dropped (no_v1, ts)",
    # exchanges decided per keep group (shadow.keep.group_key) and hour
    """CREATE TABLE IF NOT EXISTS keep_counts (
    hour INTEGER NOT NULL, grp TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (hour, grp)) WITHOUT ROWID""",
]

# First writer wins for each part: a re-delivered or re-replayed part never rewrites an
# exchange that may already be compared (the diff always describes the stored answers).
_UPSERT_REQUEST = """
INSERT INTO exchanges (id, request_id, ts, method, url, route, request, segment)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, ts = excluded.ts,
    method = excluded.method, url = excluded.url, route = excluded.route,
    request = excluded.request, segment = excluded.segment
WHERE exchanges.request IS NULL
"""
_UPSERT_V1 = """
INSERT INTO exchanges (id, ts, v1, v1_status, v1_latency_ms, v1_bucket, v1_ts)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET ts = coalesce(exchanges.ts, excluded.ts), v1 = excluded.v1,
    v1_status = excluded.v1_status, v1_latency_ms = excluded.v1_latency_ms,
    v1_bucket = excluded.v1_bucket, v1_ts = excluded.v1_ts
WHERE exchanges.v1 IS NULL
"""
_UPSERT_V2 = """
INSERT INTO exchanges (id, ts, v2, v2_status, v2_latency_ms, v2_bucket, v2_ts)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET ts = coalesce(exchanges.ts, excluded.ts), v2 = excluded.v2,
    v2_status = excluded.v2_status, v2_latency_ms = excluded.v2_latency_ms,
    v2_bucket = excluded.v2_bucket, v2_ts = excluded.v2_ts
WHERE exchanges.v2 IS NULL
"""
_COLUMNS = ("id, request_id, ts, method, url, route, request, v1, v2, outcome, diff, signature, "
            "flags, compared_at, v1_ts, v2_ts, replay_delay_ms, noise")
_SUMMARY_COLUMNS = ("id, request_id, ts, method, url, route, outcome, v1_status, v2_status, "
                    "signature, flags, diff, compared_at, replay_delay_ms")
_UPSERT_CLASS = f"""
INSERT INTO classes (signature, method, route, paths, count, first_seen, last_seen, examples,
                     status, updated_at)
VALUES (?, ?, ?, ?, 1, ?, ?, json_array(?), '{CLASS_NEW}', ?)
ON CONFLICT(signature) DO UPDATE SET
    count = count + 1,
    last_seen = max(last_seen, excluded.last_seen),
    examples = CASE WHEN json_array_length(examples) < {records.MAX_EXAMPLES}
                         AND json_extract(excluded.examples, '$[0]') IS NOT NULL
                    THEN json_insert(examples, '$[#]', json_extract(excluded.examples, '$[0]'))
                    ELSE examples END
"""
# When its fix is live: the deploy a class marked fixed expects it in (shadow.deploys.FixedIn:
# its time, or the first V2 deploy marked with its version); NULL while it is not.
_FIX_DUE = ("coalesce(json_extract(classes.fixed_in, '$.ts'), (SELECT min(ts) FROM deploys "
            "WHERE target = 'v2' AND version = json_extract(classes.fixed_in, '$.version')))")
# a class marked fixed reopened: the deploy that should have fixed it kept in reopened_after
_REOPEN_CLASS = f"""
UPDATE classes SET status = '{CLASS_NEW}', reopened_at = ?, reopened_after = ?, fixed_in = NULL
WHERE signature = ? AND status = '{CLASS_FIXED}'
"""


def _text(obj: Any) -> str:
    return codec.dumps(obj).decode("utf-8")


def _skipped(stored: bytes | str | None) -> bool:
    """SQL function shadow_skipped(v2): whether a stored V2 answer is a skip."""
    return stored is not None and codec.unpack_part(stored).get("skipped") is not None


# Compaction's state, one row per coarser span (shadow.windows.FOLDS): reports round to the
# span before `published`, and writes count there in that span's buckets (moved there at
# `published_at`; `settled` is where it was before); rollup rows before `folded` are folded.
# Rows are folded only below a boundary published `settle_s` ago, so a report (or, in
# MongoDB, a writer) that read the boundaries before the move never sees rows folded under it.
_FOLDS_TABLE = """CREATE TABLE IF NOT EXISTS rollup_folds (
    span INTEGER PRIMARY KEY, published INTEGER NOT NULL, published_at REAL NOT NULL,
    settled INTEGER NOT NULL, folded INTEGER NOT NULL)"""
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL file is cut back to this after a checkpoint
_BUCKETED = tuple(t for t in records.ROLLUP_KEYS if t.startswith("roll_"))  # by bucket


# deploy markers (shadow.deploys): a table of their own, created by any version that opens
# the store (it touches nothing else)
_DEPLOYS_TABLE = """CREATE TABLE IF NOT EXISTS deploys (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, target TEXT NOT NULL, version TEXT, note TEXT)"""


class SQLiteStore:
    migrate_batch = 50_000  # exchanges counted per step when migrating an older store
    fold_batch = 2000  # rollup rows folded per transaction (compaction)
    delete_batch = 500  # documents (or rollup buckets) deleted per transaction (retention)

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None
        self._writing = asyncio.Lock()  # one connection: one write transaction at a time
        # compaction and retention's own connection (their reads never hold up the
        # comparer's); their writes take `_writing` too, one short transaction at a time
        self._side: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self._db is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA busy_timeout=10000")
            await self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            await self._db.create_function("shadow_skipped", 1, _skipped, deterministic=True)
            await self._db.create_function("shadow_hist_add", 2, histograms.add,
                                           deterministic=True)
            await self._schema(self._db)
            await self._db.execute(_FOLDS_TABLE)
            await self._db.execute(_DEPLOYS_TABLE)  # apart from the versioned schema: any store
            # routes counted before the routes table existed keep their place under the cap
            await self._db.execute(
                "INSERT OR IGNORE INTO routes (route) SELECT DISTINCT route FROM route_counts "
                "WHERE route NOT IN ('?', ?)", (OTHER_ROUTE,))
        except Exception as e:
            await self.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e

    async def _schema(self, db: aiosqlite.Connection) -> None:
        """Create the tables, or bring a store written by an older shadow up to date (once,
        by whichever process opens it first: the others wait for its lock)."""
        version = await _user_version(db)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"SQLite store {self.path} was written by a newer shadow (store "
                             f"schema {version}; this one knows up to {SCHEMA_VERSION}): "
                             "upgrade shadow, or point --store at another file")
        async with _transaction(db):
            version = await _user_version(db)
            if version < SCHEMA_VERSION:
                async with db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                      "name = 'exchanges'") as cur:
                    existing = await cur.fetchone() is not None
                recount = version == 0 and existing
                for trigger in _OLD_TRIGGERS:
                    await db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
                if recount:  # before rollups: its aggregates are rebuilt from the exchanges
                    for table in ("route_stats", "route_latency", "route_status"):
                        await db.execute(f"DROP TABLE IF EXISTS {table}")
                if existing and version < 4:
                    await _add_segments(db)
                # before schema 5: a row per latency bucket, set aside to become histograms
                set_aside = [] if recount else await _set_aside_latency(db)
                await _tombstones_say_no_v1(db)
                for statement in SCHEMA:
                    await db.execute(statement)
                for table in set_aside:
                    await self._latency_histograms(db, table)
                if recount:
                    await self._count_existing(db)
                elif existing and version < 3:  # counted already: its documents are held
                    await self._count_existing(db, held_only=True)
                await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def _count_existing(self, db: aiosqlite.Connection, *, held_only: bool = False) -> None:
        """Count the exchanges of a store written before rollups into them (`held_only`: a
        store written before evidence: only as documents held), in batches by id, in the
        migration's one transaction (a crash leaves the store as it was)."""
        async with db.execute("SELECT count(*) FROM exchanges") as cur:
            total = int((await cur.fetchone() or (0,))[0])
        log.info("SQLite store %s: counting its %d exchanges into the rollups (once, after an "
                 "upgrade)", self.path, total)
        last, done = "", 0
        while True:
            states = await _states(db, f"id > ? ORDER BY id LIMIT {int(self.migrate_batch)}",
                                   [last])
            if not states:
                break
            rollup = records.Rollup()
            for state in states.values():
                if held_only:
                    rollup.hold(state, +1)
                else:
                    rollup.add(state, +1)
            await _count(db, rollup)
            last, done = max(states), done + len(states)
            log.info("SQLite store %s: %d/%d exchanges counted", self.path, done, total)

    async def _latency_histograms(self, db: aiosqlite.Connection, table: str) -> None:
        """Schema 5: the rows of an older latency table (one per latency bucket, set aside as
        `<table>_rows`) become one histogram per key, in the migration's transaction."""
        keys = records.ROLLUP_KEYS[table]
        old = f"{table}_rows"
        log.info("SQLite store %s: %s becomes one latency histogram per row (once, after an "
                 "upgrade)", self.path, table)
        key: tuple[Any, ...] | None = None
        h: dict[int, int] = {}
        batch: list[tuple[Any, ...]] = []
        async with db.execute(f"SELECT {', '.join(keys)}, latency, n FROM {old} "
                              f"ORDER BY {', '.join(keys)}") as cur:
            async for row in cur:
                if tuple(row[:-2]) != key:
                    if key is not None and any(h.values()):
                        batch.append((*key, histograms.encode(h)))
                    key, h = tuple(row[:-2]), {}
                h[int(row[-2])] = h.get(int(row[-2]), 0) + int(row[-1])
        if key is not None and any(h.values()):
            batch.append((*key, histograms.encode(h)))
        for i in range(0, len(batch), 10_000):
            await db.executemany(_HISTOGRAM_UPSERTS[table], batch[i:i + 10_000])
        await db.execute(f"DROP TABLE {old}")

    async def close(self) -> None:
        db, self._db = self._db, None
        side, self._side = self._side, None
        for conn in (side, db):
            if conn is not None:
                await conn.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def _write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        db = self.db
        async with self._writing:
            async with _transaction(db):
                for sql, rows in statements:
                    if rows:
                        await db.executemany(sql, rows)

    # ---- writes ----

    async def apply(self, events: list[Event], routes: Mapping[str, str] | None = None,
                    segments: Mapping[str, str] | None = None) -> list[Exchange]:
        requests: list[tuple[Any, ...]] = []
        answers: dict[str, list[tuple[Any, ...]]] = {"v1": [], "v2": []}
        for p in records.parts(events, routes, segments):
            if isinstance(p, records.RequestPart):
                requests.append((p.id, p.request_id, p.ts, p.method, p.url, p.route,
                                 codec.pack_part(p.request), p.segment or None))
            else:
                answers[p.side].append((p.id, p.ts, codec.pack_part(p.answer), p.status,
                                        p.latency_ms, p.bucket, p.ts))
        ids = list({e.id for e in events})
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        db = self.db
        async with self._writing:
            async with _transaction(db):
                before = await _states(db, f"id IN ({marks})", ids)
                async with db.execute(f"SELECT id FROM dropped WHERE id IN ({marks})", ids) as cur:
                    gone = {row[0] async for row in cur}  # decided, document dropped: ignored
                for sql, rows in ((_UPSERT_REQUEST, requests), (_UPSERT_V1, answers["v1"]),
                                  (_UPSERT_V2, answers["v2"])):
                    rows = [row for row in rows if row[0] not in gone] if gone else rows
                    if rows:
                        await db.executemany(sql, rows)
                after = await _states(db, f"id IN ({marks})", ids)
                rollup = records.Rollup(await _folded(db))
                for ident, state in after.items():
                    if state != before.get(ident):
                        rollup.move(before.get(ident), state)
                await _count(db, rollup)
        async with self.db.execute(
            f"SELECT {_COLUMNS} FROM exchanges WHERE id IN ({marks}) AND v1 IS NOT NULL "
            f"AND v2 IS NOT NULL AND outcome IN {_UNDECIDED}", ids) as cur:
            return [_exchange(row) async for row in cur]

    async def complete(self, results: list[tuple[str, Comparison]], *,
                       keep: KeepPolicy = EVERYTHING) -> list[str]:
        if not results:
            return []
        now = time.time()
        db = self.db
        async with self._writing:
            return await self._complete(db, results, now, keep)

    async def _complete(self, db: aiosqlite.Connection, results: list[tuple[str, Comparison]],
                        now: float, keep: KeepPolicy = EVERYTHING) -> list[str]:
        async with _transaction(db):
            ids = [ident for ident, _ in results]
            marks = ",".join("?" * len(ids))
            before = await _states(db, f"id IN ({marks}) AND outcome IN {_UNDECIDED}", ids)
            undecided = {ident: (s["method"], s["route"]) for ident, s in before.items()}
            rows = [_decision(ident, c, now) for ident, c in results if ident in undecided]
            t = records.tally(results, undecided, {ident: s["ts"] for ident, s in before.items()})
            await db.executemany(
                "UPDATE exchanges SET outcome = ?, diff = ?, diff_paths = ?, signature = ?, "
                "flags = ?, compared_at = ?, replay_delay_ms = ?, stale = ?, noise = ? "
                "WHERE id = ?", rows)
            rollup = records.Rollup(await _folded(db))
            decided: dict[str, dict[str, Any]] = {}
            for ident, c in dict(results).items():  # an id twice: the last update stays
                state = before.get(ident)
                if state is not None:
                    decided[ident] = {**state, "outcome": c.outcome, "signature": c.signature,
                                      "stale": int("stale" in c.flags)}
                    rollup.move(state, decided[ident])
            fixed = await _fixed(db, sorted({k.signature for k in t.classes}))
            held = await _keep(db, keep, decided, rollup, [(k.example, k.signature)
                                                           for k in t.classes], fixed, t.classes)
            t.classes = [k if k.example in held else dataclasses.replace(k, example=None)
                         for k in t.classes]  # a class's examples: documents held
            await _count(db, rollup)
            if t.noise_observed:
                await db.executemany(
                    "INSERT INTO noise_observed (method, route, n) VALUES (?, ?, ?) "
                    "ON CONFLICT (method, route) DO UPDATE SET n = n + excluded.n",
                    [(*k, n) for k, n in t.noise_observed.items()])
            if t.noise:
                await db.executemany(
                    "INSERT INTO noise (method, route, path, n) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (method, route, path) DO UPDATE SET n = n + excluded.n",
                    [(*k, n) for k, n in t.noise.items()])
            if t.classes:
                await db.executemany(_REOPEN_CLASS, [
                    (now, None if after is None else _text(after), sig)
                    for sig, after in records.reopened(t.classes, fixed).items()])
                await db.executemany(_UPSERT_CLASS, [
                    (k.signature, k.method, k.route, _text(k.paths), now, now, k.example, now)
                    for k in t.classes])
            if t.rule_hits:
                await db.executemany(
                    "INSERT INTO rule_stats (rule, suppressed) VALUES (?, ?) ON CONFLICT (rule) "
                    "DO UPDATE SET suppressed = suppressed + excluded.suppressed",
                    list(t.rule_hits.items()))
        return [row[-1] for row in rows]

    async def expire(self, older_than_ts: float, chunk: int = 500, *,
                     keep: KeepPolicy = EVERYTHING) -> int:
        db = self.db
        expired = 0
        async with self._writing:
            async with _transaction(db):
                rollup = records.Rollup(await _folded(db))
                decided: dict[str, dict[str, Any]] = {}
                for rule in records.EXPIRY:
                    where = [f"outcome = '{PENDING}'", f"v1 IS {'NOT ' if rule.v1 else ''}NULL",
                             "ts < ?"]
                    if rule.v2 is not None:
                        where.append(f"v2 IS {'NOT ' if rule.v2 else ''}NULL")
                    if rule.v2_skipped:
                        where.append("shadow_skipped(v2)")
                    states = await _states(db, " AND ".join(where), [older_than_ts])
                    found = list(states)
                    for i in range(0, len(found), chunk):
                        ids = found[i:i + chunk]
                        await db.execute(f"UPDATE exchanges SET outcome = '{rule.outcome}' WHERE "
                                         f"id IN ({','.join('?' * len(ids))})", ids)
                    for ident, state in states.items():
                        decided[ident] = {**state, "outcome": rule.outcome}
                        rollup.move(state, decided[ident])
                    expired += len(states)
                await _keep(db, keep, decided, rollup, [])
                await _count(db, rollup)
        return expired

    async def admit_routes(self, routes: list[str], max_routes: int) -> set[str]:
        return await self._admit("routes", "route", records.routes_to_admit(routes), max_routes)

    async def admit_segments(self, names: list[str], max_segments: int) -> set[str]:
        return await self._admit("segments", "segment", segments.to_admit(names), max_segments)

    async def _admit(self, table: str, column: str, wanted: list[str], cap: int) -> set[str]:
        """Of `wanted`, the names `table` holds, and new ones it takes while it holds fewer
        than `cap` (atomically, across every process sharing the store)."""
        if not wanted:
            return set()
        db = self.db
        marks = ",".join("?" * len(wanted))
        select = f"SELECT {column} FROM {table} WHERE {column} IN ({marks})"
        async with db.execute(select, wanted) as cur:
            known = {row[0] async for row in cur}
        new = [r for r in wanted if r not in known]
        if not new:
            return known
        async with self._writing:  # BEGIN IMMEDIATE: one writer across every process
            async with _transaction(db):
                async with db.execute(select, wanted) as cur:
                    known = {row[0] async for row in cur}
                async with db.execute(f"SELECT count(*) FROM {table}") as cur:
                    row = await cur.fetchone()
                room = max(0, cap - (int(row[0]) if row else 0))
                admitted = [r for r in wanted if r not in known][:room]
                await db.executemany(f"INSERT INTO {table} ({column}) VALUES (?)",
                                     [(r,) for r in admitted])
        return known | set(admitted)

    # ---- housekeeping: compaction and retention, off the ingest path ----

    async def _side_db(self) -> aiosqlite.Connection:
        """The housekeeping connection (the store's own for an in-memory database)."""
        db = self.db
        if self.path == ":memory:":
            return db
        if self._side is None:
            side = await aiosqlite.connect(self.path, isolation_level=None)
            await side.create_function("shadow_hist_add", 2, histograms.add, deterministic=True)
            await side.execute("PRAGMA synchronous=NORMAL")
            await side.execute("PRAGMA busy_timeout=10000")
            await side.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            if self._side is None:
                self._side = side
            else:
                await side.close()
        return self._side

    async def compact(self, now: float | None = None, *, settle_s: float = 60.0) -> int:
        """Fold the rollups' old rows into 10 minutes, hours and days (shadow.windows.FOLDS),
        a small transaction at a time; reports round their window edges to those buckets
        there. Returns the rows folded."""
        now = time.time() if now is None else now
        db = await self._side_db()
        async with self._writing:
            async with _transaction(db):
                todo = await _publish(db, now, settle_s)
        folded, floor = 0, 0
        for span, (start, end) in sorted(todo.items(), reverse=True):  # days first
            start = max(start, floor)
            floor = end
            if start < end:
                folded += await self._fold_level(db, span, start, end)
        return folded

    async def _fold_level(self, db: aiosqlite.Connection, span: int, start: int, end: int,
                          ) -> int:
        """Fold every row of [start, end) into its `span` bucket, then move the level's
        `folded` boundary to `end` (in the transaction that finds nothing left to fold)."""
        folded = 0
        while True:
            for table in _BUCKETED:
                lo = start
                while True:
                    async with self._writing:
                        async with _transaction(db):
                            n, lo = await _fold_batch(db, table, span, lo, end, self.fold_batch)
                    if not n:
                        break
                    folded += n
                    await asyncio.sleep(0)  # the comparer's writes go first
            async with self._writing:
                async with _transaction(db):
                    if not any([await _unfolded(db, t, span, start, end) for t in _BUCKETED]):
                        await db.execute("UPDATE rollup_folds SET folded = ? WHERE span = ?",
                                         (end, span))
                        return folded

    async def resolve(self, window: Window) -> Window:
        if window.all_time:
            return window
        return coarsen(window, await _marks(self.db, "published"))

    async def retain(self, *, max_age_s: float | None = None, max_docs: int | None = None,
                     max_bytes: int | None = None, rollup_max_age_s: float | None = None,
                     now: float | None = None) -> int:
        now = time.time() if now is None else now
        db = await self._side_db()
        deleted = 0
        if max_age_s is not None:
            deleted += await self._delete_oldest(db, before_ts=now - max_age_s)
            await self._forget_dropped(db, now - max_age_s)
        if max_docs is not None:
            async with db.execute("SELECT count(*) FROM exchanges") as cur:
                row = await cur.fetchone()
            excess = (int(row[0]) if row else 0) - max_docs
            if excess > 0:
                deleted += await self._delete_oldest(db, limit=excess)
        if max_bytes is not None and await self.size_bytes() > max_bytes:
            async def enough() -> bool:
                return await self.size_bytes() <= max_bytes

            deleted += await self._delete_oldest(db, enough=enough)
            if not await enough():
                log.warning("SQLite store %s holds %d bytes, over --store-max-bytes %d, with no "
                            "document left to delete but each class's last example: raise the "
                            "budget or lower --rollup-max-age-s", self.path,
                            await self.size_bytes(), max_bytes)
        if rollup_max_age_s is not None:
            await self._forget_buckets(db, floor_to(now - rollup_max_age_s, DAY_S))
        return deleted

    async def _delete_oldest(self, db: aiosqlite.Connection, *, before_ts: float | None = None,
                             limit: int | None = None,
                             enough: Callable[[], Awaitable[bool]] | None = None) -> int:
        """Delete documents oldest first (by ts before `before_ts`, else by id), a batch per
        short transaction from where the last one stopped (a key range, no OFFSET), until
        `limit` were gone over or `enough()`; never a class's last example."""
        cursor: tuple[Any, ...] = (float("-inf"), -1) if before_ts is not None else ("",)
        deleted, seen, step = 0, 0, 1
        while limit is None or seen < limit:
            if enough is not None and await enough():
                break
            take = self.delete_batch if limit is None else min(self.delete_batch, limit - seen)
            if enough is not None:  # a few first, more while still over: never far past it
                take, step = min(take, step), step * 2
            async with self._writing:
                async with _transaction(db):
                    if before_ts is not None:
                        rows = await _fetch(db, "SELECT id, signature, ts, rowid FROM exchanges "
                                            "WHERE ts >= ? AND ts < ? AND NOT (ts = ? AND rowid "
                                            "<= ?) ORDER BY ts, rowid LIMIT ?",
                                            [cursor[0], before_ts, *cursor, take])
                    else:
                        rows = await _fetch(db, "SELECT id, signature, id FROM exchanges WHERE "
                                            "id > ? ORDER BY id LIMIT ?", [*cursor, take])
                    if not rows:
                        break
                    spared = await _last_examples(db, rows)
                    doomed = [row[0] for row in rows if row[0] not in spared]
                    if doomed:
                        await _delete_documents(db, doomed)
            cursor = tuple(rows[-1][2:])
            deleted, seen = deleted + len(doomed), seen + len(rows)
            await asyncio.sleep(0)  # the comparer's writes go first
        return deleted

    async def _forget_dropped(self, db: aiosqlite.Connection, before_ts: float) -> None:
        """Delete the keep policy's tombstones of exchanges older than `before_ts` (with the
        documents' age limit), oldest first by id (ids are time-ordered: a key range from the
        start), a batch per short transaction; and its counters of the hours before."""
        after = ""
        while True:
            async with self._writing:
                async with _transaction(db):
                    rows = await _select(db, "SELECT id, ts FROM dropped WHERE id > ? ORDER BY id "
                                         "LIMIT ?", [after, self.delete_batch])
                    doomed = [ident for ident, ts in rows if ts < before_ts]
                    if doomed:
                        await db.execute(f"DELETE FROM dropped WHERE id IN ({_qmarks(doomed)})",
                                         doomed)
                    if len(doomed) < len(rows) or len(rows) < self.delete_batch:
                        await db.execute("DELETE FROM keep_counts WHERE hour < ?",
                                         (keep.hour_of(before_ts),))
                        return
            after = rows[-1][0]
            await asyncio.sleep(0)  # the comparer's writes go first

    async def forget_tombstones(self, before_ts: float) -> int:
        db = await self._side_db()
        before = math.floor(before_ts)  # ts holds whole seconds, rounded down
        forgotten = 0
        while True:
            async with self._writing:
                async with _transaction(db):
                    cur = await db.execute(
                        "DELETE FROM dropped WHERE id IN (SELECT id FROM dropped WHERE no_v1 = 0 "
                        "AND ts < ? LIMIT ?)", (before, self.delete_batch))
            forgotten += max(0, cur.rowcount)
            if cur.rowcount < self.delete_batch:
                return forgotten
            await asyncio.sleep(0)  # the comparer's writes go first

    async def _forget_buckets(self, db: aiosqlite.Connection, before: int) -> None:
        """Delete the rollups' buckets before `before` (all-time counts stay), in batches."""
        for table in _BUCKETED:
            while True:
                async with self._writing:
                    async with _transaction(db):
                        cur = await db.execute(
                            f"DELETE FROM {table} WHERE bucket IN (SELECT bucket FROM {table} "
                            "WHERE bucket < ? ORDER BY bucket LIMIT ?)",
                            (before, self.delete_batch))
                if cur.rowcount <= 0:
                    break
                await asyncio.sleep(0)

    async def size_bytes(self) -> int:
        """The store's pages in use (free pages left by deletions are reused, not counted)
        and the write-ahead log's pages not yet copied into the file (a passive checkpoint
        first: it never waits for the comparer's writes). The WAL file itself is truncated to
        WAL_LIMIT_BYTES after checkpoints."""
        db = await self._side_db()
        page_size, pages, free = [int((await _fetch(db, f"PRAGMA {pragma}", []))[0][0])
                                  for pragma in ("page_size", "page_count", "freelist_count")]
        used = (pages - free) * page_size
        if self.path != ":memory:":
            _, frames, copied = (await _fetch(db, "PRAGMA wal_checkpoint(PASSIVE)", []))[0]
            used += max(0, int(frames) - int(copied)) * (page_size + 24)  # 24: frame header
        return used

    async def set_class_status(self, signature: str, status: str, ticket: str | None = None,
                               note: str | None = None, fixed_in: FixedIn | None = None,
                               ) -> MismatchClass | None:
        records.checked_status(status)
        db = self.db
        fixed = _text(fixed_in) if fixed_in is not None and status == CLASS_FIXED else None
        async with self._writing:
            cur = await db.execute("UPDATE classes SET status = ?, ticket = coalesce(?, ticket), "
                                   "note = coalesce(?, note), updated_at = ?, fixed_in = ? "
                                   "WHERE signature = ?",
                                   (status, ticket, note, time.time(), fixed, signature))
            changed = cur.rowcount > 0
        if not changed:
            return None
        return next(iter(await self.classes(signature=signature)), None)

    async def add_deploy(self, d: Deploy) -> None:
        async with self._writing:
            await self.db.execute("INSERT OR IGNORE INTO deploys (id, ts, target, version, note) "
                                  "VALUES (?, ?, ?, ?, ?)",
                                  (d["id"], d["ts"], d["target"], d["version"], d["note"]))

    # ---- reads ----

    async def deploys(self, target: str | None = None, limit: int = 100,
                      version: str | None = None) -> list[Deploy]:
        clauses, args = [], []
        for column, value in (("target", target), ("version", version)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._rows(f"SELECT id, ts, target, version, note FROM deploys {where} "
                                "ORDER BY ts DESC, id DESC LIMIT ?", [*args, int(limit)])
        return [deploy(*row) for row in rows]

    async def add_suspected(self, observed: dict[tuple[str, str], int],
                            paths: dict[tuple[str, str, str], int]) -> None:
        await self._write([
            ("INSERT INTO repeats (method, route, n) VALUES (?, ?, ?) ON CONFLICT (method, route) "
             "DO UPDATE SET n = n + excluded.n", [(*k, n) for k, n in observed.items()]),
            ("INSERT INTO suspected (method, route, path, n) VALUES (?, ?, ?, ?) ON CONFLICT "
             "(method, route, path) DO UPDATE SET n = n + excluded.n",
             [(*k, n) for k, n in paths.items()])])

    async def suspected(self) -> dict[RouteKey, list[str]]:
        return records.learned_noise(await self._rows("SELECT method, route, path, n FROM suspected"),
                                     await self._rows("SELECT method, route, n FROM repeats"))

    async def _rows(self, sql: str, args: list[Any] | None = None) -> list[Any]:
        """Every row in one call on the connection's thread: iterated row by row, the
        comparer's writes on the same connection ran between the fetches and an aggregate
        read under them came back broken (a NULL sum: a 500 on /api/summary under load)."""
        return [tuple(row) for row in await self.db.execute_fetchall(sql, args or [])]

    async def rule_hits(self) -> dict[str, int]:
        async with self.db.execute("SELECT rule, suppressed FROM rule_stats") as cur:
            return {rule: int(n) async for rule, n in cur}

    async def get(self, key: str) -> Exchange | None:
        async with self.db.execute(f"SELECT {_COLUMNS} FROM exchanges WHERE id = ?", (key,)) as cur:
            row = await cur.fetchone()
        if row is None:
            async with self.db.execute(
                    f"SELECT {_COLUMNS} FROM exchanges WHERE request_id = ? ORDER BY id DESC "
                    "LIMIT 1", (key,)) as cur:
                row = await cur.fetchone()
        return None if row is None else _exchange(row)

    async def count(self, window: Window = ALL_TIME) -> int:
        table, where, args = _counted(await self.resolve(window))
        async with self.db.execute(f"SELECT coalesce(sum(n), 0) FROM {table} {where}",
                                   args) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def outcomes(self, window: Window = ALL_TIME) -> dict[str, int]:
        table, where, args = _counted(await self.resolve(window))
        async with self.db.execute(f"SELECT outcome, sum(n) FROM {table} {where} GROUP BY "
                                   "outcome HAVING sum(n) > 0", args) as cur:
            return {o: int(n) async for o, n in cur}

    async def list_exchanges(self, f: Filters) -> tuple[list[ExchangeSummary], str | None]:
        fields = records.filter_fields(f)
        where = [f"{column} = ?" for column, _ in fields]
        args = [value for _, value in fields]
        if f.path is not None:
            where.append("instr(diff_paths, ?) > 0")
            args.append(f.path)
        if f.url is not None:
            where.append("instr(url, ?) > 0")
            args.append(f.url)
        if f.since is not None:
            where.append("ts >= ?")
            args.append(f.since)
        if f.until is not None:
            where.append("ts < ?")
            args.append(f.until)
        if f.cursor is not None:
            where.append("id < ?")
            args.append(f.cursor)
        sql = (f"SELECT {_SUMMARY_COLUMNS} FROM exchanges "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT ?")
        async with self.db.execute(sql, [*args, f.limit + 1]) as cur:
            rows = list(await cur.fetchall())
        items = [records.exchange_summary(dict(zip(_SUMMARY_COLUMNS.split(", "), row, strict=True)))
                 for row in rows[:f.limit]]
        return items, (items[-1]["id"] if len(rows) > f.limit else None)

    async def classes(self, *, signature: str | None = None, window: Window = ALL_TIME,
                      segment: str | None = None) -> list[MismatchClass]:
        sql = ("SELECT signature, method, route, paths, count, first_seen, last_seen, examples, "
               "status, ticket, note, reopened_at, fixed_in, reopened_after FROM classes")
        args: list[Any] = []
        if signature is not None:
            sql += " WHERE signature = ?"
            args.append(signature)
        async with self.db.execute(sql + " ORDER BY count DESC, signature", args) as cur:
            book = [records.class_doc(sig, method, route, codec.loads(paths), count, first, last,
                                      codec.loads(examples), status, ticket, note, reopened,
                                      codec.loads(fixed) if fixed else None,
                                      codec.loads(after) if after else None)
                    async for (sig, method, route, paths, count, first, last, examples, status,
                               ticket, note, reopened, fixed, after) in cur]
        if window.all_time and segment is None:
            return book
        mismatches = [f"outcome = '{MISMATCH}'", "signature != ''"]
        if window.all_time:  # one segment's, over all time: the class's own sightings
            where, args = _segment_where(*_bucketed(window, mismatches), segment)
            if signature is not None:
                where += " AND signature = ?"
                args.append(signature)
            return records.segment_classes(await self._rows(
                f"SELECT signature, sum(n) FROM route_counts {where} GROUP BY signature", args),
                book)
        marks = await _marks(self.db, "published")
        where, args = _segment_where(*_bucketed(coarsen(window, marks), mismatches), segment)
        if signature is not None:
            where += " AND signature = ?"
            args.append(signature)
        counted = await self._rows(f"SELECT signature, sum(n), min(bucket), max(bucket) "
                                   f"FROM roll_counts {where} GROUP BY signature "
                                   "HAVING sum(n) > 0", args)
        return records.window_classes(counted, book, marks)

    async def summary(self, window: Window = ALL_TIME, segment: str | None = None) -> Summary:
        window = await self.resolve(window)
        counts, where, args = _counted(window)
        by_minute = not window.all_time
        latency = "roll_latency" if by_minute else "route_latency"
        statuses = "roll_status" if by_minute else "route_status"
        held = "roll_kept" if by_minute else "route_kept"
        own, own_args = _segment_where(where, args, segment)  # the counts: the segment's
        rows = await self._rows(f"SELECT method, route, outcome, sum(n), sum(stale) FROM {counts} "
                                f"{own} GROUP BY 1, 2, 3", own_args)
        return records.summary(records.Aggregates(
            counts=[(m, r, o, n) for m, r, o, n, _ in rows if n > 0],
            latency=histograms.flatten(await self._rows(
                f"SELECT method, route, side, group_concat({histograms.FIELD}) FROM {latency} "
                f"{where} GROUP BY 1, 2, 3", args)),
            statuses=await self._rows(f"SELECT method, route, v1_status, v2_status, sum(n) FROM "
                                      f"{statuses} {where} GROUP BY 1, 2, 3, 4 HAVING sum(n) > 0",
                                      args),
            classes=await self.classes(window=window, segment=segment),
            stale=sum(st for *_, st in rows),
            noise=await self._rows("SELECT method, route, path, n FROM noise"),
            observed=await self._rows("SELECT method, route, n FROM noise_observed"),
            suspected=await self._rows("SELECT method, route, path, n FROM suspected"),
            repeats=await self._rows("SELECT method, route, n FROM repeats"),
            kept=await self._rows(f"SELECT method, route, outcome, sum(n) FROM {held} {where} "
                                  "GROUP BY 1, 2, 3 HAVING sum(n) > 0", args)), window,
            segment)

    async def route_evidence(self, window: Window = ALL_TIME,
                             segment: str | None = None) -> list[RouteEvidence]:
        window = await self.resolve(window)
        # mismatches per class and V2 errors per kind (their signatures name it)
        table, where, args = _counted(window, [f"outcome IN ('{MISMATCH}', '{V2_ERROR}')"])
        where, args = _segment_where(where, args, segment)
        rows = await self._rows(f"SELECT method, route, signature, sum(n) FROM {table} {where} "
                                "GROUP BY 1, 2, 3 HAVING sum(n) > 0", args)
        return records.evidence(await self.summary(window, segment),
                                await self.classes(window=window, segment=segment), rows)

    async def segments(self, window: Window = ALL_TIME) -> list[SegmentSummary]:
        table, where, args = _counted(await self.resolve(window))
        return records.segment_list(await self._rows(
            f"SELECT segment, method, route, outcome, sum(n) FROM {table} {where} "
            "GROUP BY 1, 2, 3, 4 HAVING sum(n) > 0", args))

    async def timeline(self, window: Window = ALL_TIME, step_s: int | None = None, *,
                       now: float | None = None) -> Timeline:
        """The dashboard's time series (comparer.timeline): the window's rollup counts per
        step (default: about 120 points), overall, per route and per mismatch class."""
        window = await self.resolve(window)
        marks = await _marks(self.db, "published")
        where, args = _bucketed(window)
        rows = await self._rows(f"SELECT bucket, method, route, outcome, signature, sum(n) FROM "
                                f"roll_counts {where} GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) > 0",
                                args)
        first = min((r[0] for r in rows), default=None)
        last = max((r[0] for r in rows), default=None)
        lo, hi, step = frame(window, first, last, step_s, time.time() if now is None else now)
        return shape(rows, await self.classes(), window, step, lo, hi, marks)


def _bucketed(window: Window, where: list[str] | None = None) -> tuple[str, list[Any]]:
    """A WHERE clause (with its arguments) keeping the buckets of `window`, and `where`."""
    clauses, args = list(where or []), []
    if window.since is not None:
        clauses.append("bucket >= ?")
        args.append(window.since)
    if window.until is not None:
        clauses.append("bucket < ?")
        args.append(window.until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _segment_where(where: str, args: list[Any], segment: str | None) -> tuple[str, list[Any]]:
    """`where` (a WHERE clause or nothing) and the rows of `segment` only (None: every one)."""
    if segment is None:
        return where, args
    return f"{where} AND segment = ?" if where else "WHERE segment = ?", [*args, segment]


def _counted(window: Window, where: list[str] | None = None) -> tuple[str, str, list[Any]]:
    """The count table to read for `window` (all time: one row per key) and its WHERE."""
    return ("route_counts" if window.all_time else "roll_counts", *_bucketed(window, where))


@contextlib.asynccontextmanager
async def _transaction(db: aiosqlite.Connection) -> AsyncIterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception, a cancellation included:
    one that lands while BEGIN is on its way still leaves no transaction open."""
    try:
        await db.execute("BEGIN IMMEDIATE")
        yield
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # no transaction: BEGIN itself failed
            await db.execute("ROLLBACK")
        raise


async def _columns(db: aiosqlite.Connection, table: str) -> set[str] | None:
    """The columns of `table` (None: there is no such table)."""
    rows = await _fetch(db, f"PRAGMA table_info({table})", [])
    return {row[1] for row in rows} if rows else None


async def _add_segments(db: aiosqlite.Connection) -> None:
    """Schema 4, in the migration's transaction: the columns older tables lack (exchanges'
    segment: NULL, no segment; classes' fixed_in, reopened_after), and the count rollups
    rebuilt with a segment key, every row of theirs in segment '' (none)."""
    for table, added in _ADDED_COLUMNS.items():
        columns = await _columns(db, table)
        for name, kind in added:
            if columns is not None and name not in columns:
                await db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    for table, ddl in _COUNTS_TABLES.items():
        columns = await _columns(db, table)
        if columns is None or "segment" in columns:
            continue
        kept = [c for c in records.ROLLUP_KEYS[table] if c != "segment"]
        copied = ", ".join((*kept, *records.ROLLUP_COUNTS[table]))
        await db.execute(f"ALTER TABLE {table} RENAME TO {table}_before_segments")
        await db.execute(ddl)
        await db.execute(f"INSERT INTO {table} ({copied}, segment) SELECT {copied}, '' FROM "
                         f"{table}_before_segments")
        await db.execute(f"DROP TABLE {table}_before_segments")


async def _states(db: aiosqlite.Connection, where: str, args: list[Any],
                  ) -> dict[str, dict[str, Any]]:
    """By exchange id, what the counts of the exchanges matching `where` depend on."""
    async with db.execute(f"SELECT {_STATE} FROM exchanges WHERE {where}", args) as cur:
        return {row[0]: dict(zip(records.CONTRIBUTION_FIELDS, row[1:], strict=True))
                async for row in cur}


async def _count(db: aiosqlite.Connection, rollup: records.Rollup) -> None:
    """Add a batch's count changes to the rollups (in the caller's transaction)."""
    for table, rows in rollup.writes().items():
        if rows:
            await db.executemany(_ROLLUP_UPSERTS[table], [(*key, *by) for key, by in rows])
    for table, hists in rollup.histograms().items():
        if hists:
            await db.executemany(_HISTOGRAM_UPSERTS[table],
                                 [(*key, histograms.encode(h)) for key, h in hists])


async def _tombstones_say_no_v1(db: aiosqlite.Connection) -> None:
    """Schema 5: tombstones say whether V1's answer was missing (no_v1). Older ones of
    exchanges that may have been decided without it (v1_missing, skipped) are marked so: they
    stay until the documents' age limit, as before."""
    columns = await _columns(db, "dropped")
    if columns is not None and "no_v1" not in columns:
        await db.execute("ALTER TABLE dropped ADD COLUMN no_v1 INTEGER NOT NULL DEFAULT 0")
        await db.execute(f"UPDATE dropped SET no_v1 = 1 WHERE outcome IN "
                         f"({OUTCOMES.index(V1_MISSING)}, {OUTCOMES.index(SKIPPED)})")


async def _set_aside_latency(db: aiosqlite.Connection) -> list[str]:
    """Before schema 5, a latency table held a row per latency bucket: renamed to
    `<table>_rows` (SQLiteStore._latency_histograms turns them into histograms). Returns the
    tables set aside."""
    aside = []
    for table in records.HISTOGRAMS:
        if "latency" in (await _columns(db, table) or ()):
            await db.execute(f"ALTER TABLE {table} RENAME TO {table}_rows")
            aside.append(table)
    return aside


async def _fixed(db: aiosqlite.Connection, signatures: list[str],
                 ) -> dict[str, tuple[FixedIn | None, float | None]]:
    """Of these classes, the ones marked fixed: the deploy each expects its fix in, and when
    that deploy went live (None: not yet)."""
    if not signatures:
        return {}
    return {sig: (codec.loads(f) if f else None, due) for sig, f, due in await _select(
        db, f"SELECT signature, fixed_in, {_FIX_DUE} FROM classes WHERE status = "
        f"'{CLASS_FIXED}' AND signature IN ({_qmarks(signatures)})", signatures)}


async def _keep(db: aiosqlite.Connection, policy: KeepPolicy, decided: Mapping[str, dict[str, Any]],
                rollup: records.Rollup, hits: list[tuple[str | None, str]],
                fixed: Mapping[str, tuple[FixedIn | None, float | None]] | None = None,
                classes: list[records.ClassHit] | None = None) -> set[str]:
    """The keep policy (shadow.keep) on exchanges just decided (`decided`: their states now,
    by id), in the caller's transaction: each document it does not keep is deleted, leaving a
    tombstone in `dropped`, and is no longer held (`rollup`); its counts stay. `hits`: the
    mismatches decided, in order (exchange id, signature), for the classes they open or
    reopen (`fixed`: the classes marked fixed among them, as _fixed says; `classes`: the hits
    as ClassHits, with their times). Returns the ids whose documents are kept."""
    if policy.keeps_all or not decided:
        return set(decided)
    signatures = sorted({sig for _, sig in hits})
    book = {sig: status for sig, status in await _select(
        db, f"SELECT signature, status FROM classes WHERE signature IN ({_qmarks(signatures)})",
        signatures)} if signatures else {}
    times = {k.example: k.ts for k in classes or [] if k.example is not None}
    opens = keep.openers(records.reopening([(ident, sig) for ident, sig in hits
                                            if ident is not None], fixed or {}, times), book)
    items = [keep.Decided(ident, s["ts"], s["method"], s["route"], s["outcome"], s["signature"],
                          ident in opens) for ident, s in decided.items()]
    wanted = keep.groups(items)
    seen: dict[keep.GroupKey, int] = {}
    if wanted:  # the counters of the hours and groups at hand (a superset: filtered here)
        hours, names = sorted({h for h, _ in wanted}), sorted({g for _, g in wanted})
        for hour, grp, n in await _select(
                db, f"SELECT hour, grp, n FROM keep_counts WHERE hour IN ({_qmarks(hours)}) AND "
                f"grp IN ({_qmarks(names)})", [*hours, *names]):
            if (hour, grp) in wanted:
                seen[(hour, grp)] = n
    choice = keep.choose(policy, items, seen)
    await db.executemany("INSERT INTO keep_counts (hour, grp, n) VALUES (?, ?, ?) ON CONFLICT "
                         "(hour, grp) DO UPDATE SET n = n + excluded.n",
                         [(hour, grp, n) for (hour, grp), n in choice.seen.items()])
    gone = [ident for ident in decided if ident not in choice.kept]
    tombstones = []
    for i in range(0, len(gone), 500):
        for ident, v1_ts, v2_ts in await _select(
                db, f"DELETE FROM exchanges WHERE id IN ({_qmarks(gone[i:i + 500])}) "
                "RETURNING id, v1_ts, v2_ts", gone[i:i + 500]):
            tombstones.append((ident, int(horizon.latest(decided[ident]["ts"], v1_ts, v2_ts)),
                               OUTCOMES.index(decided[ident]["outcome"]), int(v1_ts is None)))
    await db.executemany("INSERT OR IGNORE INTO dropped (id, ts, outcome, no_v1) "
                         "VALUES (?, ?, ?, ?)", tombstones)
    for ident in gone:
        rollup.forget(decided[ident])
    return choice.kept


async def _delete_documents(db: aiosqlite.Connection, ids: list[str]) -> int:
    """Delete exchange documents (retention, the disk budget) in the caller's transaction:
    they are no longer held (records.Rollup.forget); their counts stay. Returns how many."""
    rollup = records.Rollup(await _folded(db))
    deleted = 0
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        async with db.execute(f"DELETE FROM exchanges WHERE id IN ({_qmarks(part)}) RETURNING "
                              f"{', '.join(records.CONTRIBUTION_FIELDS)}", part) as cur:
            async for row in cur:
                rollup.forget(dict(zip(records.CONTRIBUTION_FIELDS, row, strict=True)))
                deleted += 1
    await _count(db, rollup)
    return deleted


def _qmarks(values: list[Any]) -> str:
    return ",".join("?" * len(values))


async def _select(db: aiosqlite.Connection, sql: str, args: list[Any]) -> list[Any]:
    async with db.execute(sql, args) as cur:
        return list(await cur.fetchall())


async def _fetch(db: aiosqlite.Connection, sql: str, args: list[Any]) -> list[Any]:
    async with db.execute(sql, args) as cur:
        return list(await cur.fetchall())


async def _marks(db: aiosqlite.Connection, column: str) -> dict[int, int]:
    """Compaction's boundaries per span: `published` (reports) or `folded` (writes)."""
    return {int(span): int(mark)
            for span, mark in await _fetch(db, f"SELECT span, {column} FROM rollup_folds", [])}


async def _folded(db: aiosqlite.Connection) -> dict[int, int]:
    """Where writes count an exchange: in the coarser bucket before the published
    boundaries (what compaction folds next)."""
    return await _marks(db, "published")


async def _publish(db: aiosqlite.Connection, now: float, settle_s: float,
                   ) -> dict[int, tuple[int, int]]:
    """Move each level's published boundary to where `now` wants it (once the one before
    has settled); per span, the stretch [folded, end) that may be folded now."""
    rows = {int(r[0]): r[1:] for r in await _fetch(
        db, "SELECT span, published, published_at, settled, folded FROM rollup_folds", [])}
    todo: dict[int, tuple[int, int]] = {}
    for span, target in fold_marks(now).items():
        published, at, settled, folded = rows.get(span, (0, float("-inf"), 0, 0))
        if target > published and now - at >= settle_s:
            settled, published, at = published, target, now
        end = published if now - at >= settle_s else settled
        await db.execute("INSERT OR REPLACE INTO rollup_folds (span, published, published_at, "
                         "settled, folded) VALUES (?, ?, ?, ?, ?)",
                         (span, published, at, settled, folded))
        todo[span] = (int(folded), int(end))
    return todo


def _unfolded_where(table: str) -> str:
    return f"FROM {table} WHERE bucket >= ? AND bucket < ? AND bucket % ? != 0"


async def _unfolded(db: aiosqlite.Connection, table: str, span: int, start: int, end: int,
                    ) -> bool:
    return bool(await _fetch(db, f"SELECT 1 {_unfolded_where(table)} LIMIT 1",
                             [start, end, span]))


async def _fold_batch(db: aiosqlite.Connection, table: str, span: int, lo: int, end: int,
                      limit: int) -> tuple[int, int]:
    """Fold up to `limit` rows of [lo, end) not on a `span` boundary into their `span`
    bucket (in the caller's transaction). Returns how many, and where the next batch starts."""
    keys = records.ROLLUP_KEYS[table]
    values = (histograms.FIELD,) if table in records.HISTOGRAMS else records.ROLLUP_COUNTS[table]
    rows = await _fetch(db, f"SELECT {', '.join((*keys, *values))} {_unfolded_where(table)} "
                        "ORDER BY bucket LIMIT ?", [lo, end, span, limit])
    if not rows:
        return 0, lo
    k = len(keys)
    if table in records.HISTOGRAMS:
        folded = histograms.fold([(tuple(row[:k]), histograms.decode(row[k])) for row in rows],
                                 span)
        await db.executemany(_HISTOGRAM_UPSERTS[table],
                             [(*key, histograms.encode(h)) for key, h in folded])
    else:
        increments = records.fold([(tuple(row[:k]), row[k:]) for row in rows], span)
        await db.executemany(_ROLLUP_UPSERTS[table], [(*key, *by) for key, by in increments])
    await db.executemany(f"DELETE FROM {table} WHERE {' AND '.join(f'{c} = ?' for c in keys)}",
                         [tuple(row[:k]) for row in rows])
    return len(rows), floor_to(rows[-1][0], span)


async def _last_examples(db: aiosqlite.Connection, rows: list[Any]) -> set[str]:
    """Of the documents about to be deleted ((id, signature, ...) rows), the ones to keep:
    per class (signature), the newest, when no other document of the class is left."""
    by_class: dict[str, list[str]] = {}
    for ident, signature, *_ in rows:
        if signature:
            by_class.setdefault(signature, []).append(ident)
    spared: set[str] = set()
    for signature, ids in by_class.items():
        if not await _fetch(db, f"SELECT 1 FROM exchanges WHERE signature = ? AND id NOT IN "
                            f"({','.join('?' * len(ids))}) LIMIT 1", [signature, *ids]):
            spared.add(max(ids))
    return spared


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _decision(ident: str, c: Comparison, now: float) -> tuple[Any, ...]:
    """The UPDATE's values: one comparison recorded on its exchange."""
    return (c.outcome, _text(codec.diff_to_list(c.diff)),
            "\n".join(d.path for d in c.diff) or None, c.signature, _text(c.flags), now,
            c.replay_delay_ms, int("stale" in c.flags),
            _text(codec.diff_to_list(c.noise)) if c.noise else None, ident)


def _exchange(row: Any) -> Exchange:
    (ident, request_id, ts, method, url, route, request, v1, v2, outcome, diff, signature, flags,
     compared_at, v1_ts, v2_ts, replay_delay_ms, noise) = row
    v2_doc = codec.unpack_part(v2) if v2 else None
    secondary = v2_doc.get("secondary") if v2_doc else None
    return Exchange(
        id=ident, request_id=request_id, ts=ts, method=method, url=url, route=route,
        request=codec.request_from_dict(codec.unpack_part(request)) if request else None,
        v1=codec.answer_from_dict(codec.unpack_part(v1)) if v1 else None,
        v2=codec.answer_from_dict(v2_doc) if v2_doc else None,
        outcome=outcome, diff=codec.diff_from_list(codec.loads(diff)) if diff else [],
        signature=signature, flags=codec.loads(flags) if flags else [], compared_at=compared_at,
        v1_ts=v1_ts, v2_ts=v2_ts, replay_delay_ms=replay_delay_ms,
        v1_secondary=codec.answer_from_dict(secondary) if secondary else None,
        noise=codec.diff_from_list(codec.loads(noise)) if noise else [],
    )
