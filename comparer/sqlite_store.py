"""The embedded store: one SQLite file in WAL mode, writes batched in transactions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiosqlite

from shadow import codec
from shadow.errors import StoreError
from shadow.model import (
    MATCH,
    MISMATCH,
    PENDING,
    SKIPPED,
    V1_ONLY,
    V2_ERROR,
    CandidateEvent,
    Comparison,
    Event,
    Exchange,
    RequestEvent,
    ResponseEvent,
)
from shadow.routes import route_template
from shadow.settings import sqlite_path

SCHEMA = """
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
    outcome TEXT NOT NULL DEFAULT 'pending',
    diff TEXT,
    signature TEXT,
    flags TEXT,
    compared_at REAL
);
CREATE INDEX IF NOT EXISTS exchanges_request_id ON exchanges(request_id);
CREATE INDEX IF NOT EXISTS exchanges_ts ON exchanges(ts);
CREATE INDEX IF NOT EXISTS exchanges_route ON exchanges(route, method);
CREATE INDEX IF NOT EXISTS exchanges_outcome ON exchanges(outcome, ts);
CREATE INDEX IF NOT EXISTS exchanges_signature ON exchanges(signature);
"""

_UPSERT_REQUEST = """
INSERT INTO exchanges (id, request_id, ts, method, url, route, request)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET request_id = excluded.request_id, ts = excluded.ts,
    method = excluded.method, url = excluded.url, route = excluded.route,
    request = excluded.request
"""
_UPSERT_V1 = """
INSERT INTO exchanges (id, ts, v1, v1_status, v1_latency_ms) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET ts = coalesce(exchanges.ts, excluded.ts), v1 = excluded.v1,
    v1_status = excluded.v1_status, v1_latency_ms = excluded.v1_latency_ms
"""
_UPSERT_V2 = """
INSERT INTO exchanges (id, ts, v2, v2_status, v2_latency_ms) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET ts = coalesce(exchanges.ts, excluded.ts), v2 = excluded.v2,
    v2_status = excluded.v2_status, v2_latency_ms = excluded.v2_latency_ms
