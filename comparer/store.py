"""The store contract (one document per exchange id, every write idempotent) and the
backend-independent shaping of what the stores return."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from shadow import codec
from shadow.errors import ConfigError
from shadow.filters import Filters
from shadow.model import (
    COMPARE_ERROR,
    MATCH,
    MISMATCH,
    PENDING,
    SKIPPED,
    V1_MISSING,
    V1_ONLY,
    V2_ERROR,
    Comparison,
    Event,
    Exchange,
    Request,
)
from shadow.rules import OTHER_ROUTE
from shadow.stats import RouteEvidence, percentiles

CLASS_STATUSES = ("new", "known", "accepted", "bug", "fixed")
_COUNT_KEYS = {MATCH: "matched", MISMATCH: "mismatched", SKIPPED: "skipped", V2_ERROR: "v2_errors",
               PENDING: "pending", V1_ONLY: "v1_only", V1_MISSING: "v1_missing",
               COMPARE_ERROR: "compare_errors"}
# Outcomes still open to a late part: the join timeout gave them an outcome, and the missing
# answer, arriving later, reopens them.
UNDECIDED = (PENDING, V1_ONLY, V1_MISSING)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, events: list[Event],
                    route_of: Callable[[Request], str] | None = None) -> list[Exchange]:
        """Upsert each event's part (idempotent; the first copy of a part wins). Returns the
        touched exchanges that now have both answers and are not decided yet. `route_of`
        names a request's route (default: the automatic template)."""

    async def complete(self, results: list[tuple[str, Comparison]]) -> list[str]:
        """Record outcomes of undecided exchanges; an already decided one is left as is, and
        the rules' suppression counts of recorded ones are added up. Returns the ids recorded
        now (so a re-delivery is never counted twice)."""

    async def rule_hits(self) -> dict[str, int]:
        """Differences each rule has hidden so far."""

    async def add_suspected(self, observed: dict[tuple[str, str], int],
                            paths: dict[tuple[str, str, str], int]) -> None:
        """Count repeats of identical requests per route, and the paths where V1 changed."""

    async def expire(self, older_than_ts: float) -> int:
        """Pending exchanges older than the join timeout get an outcome, whichever part is
        missing: no V2 answer -> v1_only; no V1 answer -> skipped when V2 was skipped too,
        else v1_missing. Returns how many."""

    async def admit_routes(self, routes: list[str], max_routes: int) -> set[str]:
        """Of `routes`, those counted apart: the ones already known, and new ones admitted
        while fewer than `max_routes` are known (atomically, across every process sharing
        the store). The others count as OTHER_ROUTE."""

    async def retain(self, *, max_age_s: float | None, max_docs: int | None) -> int:
        """Delete the oldest exchanges beyond the limits. Returns how many."""

    async def get(self, key: str) -> Exchange | None:
        """By exchange id, or by request id (newest first)."""

    async def count(self) -> int: ...

    async def outcomes(self) -> dict[str, int]: ...

    async def list_exchanges(self, f: Filters) -> tuple[list[dict[str, Any]], str | None]:
        """Exchange summaries, newest first (by id), and the cursor of the next page."""

    async def classes(self, *, signature: str | None = None) -> list[dict[str, Any]]: ...

    async def set_class_status(self, signature: str, status: str, ticket: str | None = None,
                               note: str | None = None) -> dict[str, Any] | None: ...

    async def summary(self) -> dict[str, Any]: ...

    async def route_evidence(self) -> list[RouteEvidence]: ...


def open_store(url: str, *, retention_max_age_s: float | None = None) -> Store:
    if url.startswith("sqlite:///"):
        from comparer.stores.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from comparer.stores.mongo import MongoStore

        return MongoStore(url, retention_max_age_s=retention_max_age_s)
    raise ConfigError(f"unsupported store {url!r}: use sqlite:///path/to/shadow.db or mongodb://...")


def class_doc(signature: str, method: str | None, route: str | None, paths: list[dict[str, str]],
              count: int, first_seen: float | None, last_seen: float | None,
              examples: list[str], status: str, ticket: str | None, note: str | None,
              reopened_at: float | None) -> dict[str, Any]:
    return {"signature": signature, "method": method or "?", "route": route or "?",
            "count": count, "paths": paths, "status": status, "examples": examples,
            "first_seen": first_seen, "last_seen": last_seen, "ticket": ticket, "note": note,
            "reopened": reopened_at is not None and status == "new", "reopened_at": reopened_at}


