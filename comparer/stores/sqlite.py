"""The embedded store: one SQLite file in WAL mode, writes batched in transactions.

Per-route counts, latency histograms and status pairs are kept up to date by
triggers in the same transaction as every write, so /api/summary reads a few
small tables instead of scanning a million exchanges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiosqlite

from comparer import records
from shadow import codec
from shadow.errors import StoreError
from shadow.filters import Filters
from shadow.model import (
    CLASS_FIXED,
    CLASS_NEW,
    DIFFED,
    MISMATCH,
    PENDING,
    UNDECIDED,
    Comparison,
    Event,
    Exchange,
    RouteKey,
)
from shadow.reports_model import ExchangeSummary, MismatchClass, Summary
from shadow.rules import OTHER_ROUTE
from shadow.settings import sqlite_path
from shadow.stats import RouteEvidence


def _sql_set(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


COMPARED = _sql_set(DIFFED)
_UNDECIDED = _sql_set(UNDECIDED)


def _contribution(sign: str, row: str) -> str:
    """SQL adding (+1) or removing (-1) one exchange row's share of the aggregates."""
    m, r = f"coalesce({row}.method, '?')", f"coalesce({row}.route, '?')"
    if sign == "+":
        stmts = [f"""INSERT INTO route_stats (method, route, outcome, n)
                     SELECT {m}, {r}, {row}.outcome, 1 WHERE 1
                     ON CONFLICT (method, route, outcome) DO UPDATE SET n = n + 1;"""]
        for side in ("v1", "v2"):
            stmts.append(f"""INSERT INTO route_latency (method, route, side, bucket, n)
                 SELECT {m}, {r}, '{side}', {row}.{side}_bucket, 1
                 WHERE {row}.outcome IN {COMPARED} AND {row}.{side}_bucket IS NOT NULL
                 ON CONFLICT (method, route, side, bucket) DO UPDATE SET n = n + 1;""")
        stmts.append(f"""INSERT INTO route_status (method, route, v1_status, v2_status, n)
                 SELECT {m}, {r}, coalesce({row}.v1_status, 0), coalesce({row}.v2_status, 0), 1
                 WHERE {row}.outcome IN {COMPARED}
                 ON CONFLICT (method, route, v1_status, v2_status) DO UPDATE SET n = n + 1;""")
        return "\n".join(stmts)
    stmts = [f"""UPDATE route_stats SET n = n - 1
                 WHERE method = {m} AND route = {r} AND outcome = {row}.outcome;"""]
    for side in ("v1", "v2"):
        stmts.append(f"""UPDATE route_latency SET n = n - 1
             WHERE {row}.outcome IN {COMPARED} AND method = {m} AND route = {r}
             AND side = '{side}' AND bucket = {row}.{side}_bucket;""")
    stmts.append(f"""UPDATE route_status SET n = n - 1
             WHERE {row}.outcome IN {COMPARED} AND method = {m} AND route = {r}
             AND v1_status = coalesce({row}.v1_status, 0)
             AND v2_status = coalesce({row}.v2_status, 0);""")
    return "\n".join(stmts)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS exchanges (
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
    noise TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_request_id ON exchanges(request_id);
CREATE INDEX IF NOT EXISTS exchanges_ts ON exchanges(ts);
CREATE INDEX IF NOT EXISTS exchanges_route ON exchanges(route, method);
CREATE INDEX IF NOT EXISTS exchanges_outcome ON exchanges(outcome, id);
CREATE INDEX IF NOT EXISTS exchanges_signature ON exchanges(signature);
CREATE INDEX IF NOT EXISTS exchanges_stale ON exchanges(stale) WHERE stale = 1;

CREATE TABLE IF NOT EXISTS route_stats (
    method TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, outcome)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS route_latency (
    method TEXT NOT NULL, route TEXT NOT NULL, side TEXT NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (method, route, side, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS route_status (
    method TEXT NOT NULL, route TEXT NOT NULL, v1_status INTEGER NOT NULL,
    v2_status INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, v1_status, v2_status)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS noise (
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS noise_observed (
    method TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suspected (
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repeats (
    method TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routes (route TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_stats (
    rule TEXT PRIMARY KEY, suppressed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS classes (
    signature TEXT PRIMARY KEY, method TEXT, route TEXT, paths TEXT NOT NULL,
    count INTEGER NOT NULL, first_seen REAL, last_seen REAL, examples TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{CLASS_NEW}', ticket TEXT, note TEXT, reopened_at REAL,
    updated_at REAL);

CREATE TRIGGER IF NOT EXISTS exchanges_insert AFTER INSERT ON exchanges BEGIN
{_contribution("+", "new")}
END;
CREATE TRIGGER IF NOT EXISTS exchanges_delete AFTER DELETE ON exchanges BEGIN
{_contribution("-", "old")}
END;
CREATE TRIGGER IF NOT EXISTS exchanges_update AFTER UPDATE OF method, route, outcome ON exchanges
WHEN old.method IS NOT new.method OR old.route IS NOT new.route OR old.outcome IS NOT new.outcome
BEGIN
{_contribution("-", "old")}
{_contribution("+", "new")}
END;
"""

# First writer wins for each part: a re-delivered or re-replayed part never rewrites an
# exchange that may already be compared (the diff always describes the stored answers).
_UPSERT_REQUEST = """
INSERT INTO exchanges (id, request_id, ts, method, url, route, request)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, ts = excluded.ts,
    method = excluded.method, url = excluded.url, route = excluded.route,
    request = excluded.request
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
                    THEN json_insert(examples, '$[#]', json_extract(excluded.examples, '$[0]'))
                    ELSE examples END,
    reopened_at = CASE WHEN status = '{CLASS_FIXED}' THEN excluded.last_seen ELSE reopened_at END,
    status = CASE WHEN status = '{CLASS_FIXED}' THEN '{CLASS_NEW}' ELSE status END
"""


def _text(obj: Any) -> str:
    return codec.dumps(obj).decode("utf-8")


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None
        self._writing = asyncio.Lock()  # one connection: one write transaction at a time

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
            await self._db.executescript(SCHEMA)
            # routes counted before the routes table existed keep their place under the cap
            await self._db.execute(
                "INSERT OR IGNORE INTO routes (route) SELECT DISTINCT route FROM route_stats "
                "WHERE route NOT IN ('?', ?)", (OTHER_ROUTE,))
        except Exception as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def _write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        db = self.db
        async with self._writing:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    if rows:
                        await db.executemany(sql, rows)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    # ---- writes ----

    async def apply(self, events: list[Event],
                    routes: Mapping[str, str] | None = None) -> list[Exchange]:
        requests: list[tuple[Any, ...]] = []
        answers: dict[str, list[tuple[Any, ...]]] = {"v1": [], "v2": []}
        for p in records.parts(events, routes):
            if isinstance(p, records.RequestPart):
                requests.append((p.id, p.request_id, p.ts, p.method, p.url, p.route,
                                 _text(p.request)))
            else:
                answers[p.side].append((p.id, p.ts, _text(p.answer), p.status, p.latency_ms,
                                        p.bucket, p.ts))
        await self._write([(_UPSERT_REQUEST, requests), (_UPSERT_V1, answers["v1"]),
                           (_UPSERT_V2, answers["v2"])])
        ids = list({e.id for e in events})
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        async with self.db.execute(
            f"SELECT {_COLUMNS} FROM exchanges WHERE id IN ({marks}) AND v1 IS NOT NULL "
            f"AND v2 IS NOT NULL AND outcome IN {_UNDECIDED}", ids) as cur:
            return [_exchange(row) async for row in cur]

    async def complete(self, results: list[tuple[str, Comparison]]) -> list[str]:
        if not results:
            return []
        now = time.time()
        db = self.db
        async with self._writing:
            return await self._complete(db, results, now)

    async def _complete(self, db: aiosqlite.Connection, results: list[tuple[str, Comparison]],
                        now: float) -> list[str]:
        await db.execute("BEGIN IMMEDIATE")
        try:
            ids = [ident for ident, _ in results]
            marks = ",".join("?" * len(ids))
            async with db.execute(f"SELECT id, method, route FROM exchanges WHERE id IN ({marks}) "
                                  f"AND outcome IN {_UNDECIDED}", ids) as cur:
                undecided = {row[0]: (row[1], row[2]) async for row in cur}
            rows = [_decision(ident, c, now) for ident, c in results if ident in undecided]
            t = records.tally(results, undecided)
            await db.executemany(
                "UPDATE exchanges SET outcome = ?, diff = ?, diff_paths = ?, signature = ?, "
                "flags = ?, compared_at = ?, replay_delay_ms = ?, stale = ?, noise = ? "
                "WHERE id = ?", rows)
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
                await db.executemany(_UPSERT_CLASS, [
                    (k.signature, k.method, k.route, _text(k.paths), now, now, k.example, now)
                    for k in t.classes])
            if t.rule_hits:
                await db.executemany(
                    "INSERT INTO rule_stats (rule, suppressed) VALUES (?, ?) ON CONFLICT (rule) "
                    "DO UPDATE SET suppressed = suppressed + excluded.suppressed",
                    list(t.rule_hits.items()))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return [row[-1] for row in rows]

    async def expire(self, older_than_ts: float) -> int:
        db = self.db
        expired = 0
        async with self._writing:
            for rule in records.EXPIRY:
                where = [f"outcome = '{PENDING}'", f"v1 IS {'NOT ' if rule.v1 else ''}NULL",
                         "ts < ?"]
                if rule.v2 is not None:
                    where.append(f"v2 IS {'NOT ' if rule.v2 else ''}NULL")
                if rule.v2_skipped:
                    where.append("json_extract(v2, '$.skipped') IS NOT NULL")
                cur = await db.execute(f"UPDATE exchanges SET outcome = '{rule.outcome}' "
                                       f"WHERE {' AND '.join(where)}", (older_than_ts,))
                expired += max(cur.rowcount, 0)  # rowcount leaves out trigger work
        return expired

    async def admit_routes(self, routes: list[str], max_routes: int) -> set[str]:
        wanted = records.routes_to_admit(routes)
        if not wanted:
            return set()
        db = self.db
        marks = ",".join("?" * len(wanted))
        async with db.execute(f"SELECT route FROM routes WHERE route IN ({marks})", wanted) as cur:
            known = {row[0] async for row in cur}
        new = [r for r in wanted if r not in known]
        if not new:
            return known
        async with self._writing:  # BEGIN IMMEDIATE: one writer across every process
            await db.execute("BEGIN IMMEDIATE")
            try:
                async with db.execute(f"SELECT route FROM routes WHERE route IN ({marks})",
                                      wanted) as cur:
                    known = {row[0] async for row in cur}
                async with db.execute("SELECT count(*) FROM routes") as cur:
                    row = await cur.fetchone()
                room = max(0, max_routes - (int(row[0]) if row else 0))
                admitted = [r for r in wanted if r not in known][:room]
                await db.executemany("INSERT INTO routes (route) VALUES (?)",
                                     [(r,) for r in admitted])
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return known | set(admitted)

    async def retain(self, *, max_age_s: float | None, max_docs: int | None,
                     chunk: int = 5000) -> int:
        """Delete the oldest exchanges beyond the age and/or count limits, in small chunks."""
        async with self._writing:
            return await self._retain(max_age_s, max_docs, chunk)

    async def _retain(self, max_age_s: float | None, max_docs: int | None, chunk: int) -> int:
        deleted = 0
        db = self.db
        if max_age_s is not None:
            cutoff = time.time() - max_age_s
            while True:
                cur = await db.execute("DELETE FROM exchanges WHERE id IN (SELECT id FROM "
                                       "exchanges WHERE ts < ? ORDER BY ts LIMIT ?)",
                                       (cutoff, chunk))
                n = max(cur.rowcount, 0)
                deleted += n
                if n < chunk:
                    break
        if max_docs is not None:
            async with db.execute("SELECT id FROM exchanges ORDER BY id DESC LIMIT 1 OFFSET ?",
                                  (max_docs,)) as cur:
                row = await cur.fetchone()
            while row is not None:
                cur = await db.execute("DELETE FROM exchanges WHERE id IN (SELECT id FROM "
                                       "exchanges WHERE id <= ? ORDER BY id LIMIT ?)",
                                       (row[0], chunk))
                n = max(cur.rowcount, 0)
                deleted += n
                if n < chunk:
                    break
        return deleted

    async def set_class_status(self, signature: str, status: str, ticket: str | None = None,
                               note: str | None = None) -> MismatchClass | None:
        records.checked_status(status)
        db = self.db
        async with self._writing:
            cur = await db.execute("UPDATE classes SET status = ?, ticket = coalesce(?, ticket), "
                                   "note = coalesce(?, note), updated_at = ? WHERE signature = ?",
                                   (status, ticket, note, time.time(), signature))
            changed = cur.rowcount > 0
        if not changed:
            return None
        return next(iter(await self.classes(signature=signature)), None)

    # ---- reads ----

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

    async def _rows(self, sql: str) -> list[Any]:
        async with self.db.execute(sql) as cur:
            return [tuple(row) async for row in cur]

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

    async def count(self) -> int:
        async with self.db.execute("SELECT coalesce(sum(n), 0) FROM route_stats") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def outcomes(self) -> dict[str, int]:
        async with self.db.execute("SELECT outcome, sum(n) FROM route_stats GROUP BY outcome "
                                   "HAVING sum(n) > 0") as cur:
            return {o: int(n) async for o, n in cur}

    async def list_exchanges(self, f: Filters) -> tuple[list[ExchangeSummary], str | None]:
        fields = records.filter_fields(f)
        where = [f"{column} = ?" for column, _ in fields]
        args = [value for _, value in fields]
        if f.path is not None:
            where.append("instr(diff_paths, ?) > 0")
            args.append(f.path)
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

    async def classes(self, *, signature: str | None = None) -> list[MismatchClass]:
        sql = ("SELECT signature, method, route, paths, count, first_seen, last_seen, examples, "
               "status, ticket, note, reopened_at FROM classes")
        args: list[Any] = []
        if signature is not None:
            sql += " WHERE signature = ?"
            args.append(signature)
        async with self.db.execute(sql + " ORDER BY count DESC, signature", args) as cur:
            return [records.class_doc(sig, method, route, codec.loads(paths), count, first, last,
                              codec.loads(examples), status, ticket, note, reopened)
                    async for (sig, method, route, paths, count, first, last, examples, status,
                               ticket, note, reopened) in cur]

    async def summary(self) -> Summary:
        async with self.db.execute("SELECT count(*) FROM exchanges WHERE stale = 1") as cur:
            stale = (await cur.fetchone() or (0,))[0]
        return records.summary(records.Aggregates(
            counts=await self._rows("SELECT method, route, outcome, n FROM route_stats WHERE n > 0"),
            latency=await self._rows("SELECT method, route, side, bucket, n FROM route_latency "
                                     "WHERE n > 0"),
            statuses=await self._rows("SELECT method, route, v1_status, v2_status, n "
                                      "FROM route_status WHERE n > 0"),
            classes=await self.classes(), stale=stale,
            noise=await self._rows("SELECT method, route, path, n FROM noise"),
            observed=await self._rows("SELECT method, route, n FROM noise_observed"),
            suspected=await self._rows("SELECT method, route, path, n FROM suspected"),
            repeats=await self._rows("SELECT method, route, n FROM repeats")))

    async def route_evidence(self) -> list[RouteEvidence]:
        rows = await self._rows("SELECT method, route, signature, count(*) FROM exchanges "
                                f"WHERE outcome = '{MISMATCH}' GROUP BY 1, 2, 3")
        return records.evidence(await self.summary(), await self.classes(), rows)


def _decision(ident: str, c: Comparison, now: float) -> tuple[Any, ...]:
    """The UPDATE's values: one comparison recorded on its exchange."""
    return (c.outcome, _text(codec.diff_to_list(c.diff)),
            "\n".join(d.path for d in c.diff) or None, c.signature, _text(c.flags), now,
            c.replay_delay_ms, int("stale" in c.flags),
            _text(codec.diff_to_list(c.noise)) if c.noise else None, ident)


def _exchange(row: Any) -> Exchange:
    (ident, request_id, ts, method, url, route, request, v1, v2, outcome, diff, signature, flags,
     compared_at, v1_ts, v2_ts, replay_delay_ms, noise) = row
    v2_doc = codec.loads(v2) if v2 else None
    secondary = v2_doc.get("secondary") if v2_doc else None
    return Exchange(
        id=ident, request_id=request_id, ts=ts, method=method, url=url, route=route,
        request=codec.request_from_dict(codec.loads(request)) if request else None,
        v1=codec.answer_from_dict(codec.loads(v1)) if v1 else None,
        v2=codec.answer_from_dict(v2_doc) if v2_doc else None,
        outcome=outcome, diff=codec.diff_from_list(codec.loads(diff)) if diff else [],
        signature=signature, flags=codec.loads(flags) if flags else [], compared_at=compared_at,
        v1_ts=v1_ts, v2_ts=v2_ts, replay_delay_ms=replay_delay_ms,
        v1_secondary=codec.answer_from_dict(secondary) if secondary else None,
        noise=codec.diff_from_list(codec.loads(noise)) if noise else [],
    )
