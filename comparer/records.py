"""What both stores share (pure): the records a driver writes (an event's part, a recorded
comparison and what it adds to the counters), the rules it applies (expiry, class status,
filters, route admission), and the read models it returns, shaped from its aggregates."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shadow import codec, segments
from shadow.compare import OTHER_ERROR, class_shape, error_kind_of
from shadow.deploys import FixedIn, reopens
from shadow.errors import StoreError
from shadow.filters import Filters
from shadow.model import (
    CLASS_ACCEPTED,
    CLASS_FIXED,
    CLASS_NEW,
    CLASS_STATUSES,
    COMPARE_ERROR,
    DIFFED,
    MATCH,
    MISMATCH,
    PENDING,
    SKIPPED,
    V1_MISSING,
    V1_ONLY,
    V2_ERROR,
    CandidateEvent,
    Comparison,
    Event,
    RequestEvent,
    RouteKey,
)
from shadow.noise import is_noise, noise_rate
from shadow.reports_model import (
    Counts,
    ExchangeSummary,
    MismatchClass,
    NoiseEntry,
    PathKind,
    RouteSummary,
    SegmentSummary,
    StatusPair,
    Summary,
)
from shadow.routes import route_template
from shadow.rules import OTHER_ROUTE
from shadow.stats import RouteEvidence, latency_bucket, percentiles
from shadow.windows import ALL_TIME, Marks, Window, bucket_in, floor_to, span_at

COUNT_KEYS = {MATCH: "matched", MISMATCH: "mismatched", SKIPPED: "skipped", V2_ERROR: "v2_errors",
              PENDING: "pending", V1_ONLY: "v1_only", V1_MISSING: "v1_missing",
              COMPARE_ERROR: "compare_errors"}
MAX_EXAMPLES = 5  # exchange ids kept per mismatch class
_MAX_NOISE_SHOWN = 10  # noise paths per route in the summary
_SHOWN_DIFFS = 10  # differences per exchange in a listing


# ---- writes ----

@dataclass(frozen=True, slots=True)
class RequestPart:
    id: str
    request_id: str
    ts: float
    method: str
    url: str
    route: str
    request: dict[str, Any]
    segment: str = segments.NONE  # shadow.segments: as the comparer named it


@dataclass(frozen=True, slots=True)
class AnswerPart:
    """V1's answer (side "v1") or V2's ("v2", with V1' as `secondary` in `answer`)."""

    id: str
    side: str
    ts: float
    answer: dict[str, Any]
    status: int | None
    latency_ms: float | None
    bucket: int | None


Part = RequestPart | AnswerPart


def parts(events: Iterable[Event], routes: Mapping[str, str] | None = None,
          segments_by_id: Mapping[str, str] | None = None) -> list[Part]:
    """Each event's part, in order. A request's route is the one the comparer named for its
    exchange id in `routes` (its rules, --max-routes), else the automatic template; its
    segment the one named in `segments_by_id` (--segment-by, --max-segments), else none."""
    out: list[Part] = []
    for e in events:
        if isinstance(e, RequestEvent):
            r = e.request
            route = (routes or {}).get(e.id) or route_template(r.url)
            out.append(RequestPart(e.id, e.request_id, e.ts, r.method, r.url, route,
                                   codec.request_to_dict(r),
                                   (segments_by_id or {}).get(e.id, segments.NONE)))
            continue
        a = e.answer
        doc = codec.answer_to_dict(a)
        if isinstance(e, CandidateEvent) and e.secondary is not None:
            doc["secondary"] = codec.answer_to_dict(e.secondary)
        out.append(AnswerPart(e.id, "v2" if isinstance(e, CandidateEvent) else "v1", e.ts, doc,
                              a.status, a.latency_ms, latency_bucket(a.latency_ms)))
    return out


@dataclass(frozen=True, slots=True)
class ClassHit:
    """One more mismatch of a class; its shape and method/route name a class seen first."""

    signature: str
    method: str | None
    route: str | None
    paths: list[PathKind]
    example: str | None  # None: its document is not kept (shadow.keep), not an example
    ts: float | None = None  # the exchange's (its arrival): whether it reopens a fixed class


@dataclass(slots=True)
class Tally:
    """What recorded comparisons add to the counters beside the exchanges."""

    rule_hits: dict[str, int] = field(default_factory=dict)  # rule id -> differences hidden
    noise_observed: dict[RouteKey, int] = field(default_factory=dict)  # exchanges with V1'
    noise: dict[tuple[str, str, str], int] = field(default_factory=dict)  # V1 != V1' per path
    classes: list[ClassHit] = field(default_factory=list)


def tally(recorded: Iterable[tuple[str, Comparison]],
          routes: Mapping[str, tuple[str | None, str | None]],
          times: Mapping[str, float | None] | None = None) -> Tally:
    """The counters' share of the comparisons just recorded; `routes` holds the (method,
    route) of each exchange recorded now: the others were decided before (a re-delivery,
    never counted twice); `times` their ts (for the classes they may reopen)."""
    t = Tally()
    for ident, c in recorded:
        if ident not in routes:
            continue
        method, route = routes[ident]
        for rule, n in c.suppressed.items():
            t.rule_hits[rule] = t.rule_hits.get(rule, 0) + n
        key = (method or "?", route or "?")
        if c.noise_paths is not None:
            t.noise_observed[key] = t.noise_observed.get(key, 0) + 1
            for path in c.noise_paths:
                t.noise[(*key, path)] = t.noise.get((*key, path), 0) + 1
        if c.outcome == MISMATCH and c.signature:
            shape: list[PathKind] = [{"path": p, "kind": k} for p, k in class_shape(c.diff)]
            t.classes.append(ClassHit(c.signature, method, route, shape, ident,
                                      (times or {}).get(ident)))
    return t


def reopening(hits: Iterable[tuple[str, str]],
              fixed: Mapping[str, tuple[FixedIn | None, float | None]],
              times: Mapping[str, float | None]) -> list[tuple[str, str]]:
    """Of the mismatches decided (exchange id, signature), in order, the ones that may open or
    reopen their class (what shadow.keep.openers then judges): all but those of a class marked
    fixed (`fixed`: its FixedIn and when that deploy went live, None: not yet) that do not
    reopen it, received (`times`) before the deploy of its fix (shadow.deploys.reopens)."""
    return [(ident, sig) for ident, sig in hits
            if sig not in fixed or reopens(*fixed[sig], times.get(ident))]


def reopened(hits: Iterable[ClassHit], fixed: Mapping[str, tuple[FixedIn | None, float | None]],
             ) -> dict[str, FixedIn | None]:
    """The classes marked fixed (`fixed`: the deploy of each one's fix and when it went live)
    that these mismatches reopen (shadow.deploys.reopens), each with what its reopening notes:
    that deploy, with the time it went live (None: it had none)."""
    out: dict[str, FixedIn | None] = {}
    for hit in hits:
        if hit.signature in fixed and hit.signature not in out:
            expected, due = fixed[hit.signature]
            if reopens(expected, due, hit.ts):
                out[hit.signature] = None if expected is None else {**expected, "ts": due}
    return out


@dataclass(frozen=True, slots=True)
class Expiry:
    """Pending exchanges past the join timeout whose parts are so get `outcome`. Applied in
    order: V1's answer without V2's; a skipped candidate without V1's answer; no V1 answer."""

    outcome: str
    v1: bool  # V1's answer is there
    v2: bool | None = None  # V2's answer is there (None: either way)
    v2_skipped: bool = False  # V2's answer is a skip


EXPIRY = (Expiry(V1_ONLY, v1=True, v2=False), Expiry(SKIPPED, v1=False, v2_skipped=True),
          Expiry(V1_MISSING, v1=False))


def checked_status(status: str) -> str:
    if status not in CLASS_STATUSES:
        raise StoreError(f"class status must be one of {', '.join(CLASS_STATUSES)}")
    return status


def filter_fields(f: Filters) -> list[tuple[str, Any]]:
    """The exchange fields a listing must equal (the others: path, window, cursor)."""
    return [(name, value) for name, value in (
        ("outcome", f.outcome), ("route", f.route), ("method", f.method),
        ("v1_status", f.v1_status), ("v2_status", f.v2_status), ("signature", f.signature))
        if value is not None]


def routes_to_admit(routes: Iterable[str]) -> list[str]:
    """The routes to look up or admit under --max-routes: OTHER_ROUTE never takes a place."""
    return sorted(set(routes) - {OTHER_ROUTE})


# ---- rollups ----
# What each exchange adds to the counters, by the minute bucket of its `ts` (its arrival at the
# proxy): one count per (bucket, method, route, outcome, signature or "", segment or ""), and
# for compared
# exchanges (DIFFED) a latency-histogram count per side and a status-pair count. A write
# moves an exchange's counts from its state before to its state after (both read in the
# write's own transaction, or atomically with it); deleting its document never does:
# counts outlive documents. Both stores write these deltas, batched.

# bucket, method, route, outcome, signature or "", segment (shadow.segments; "": none)
CountKey = tuple[int, str, str, str, str, str]
LatencyKey = tuple[int, str, str, str, int]  # bucket, method, route, side, latency bucket
StatusKey = tuple[int, str, str, int, int]  # bucket, method, route, v1 status, v2 status (0: none)
KeptKey = tuple[int, str, str, str]  # bucket, method, route, outcome: documents held (shadow.keep)

# the exchange fields a contribution depends on
CONTRIBUTION_FIELDS = ("ts", "method", "route", "outcome", "signature", "stale", "v1_bucket",
                       "v2_bucket", "v1_status", "v2_status", "segment")

# The rollup tables (collections), each with its key fields and its counts: by minute
# (bucket first: windows read a range of it) and for all time (the same without bucket).
ROLLUP_KEYS: dict[str, tuple[str, ...]] = {
    "roll_counts": ("bucket", "method", "route", "outcome", "signature", "segment"),
    "roll_latency": ("bucket", "method", "route", "side"),  # a histogram each (HISTOGRAMS)
    "roll_status": ("bucket", "method", "route", "v1_status", "v2_status"),
    "route_counts": ("method", "route", "outcome", "signature", "segment"),
    "route_latency": ("method", "route", "side"),
    "route_status": ("method", "route", "v1_status", "v2_status"),
    # documents held: +1 while an exchange's document exists, in its state's place; the keep
    # policy's drops and every deletion take it away (`forget`), its counts stay
    "roll_kept": ("bucket", "method", "route", "outcome"),
    "route_kept": ("method", "route", "outcome"),
}
# The latency tables hold one histogram per key (comparer.histograms), not counts: every
# latency bucket of a (time bucket, method, route, side) in one row.
HISTOGRAMS = ("roll_latency", "route_latency")
ROLLUP_COUNTS: dict[str, tuple[str, ...]] = {
    name: ("n", "stale") if name.endswith("_counts") else ("n",) for name in ROLLUP_KEYS
    if name not in HISTOGRAMS}


@dataclass(slots=True)
class Rollup:
    """Counter deltas: `add(doc, +1)` for an exchange's state after a write, `add(doc, -1)`
    for its state before. Entries that cancel out are left out of `items`. An exchange
    before the `folded` marks (compaction's) is counted in its coarser bucket there."""

    folded: Marks = field(default_factory=dict)
    counts: dict[CountKey, list[int]] = field(default_factory=dict)  # key -> [n, stale]
    latency: dict[LatencyKey, int] = field(default_factory=dict)
    statuses: dict[StatusKey, int] = field(default_factory=dict)
    kept: dict[KeptKey, int] = field(default_factory=dict)

    def add(self, doc: Mapping[str, Any] | None, sign: int) -> None:
        if doc is None:
            return
        ts = doc.get("ts")
        bucket = bucket_in(ts, self.folded) if isinstance(ts, (int, float)) else 0
        method, route = doc.get("method") or "?", doc.get("route") or "?"
        outcome = doc.get("outcome") or PENDING
        self.hold(doc, sign)
        key = (bucket, method, route, outcome, doc.get("signature") or "",
               doc.get("segment") or segments.NONE)
        n = self.counts.setdefault(key, [0, 0])
        n[0] += sign
        n[1] += sign * int(doc.get("stale") or 0)
        if outcome not in DIFFED:
            return
        for side in ("v1", "v2"):
            lat = doc.get(f"{side}_bucket")
            if lat is not None:
                lkey = (bucket, method, route, side, int(lat))
                self.latency[lkey] = self.latency.get(lkey, 0) + sign
        skey = (bucket, method, route, doc.get("v1_status") or 0, doc.get("v2_status") or 0)
        self.statuses[skey] = self.statuses.get(skey, 0) + sign

    def move(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        """An exchange went from `before` (None: it is new) to `after`."""
        self.add(before, -1)
        self.add(after, +1)

    def hold(self, doc: Mapping[str, Any], sign: int) -> None:
        """Documents held only (counts untouched): +1 for one found stored (a migration),
        -1 for one deleted (`forget`)."""
        ts = doc.get("ts")
        key = (bucket_in(ts, self.folded) if isinstance(ts, (int, float)) else 0,
               doc.get("method") or "?", doc.get("route") or "?", doc.get("outcome") or PENDING)
        self.kept[key] = self.kept.get(key, 0) + sign

    def forget(self, doc: Mapping[str, Any]) -> None:
        """The exchange's document is deleted (dropped by the keep policy, or by retention):
        it is no longer held, and its counts stay."""
        self.hold(doc, -1)

    def writes(self) -> dict[str, list[tuple[tuple[Any, ...], tuple[int, ...]]]]:
        """Per rollup table of counts (ROLLUP_COUNTS), the increments to add: (key, counts as
        named there), none that cancel out. All time is the sum over the buckets. The
        latency histograms: `histograms`."""
        out: dict[str, dict[tuple[Any, ...], list[int]]] = {name: {} for name in ROLLUP_COUNTS}

        def inc(name: str, key: tuple[Any, ...], *by: int) -> None:
            for table, k in ((f"roll_{name}", key), (f"route_{name}", key[1:])):
                current = out[table].setdefault(k, [0] * len(by))
                for i, n in enumerate(by):
                    current[i] += n

        for key, (n, stale) in self.counts.items():
            inc("counts", key, n, stale)
        for skey, n in self.statuses.items():
            inc("status", skey, n)
        for kkey, n in self.kept.items():
            inc("kept", kkey, n)
        return {name: [(k, tuple(v)) for k, v in rows.items() if any(v)]
                for name, rows in out.items()}

    def histograms(self) -> dict[str, list[tuple[tuple[Any, ...], dict[int, int]]]]:
        """Per latency table (HISTOGRAMS), the histograms to add to its rows: (key, {latency
        bucket: n}), none that cancel out. All time is the sum over the buckets."""
        out: dict[str, dict[tuple[Any, ...], dict[int, int]]] = {name: {} for name in HISTOGRAMS}
        for (bucket, method, route, side, lat), n in self.latency.items():
            if n:
                for table, key in (("roll_latency", (bucket, method, route, side)),
                                   ("route_latency", (method, route, side))):
                    h = out[table].setdefault(key, {})
                    h[lat] = h.get(lat, 0) + n
        return {name: [(k, {b: n for b, n in h.items() if n}) for k, h in rows.items()
                       if any(h.values())] for name, rows in out.items()}


def fold(rows: Iterable[tuple[tuple[Any, ...], Sequence[int]]], span: int,
         ) -> list[tuple[tuple[Any, ...], tuple[int, ...]]]:
    """Compaction: rollup rows (key with the bucket first, counts) summed into the bucket of
    `span` each falls in, as increments to add there (none that sum to nothing)."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for key, counts in rows:
        coarse = (floor_to(key[0], span), *key[1:])
        current = out.setdefault(coarse, [0] * len(counts))
        for i, n in enumerate(counts):
            current[i] += n
    return [(k, tuple(v)) for k, v in out.items() if any(v)]


def window_classes(counted: Iterable[tuple[str, int, int, int]], classes: Iterable[MismatchClass],
                   marks: Marks | None = None) -> list[MismatchClass]:
    """The classes seen in a window, from their counts there: (signature, n, first bucket,
    last bucket) each, and their triage from the class book. `count` is the window's;
    `first_seen`/`last_seen` are the class's own sightings when they fall in the first/last
    bucket it was counted in, else that bucket's start/end (exact to the bucket: a minute,
    or the 10 minutes, hour or day of a compacted stretch, before `marks`)."""
    book = {c["signature"]: c for c in classes}
    out: list[MismatchClass] = []
    for sig, n, first, last in counted:
        c = book.get(sig)
        if c is None or n <= 0:
            continue
        first = floor_to(first, span_at(first, marks or {}))
        last_span = span_at(last, marks or {})
        last = floor_to(last, last_span)
        own_first, own_last = c["first_seen"], c["last_seen"]
        first_seen = own_first if own_first is not None and \
            first <= own_first < first + span_at(first, marks or {}) else float(first)
        last_seen = own_last if own_last is not None and last <= own_last < last + last_span \
            else float(last + last_span)
        out.append({**c, "count": n, "first_seen": first_seen, "last_seen": last_seen})
    return sorted(out, key=lambda c: (-c["count"], c["signature"]))


# ---- reads ----

def class_doc(signature: str, method: str | None, route: str | None, paths: list[PathKind],
              count: int, first_seen: float | None, last_seen: float | None,
              examples: list[str], status: str, ticket: str | None, note: str | None,
              reopened_at: float | None, fixed_in: FixedIn | None = None,
              reopened_after: FixedIn | None = None) -> MismatchClass:
    """A class as reports show it. `fixed_in`: the deploy a class marked fixed expects its fix
    in (shadow.deploys.fixed_in); `reopened_after`: a reopened class's, when it had one."""
    reopened = reopened_at is not None and status == CLASS_NEW
    return {"signature": signature, "method": method or "?", "route": route or "?",
            "count": count, "paths": paths, "status": status, "examples": examples,
            "first_seen": first_seen, "last_seen": last_seen, "ticket": ticket, "note": note,
            "reopened": reopened, "reopened_at": reopened_at,
            "fixed_in": fixed_in if status == CLASS_FIXED else None,
            "reopened_after": reopened_after if reopened else None}


def segment_classes(counted: Iterable[tuple[str, int]], classes: Iterable[MismatchClass],
                    ) -> list[MismatchClass]:
    """The classes counted in a segment over all time: (signature, n) each, with that count;
    their sightings and triage are the class's own."""
    book = {c["signature"]: c for c in classes}
    out: list[MismatchClass] = [{**book[sig], "count": n}
                                for sig, n in counted if sig in book and n > 0]
    return sorted(out, key=lambda c: (-c["count"], c["signature"]))


def segment_list(rows: Iterable[tuple[str, str, str, str, int]]) -> list[SegmentSummary]:
    """/api/segments: per segment, its counts (as a route's), from rows of (segment, method,
    route, outcome, n); most counted first."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNT_KEYS.values(), 0))
    routes: dict[str, set[RouteKey]] = defaultdict(set)
    for segment, method, route, outcome, n in rows:
        if n > 0:
            counts[segment][COUNT_KEYS[outcome]] += n
            routes[segment].add((method, route))
    out: list[SegmentSummary] = [
        {"segment": segments.shown(seg), **_counts(n), "routes": len(routes[seg])}  # type: ignore[typeddict-item]
        for seg, n in counts.items()]
    return sorted(out, key=lambda s: (-s["total"], s["segment"]))


def exchange_summary(row: Mapping[str, Any]) -> ExchangeSummary:
    """A listing row from a stored row (diff and flags as JSON text or as lists)."""
    diff = codec.loads(row["diff"]) if isinstance(row.get("diff"), (str, bytes)) else row.get("diff")
    flags = codec.loads(row["flags"]) if isinstance(row.get("flags"), (str, bytes)) else row.get("flags")
    return {"id": row["id"], "request_id": row.get("request_id"), "ts": row.get("ts"),
            "method": row.get("method"), "url": row.get("url"), "route": row.get("route"),
            "outcome": row.get("outcome"), "v1_status": row.get("v1_status"),
            "v2_status": row.get("v2_status"), "signature": row.get("signature"),
            "flags": flags or [], "compared_at": row.get("compared_at"),
            "replay_delay_ms": row.get("replay_delay_ms"),
            "diff": [{"path": d["path"], "kind": d["kind"]} for d in (diff or [])[:_SHOWN_DIFFS]]}


@dataclass(slots=True)
class Aggregates:
    """What a store gathers for the summary, as rows of plain values."""

    counts: list[tuple[str, str, str, int]]  # method, route, outcome, n
    latency: list[tuple[str, str, str, int, int]]  # method, route, side, bucket, n
    statuses: list[tuple[str, str, int, int, int]]  # method, route, v1 status, v2 status, n
    classes: list[MismatchClass]
    stale: int
    noise: list[tuple[str, str, str, int]] = field(default_factory=list)  # method, route, path, n
    observed: list[tuple[str, str, int]] = field(default_factory=list)  # method, route, n
    suspected: list[tuple[str, str, str, int]] = field(default_factory=list)
    repeats: list[tuple[str, str, int]] = field(default_factory=list)
    kept: list[tuple[str, str, str, int]] = field(default_factory=list)  # method, route, outcome, n


def _noise_entries(rows: Iterable[tuple[str, str, str, int]], observed: Iterable[tuple[str, str, int]],
                   ) -> dict[RouteKey, list[NoiseEntry]]:
    """Per route, its noise paths, most frequent first."""
    seen = {(m, r): n for m, r, n in observed}
    out: dict[RouteKey, list[NoiseEntry]] = defaultdict(list)
    for method, route, path, n in sorted(rows, key=lambda row: (-row[3], row[2])):
        total = seen.get((method, route), 0)
        out[(method, route)].append({"path": path, "count": n, "observed": total,
                                     "rate": noise_rate(n, total)})
    return out


def learned_noise(suspected: Iterable[tuple[str, str, str, int]],
                  repeats: Iterable[tuple[str, str, int]]) -> dict[RouteKey, list[str]]:
    """Per route, the suspected noise paths that count as noise (of the ones shown)."""
    return {key: [n["path"] for n in entries[:_MAX_NOISE_SHOWN]
                  if is_noise(n["rate"], n["observed"])]
            for key, entries in _noise_entries(suspected, repeats).items()}


def summary(a: Aggregates, window: Window = ALL_TIME, segment: str | None = None) -> Summary:
    """The /api/summary object from a store's aggregates (counted in `window`; with a
    `segment`, its counts and classes gathered for that segment only)."""
    counts: dict[RouteKey, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNT_KEYS.values(), 0))
    for method, route, outcome, n in a.counts:
        if n > 0:
            counts[(method, route)][COUNT_KEYS[outcome]] += n
    hist: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for method, route, side, bucket, n in a.latency:
        hist[(method, route, side)].append((bucket, n))
    pairs: dict[RouteKey, list[StatusPair]] = defaultdict(list)
    for method, route, v1, v2, n in a.statuses:
        if n > 0:
            pairs[(method, route)].append({"v1": v1 or None, "v2": v2 or None, "count": n})
    keys = set(counts) | {(m, r) for m, r, _ in hist} | set(pairs)
    if segment is not None:  # the routes it was counted on (latency and pairs: every segment's)
        keys = set(counts)
    classes: dict[RouteKey, int] = defaultdict(int)
    paths: dict[RouteKey, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for c in a.classes:
        key = (c["method"], c["route"])
        if key in keys:
            classes[key] += 1
            for p in c["paths"]:
                paths[key][(p["path"], p["kind"])] += c["count"]
    noise = _noise_entries(a.noise, a.observed)
    suspected = _noise_entries(a.suspected, a.repeats)
    kept: dict[RouteKey, int] = defaultdict(int)  # documents held
    for method, route, _, n in a.kept:
        kept[(method, route)] += n
    routes = [_route(key, counts[key], hist, pairs[key], classes[key], paths[key],
                     noise.get(key, []), suspected.get(key, []), kept[key]) for key in keys]
    totals = {name: sum(n[name] for n in counts.values()) for name in COUNT_KEYS.values()}
    out: Summary = {
        **_counts(totals),
        "kept": sum(kept.values()),
        "stale": a.stale,
        "routes_overflowed": sum(r["total"] for r in routes if r["route"] == OTHER_ROUTE),
        "routes": sorted(routes, key=lambda r: (-r["total"], r["route"], r["method"])),
        "window": window.doc(),
    }
    if segment is not None:
        out["segment"] = segments.shown(segment)
    return out


def _counts(n: Mapping[str, int]) -> Counts:
    """Totals from the counts per outcome (named as in COUNT_KEYS)."""
    compared = n["matched"] + n["mismatched"] + n["compare_errors"]  # errors fail
    return {"total": sum(n.values()), "compared": compared, "matched": n["matched"],
            "mismatched": n["mismatched"], "skipped": n["skipped"], "v2_errors": n["v2_errors"],
            "pending": n["pending"], "v1_only": n["v1_only"], "v1_missing": n["v1_missing"],
            "compare_errors": n["compare_errors"],
            "match_rate": round(n["matched"] / compared, 6) if compared else None}


def _route(key: RouteKey, n: dict[str, int], hist: Mapping[tuple[str, str, str], list[tuple[int, int]]],
           pairs: list[StatusPair], classes: int, paths: Mapping[tuple[str, str], int],
           noise: list[NoiseEntry], suspected: list[NoiseEntry], kept: int = 0) -> RouteSummary:
    method, route = key
    top = sorted(paths.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {
        "method": method, "route": route, **_counts(n), "kept": kept,
        "v1_latency_ms": percentiles(hist.get((method, route, "v1"), [])),
        "v2_latency_ms": percentiles(hist.get((method, route, "v2"), [])),
        "classes": classes,
        "status_pairs": sorted(pairs, key=lambda s: -s["count"]),
        "top_diffs": [{"path": p, "kind": k, "count": c} for (p, k), c in top],
        "noise": noise[:_MAX_NOISE_SHOWN], "suspected_noise": suspected[:_MAX_NOISE_SHOWN],
    }


def evidence(summary: Summary, classes: Sequence[MismatchClass],
             mismatches: Iterable[tuple[str | None, str | None, str | None, int]],
             ) -> list[RouteEvidence]:
    """Per-route evidence for the verdict from the summary (counts and latency percentiles),
    the class statuses and the counts per (method, route, signature) of mismatches and V2
    errors (a V2 error's signature names its kind: V2_ERROR_PREFIX + kind): accepted
    classes count as matches; V2 errors and compare errors as failures."""
    triage = {c["signature"]: (c["status"], c.get("ticket")) for c in classes}
    failing: dict[RouteKey, dict[str, int]] = {}
    errors: dict[RouteKey, dict[str, int]] = {}
    accepted: dict[RouteKey, int] = {}
    for method, route, sig, n in mismatches:
        key = (method or "?", route or "?")
        kind = error_kind_of(sig)
        if kind is not None:
            errors.setdefault(key, {})[kind] = errors.get(key, {}).get(kind, 0) + n
        elif triage.get(sig or "", (None,))[0] == CLASS_ACCEPTED:
            accepted[key] = accepted.get(key, 0) + n
        else:
            failing.setdefault(key, {})[sig or "?"] = n
    out = []
    for r in summary["routes"]:
        key = (r["method"], r["route"])
        kinds = errors.get(key, {})
        if sum(kinds.values()) < r["v2_errors"]:  # recorded before errors had a kind
            kinds[OTHER_ERROR] = kinds.get(OTHER_ERROR, 0) + r["v2_errors"] - sum(kinds.values())
        out.append(RouteEvidence(
            r["method"], r["route"], r["compared"], r["matched"], accepted.get(key, 0),
            failing.get(key, {}), v2_errors=kinds, compare_errors=r["compare_errors"],
            v1_latency_ms=dict(r["v1_latency_ms"]), v2_latency_ms=dict(r["v2_latency_ms"]),
            triage={sig: triage.get(sig, (CLASS_NEW, None)) for sig in failing.get(key, {})}))
    return out