def exchange_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A listing row: what an engineer scans, without bodies."""
    diff = codec.loads(row["diff"]) if isinstance(row.get("diff"), (str, bytes)) else row.get("diff")
    flags = codec.loads(row["flags"]) if isinstance(row.get("flags"), (str, bytes)) else row.get("flags")
    return {"id": row["id"], "request_id": row.get("request_id"), "ts": row.get("ts"),
            "method": row.get("method"), "url": row.get("url"), "route": row.get("route"),
            "outcome": row.get("outcome"), "v1_status": row.get("v1_status"),
            "v2_status": row.get("v2_status"), "signature": row.get("signature"),
            "flags": flags or [], "compared_at": row.get("compared_at"),
            "replay_delay_ms": row.get("replay_delay_ms"),
            "diff": [{"path": d["path"], "kind": d["kind"]} for d in (diff or [])[:10]]}


def summary_from_aggregates(counts: list[tuple[Any, ...]], latency: list[tuple[Any, ...]],
                            statuses: list[tuple[Any, ...]], classes: list[dict[str, Any]],
                            stale: int, noise: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
                            observed: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
                            suspected: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
                            repeats: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
                            ) -> dict[str, Any]:
    """The /api/summary object from per-route aggregates (any backend)."""
    routes: dict[tuple[str, str], dict[str, Any]] = {}

    def route(method: str, path: str) -> dict[str, Any]:
        key = (method, path)
        if key not in routes:
            routes[key] = {"method": method, "route": path, "total": 0, "compared": 0,
                           "matched": 0, "mismatched": 0, "skipped": 0, "v2_errors": 0,
                           "pending": 0, "v1_only": 0, "v1_missing": 0, "compare_errors": 0,
                           "match_rate": None,
                           "v1_latency_ms": percentiles([]), "v2_latency_ms": percentiles([]),
                           "classes": 0, "status_pairs": [], "top_diffs": [], "noise": [],
                           "suspected_noise": []}
        return routes[key]

    totals = dict.fromkeys(_COUNT_KEYS.values(), 0)
    for method, path, outcome, n in counts:
        if n <= 0:
            continue
        r = route(method, path)
        r["total"] += n
        r[_COUNT_KEYS[outcome]] += n
        totals[_COUNT_KEYS[outcome]] += n
    hist: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for method, path, side, bucket, n in latency:
        hist[(method, path, side)].append((bucket, n))
    for (method, path, side), buckets in hist.items():
        route(method, path)[f"{side}_latency_ms"] = percentiles(buckets)
    for method, path, v1, v2, n in statuses:
        if n > 0:
            route(method, path)["status_pairs"].append({"v1": v1 or None, "v2": v2 or None,
                                                         "count": n})
    paths: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for c in classes:
        key = (c["method"], c["route"])
        if key in routes:
            routes[key]["classes"] += 1
            for p in c["paths"]:
                paths[key][(p["path"], p["kind"])] += c["count"]
    for key, r in routes.items():
        r["compared"] = r["matched"] + r["mismatched"] + r["compare_errors"]  # errors fail
        r["match_rate"] = round(r["matched"] / r["compared"], 6) if r["compared"] else None
        r["status_pairs"].sort(key=lambda s: -s["count"])
        top = sorted(paths[key].items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        r["top_diffs"] = [{"path": p, "kind": k, "count": n} for (p, k), n in top]
    for name, rows, totals_rows in (("noise", noise, observed),
                                    ("suspected_noise", suspected, repeats)):
        seen = {(m, r): n for m, r, n in totals_rows}
        for method, path, field_path, n in sorted(rows, key=lambda row: (-row[3], row[2])):
            key = (method, path)
            if key in routes and len(routes[key][name]) < 10:
                total = seen.get(key, 0)
                routes[key][name].append({"path": field_path, "count": n, "observed": total,
                                          "rate": round(n / total, 4) if total else None})
    compared = totals["matched"] + totals["mismatched"] + totals["compare_errors"]
    return {
        "total": sum(totals.values()), "compared": compared, **totals,
        "match_rate": round(totals["matched"] / compared, 6) if compared else None,
        "stale": stale,
        # exchanges counted as the one OTHER_ROUTE because --max-routes routes were known
        "routes_overflowed": sum(r["total"] for r in routes.values() if r["route"] == OTHER_ROUTE),
        "routes": sorted(routes.values(), key=lambda r: (-r["total"], r["route"], r["method"])),
    }


def evidence_from(summary: dict[str, Any], classes: list[dict[str, Any]],
                  mismatches: list[tuple[str | None, str | None, str | None, int]],
                  ) -> list[RouteEvidence]:
    """Per-route evidence for the verdict from the summary, the class statuses and the
    mismatch counts per (method, route, signature): accepted classes count as matches, and
    compare errors as failures."""
    status = {c["signature"]: c["status"] for c in classes}
    failing: dict[tuple[str, str], dict[str, int]] = {
        (r["method"], r["route"]): {COMPARE_ERROR: r["compare_errors"]}
        for r in summary["routes"] if r.get("compare_errors")}
    accepted: dict[tuple[str, str], int] = {}
    for method, route, sig, n in mismatches:
        key = (method or "?", route or "?")
        if status.get(sig) == "accepted":
            accepted[key] = accepted.get(key, 0) + n
        else:
            failing.setdefault(key, {})[sig or "?"] = n
    return [RouteEvidence(r["method"], r["route"], r["compared"], r["matched"],
                          accepted.get((r["method"], r["route"]), 0),
                          failing.get((r["method"], r["route"]), {}))
            for r in summary["routes"]]