"""
_UNDECIDED = f"('{PENDING}', '{V1_ONLY}')"
_COLUMNS = ("id, request_id, ts, method, url, route, request, v1, v2, outcome, diff, signature, "
            "flags, compared_at")


def _text(obj: Any) -> str:
    return codec.dumps(obj).decode("utf-8")


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None

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

    async def apply(self, events: list[Event]) -> list[Exchange]:
        requests, v1s, v2s = [], [], []
        for e in events:
            if isinstance(e, RequestEvent):
                r = e.request
                requests.append((e.id, e.request_id, e.ts, r.method, r.url, route_template(r.url),
                                 _text(codec.request_to_dict(r))))
            elif isinstance(e, ResponseEvent):
                a = e.answer
                v1s.append((e.id, e.ts, _text(codec.answer_to_dict(a)), a.status, a.latency_ms))
            elif isinstance(e, CandidateEvent):
                a = e.answer
                v2s.append((e.id, e.ts, _text(codec.answer_to_dict(a)), a.status, a.latency_ms))
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in ((_UPSERT_REQUEST, requests), (_UPSERT_V1, v1s), (_UPSERT_V2, v2s)):
                if rows:
                    await db.executemany(sql, rows)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        ids = list({e.id for e in events})
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        async with db.execute(
            f"SELECT {_COLUMNS} FROM exchanges WHERE id IN ({marks}) AND v1 IS NOT NULL "
            f"AND v2 IS NOT NULL AND outcome IN {_UNDECIDED}", ids) as cur:
            return [_exchange(row) async for row in cur]

    async def complete(self, results: list[tuple[str, Comparison]]) -> list[str]:
        if not results:
            return []
        now = time.time()
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            ids = [ident for ident, _ in results]
            marks = ",".join("?" * len(ids))
            async with db.execute(f"SELECT id FROM exchanges WHERE id IN ({marks}) "
                                  f"AND outcome IN {_UNDECIDED}", ids) as cur:
                undecided = {row[0] async for row in cur}
            rows = [(c.outcome, _text(codec.diff_to_list(c.diff)), c.signature, _text(c.flags),
                     now, ident) for ident, c in results if ident in undecided]
            await db.executemany("UPDATE exchanges SET outcome = ?, diff = ?, signature = ?, "
                                 "flags = ?, compared_at = ? WHERE id = ?", rows)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return [row[-1] for row in rows]

    async def expire(self, older_than_ts: float) -> int:
        db = self.db
        before = db.total_changes
        await db.execute(
            f"UPDATE exchanges SET outcome = '{V1_ONLY}' WHERE outcome = '{PENDING}' "
            "AND v1 IS NOT NULL AND v2 IS NULL AND ts < ?", (older_than_ts,))
        return db.total_changes - before

    async def get(self, key: str) -> Exchange | None:
        async with self.db.execute(f"SELECT {_COLUMNS} FROM exchanges WHERE id = ?", (key,)) as cur:
            row = await cur.fetchone()
        if row is None:
            async with self.db.execute(
                    f"SELECT {_COLUMNS} FROM exchanges WHERE request_id = ? ORDER BY ts DESC "
                    "LIMIT 1", (key,)) as cur:
                row = await cur.fetchone()
        return None if row is None else _exchange(row)

    async def count(self) -> int:
        async with self.db.execute("SELECT count(*) FROM exchanges") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def outcomes(self) -> dict[str, int]:
        async with self.db.execute("SELECT outcome, count(*) FROM exchanges GROUP BY outcome") as cur:
            return {o: int(n) async for o, n in cur}

    async def summary(self) -> dict[str, Any]:
        db = self.db
        routes: dict[tuple[str, str], dict[str, Any]] = {}

        def route(method: str | None, path: str | None) -> dict[str, Any]:
            key = (method or "?", path or "?")
            if key not in routes:
                routes[key] = {"method": key[0], "route": key[1], "total": 0, "compared": 0,
                               "matched": 0, "mismatched": 0, "skipped": 0, "v2_errors": 0,
                               "pending": 0, "v1_only": 0, "match_rate": None,
                               "v1_latency_ms": None, "v2_latency_ms": None, "top_diffs": []}
            return routes[key]

        totals = {o: 0 for o in (MATCH, MISMATCH, SKIPPED, V2_ERROR, PENDING, V1_ONLY)}
        async with db.execute("SELECT method, route, outcome, count(*) FROM exchanges "
                              "GROUP BY method, route, outcome") as cur:
            async for method, path, outcome, n in cur:
                r = route(method, path)
                r["total"] += n
                totals[outcome] = totals.get(outcome, 0) + n
                key = {MATCH: "matched", MISMATCH: "mismatched", SKIPPED: "skipped",
                       V2_ERROR: "v2_errors", PENDING: "pending", V1_ONLY: "v1_only"}[outcome]
                r[key] += n
        latencies: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        async with db.execute(
                "SELECT method, route, v1_latency_ms, v2_latency_ms FROM exchanges "
                f"WHERE outcome IN ('{MATCH}', '{MISMATCH}')") as cur:
            async for method, path, lat1, lat2 in cur:
                pair = latencies.setdefault((method or "?", path or "?"), ([], []))
                if lat1 is not None:
                    pair[0].append(lat1)
                if lat2 is not None:
                    pair[1].append(lat2)
        async with db.execute(
                "SELECT e.method, e.route, json_extract(d.value, '$.path'), "
                "json_extract(d.value, '$.kind'), count(*) AS n "
                f"FROM exchanges e, json_each(e.diff) d WHERE e.outcome = '{MISMATCH}' "
                "GROUP BY 1, 2, 3, 4 ORDER BY n DESC") as cur:
            async for method, path, dpath, kind, n in cur:
                top = route(method, path)["top_diffs"]
                if len(top) < 5:
                    top.append({"path": dpath, "kind": kind, "count": n})
        for route_key, r in routes.items():
            r["compared"] = r["matched"] + r["mismatched"]
            r["match_rate"] = round(r["matched"] / r["compared"], 6) if r["compared"] else None
            v1_lat, v2_lat = latencies.get(route_key, ([], []))
            r["v1_latency_ms"] = percentiles(v1_lat)
            r["v2_latency_ms"] = percentiles(v2_lat)
        compared = totals[MATCH] + totals[MISMATCH]
        return {
            "total": sum(totals.values()), "compared": compared, "matched": totals[MATCH],
            "mismatched": totals[MISMATCH], "skipped": totals[SKIPPED],
            "v2_errors": totals[V2_ERROR], "pending": totals[PENDING], "v1_only": totals[V1_ONLY],
            "match_rate": round(totals[MATCH] / compared, 6) if compared else None,
            "routes": sorted(routes.values(), key=lambda r: (-r["total"], r["route"], r["method"])),
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    values.sort()
    n = len(values)

    def at(q: float) -> float:
        return round(values[min(n - 1, max(0, int(q * n + 0.5) - 1))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def _exchange(row: Any) -> Exchange:
    (ident, request_id, ts, method, url, route, request, v1, v2, outcome, diff, signature, flags,
     compared_at) = row
    return Exchange(
        id=ident, request_id=request_id, ts=ts, method=method, url=url, route=route,
        request=codec.request_from_dict(codec.loads(request)) if request else None,
        v1=codec.answer_from_dict(codec.loads(v1)) if v1 else None,
        v2=codec.answer_from_dict(codec.loads(v2)) if v2 else None,
        outcome=outcome, diff=codec.diff_from_list(codec.loads(diff)) if diff else [],
        signature=signature, flags=codec.loads(flags) if flags else [], compared_at=compared_at,
    )
