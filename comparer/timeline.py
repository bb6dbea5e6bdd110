"""The time series behind the dashboard's chart (pure): the rollup counts grouped by step,
overall, per route and per mismatch class, with each class's first and last sighting.

A point counts the rollup buckets in its step, [ts, ts + step_s), aligned to the epoch
(UTC). Buckets are minutes, except in compacted stretches (shadow.windows.FOLDS: 10 minutes,
hours, days as they age), which the rollups know only as a whole: a bucket longer than the
step is a point of its own, `span_s` long (its start, its whole counts), never cut up. So
every count is in exactly one point, and `span_s` (the step, or the longer bucket) says what
time a point covers. Only points with traffic are listed (the axis is `from_ts` to
`until_ts`); a point's figures are those of /api/summary (records' Counts)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from comparer.records import COUNT_KEYS, _counts
from shadow.errors import ShadowError
from shadow.model import MISMATCH
from shadow.reports_model import Counts, MismatchClass, PathKind
from shadow.windows import (
    BUCKET_S,
    Marks,
    Window,
    WindowDoc,
    bucket_ceil,
    bucket_in,
    floor_to,
    span_at,
)

# steps the default picks from, finest first: about TARGET_POINTS points over the axis
STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
TARGET_POINTS = 120
MAX_POINTS = 1500  # a step asked for that would give more is raised (step_s says the one used)
MAX_CLASSES = 50  # classes listed, most counted in the window first
ACCEPTED_STEPS = "seconds (300) or a duration (90s, 5m, 1h, 1d, 1w), at least a minute"

_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Row = tuple[int, str | None, str | None, str, str | None, int]
"""(bucket, method, route, outcome, signature, n): a rollup count (roll_counts)."""


class TimelineError(ShadowError, ValueError):
    """A bad `step`: the message says what is accepted."""


class Point(Counts):
    ts: int  # the step's start, unix seconds
    span_s: int  # the time it covers: the step, or a compacted bucket longer than the step


class RouteSeries(TypedDict):
    method: str
    route: str
    total: int
    mismatched: int
    points: list[Point]


class ClassSeries(TypedDict):
    signature: str
    method: str
    route: str
    status: str
    paths: list[PathKind]
    count: int  # in the window
    count_all_time: int
    first_seen: float | None  # the class's own first and last sightings (all time)
    last_seen: float | None
    reopened_at: float | None
    points: list[tuple[int, int]]  # (step start, mismatches of this class)


class Timeline(TypedDict):
    window: WindowDoc
    step_s: int
    from_ts: int | None  # the axis (None: no traffic at all)
    until_ts: int | None
    points: list[Point]
    routes: list[RouteSeries]
    classes: list[ClassSeries]
    classes_left_out: int


def parse_step(text: str | None) -> int | None:
    """Seconds from `300`, `90s`, `5m`, `1h`, `1d`, `1w` (None or empty: the default),
    rounded up to whole minutes (the rollups' bucket)."""
    if text is None or not text.strip():
        return None
    m = _DURATION.match(text.strip())
    if m is None or int(m.group(1)) <= 0:
        raise TimelineError(f"step: expected {ACCEPTED_STEPS}, got {text!r}")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    return max(BUCKET_S, bucket_ceil(seconds))


def frame(w: Window, first_bucket: int | None, last_bucket: int | None, asked: int | None,
          now: float) -> tuple[int | None, int | None, int]:
    """(from_ts, until_ts, step_s): the axis of `w` (an open edge: the first bucket counted,
    or now) and the step, `asked` or chosen for about TARGET_POINTS points, raised when it
    would give more than MAX_POINTS."""
    lo = w.since if w.since is not None else first_bucket
    hi = w.until if w.until is not None else max(bucket_ceil(now), (last_bucket or 0) + BUCKET_S)
    if lo is None:
        return None, None, asked or STEPS[0]
    span = max(hi - lo, BUCKET_S)
    if asked is None:
        step = next((s for s in STEPS if span / s <= TARGET_POINTS), STEPS[-1])
    else:
        step = asked
    if span / step > MAX_POINTS:
        step = next((s for s in STEPS if s >= step and span / s <= MAX_POINTS),
                    bucket_ceil(math.ceil(span / MAX_POINTS)))
    return floor_to(lo, step), hi, step


def point_of(bucket: int, marks: Marks, step: int) -> tuple[int, int]:
    """(start, span) of the point a rollup bucket is counted in: its step, or, when the
    bucket (as the reports count it, before `marks`) is longer than the step, the bucket."""
    start, span = bucket_in(bucket, marks), span_at(bucket, marks)
    return (start, span) if span > step else (floor_to(start, step), step)


def shape(rows: Iterable[Row], book: Sequence[MismatchClass], w: Window, step: int,
          lo: int | None, hi: int | None, marks: Marks | None = None) -> Timeline:
    """The timeline from the window's rollup counts (`rows`, by bucket; `marks`: compaction's
    published boundaries) and the class book (the classes' own triage and first/last
    sightings)."""
    overall: dict[int, dict[str, int]] = defaultdict(_zero)
    by_route: dict[tuple[str, str], dict[int, dict[str, int]]] = defaultdict(
        lambda: defaultdict(_zero))
    by_class: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    spans: dict[int, int] = defaultdict(lambda: step)
    for bucket, method, route, outcome, signature, n in rows:
        name = COUNT_KEYS.get(outcome)
        if name is None or n <= 0:
            continue
        ts, span = point_of(bucket, marks or {}, step)
        spans[ts] = max(spans[ts], span)
        overall[ts][name] += n
        by_route[(method or "?", route or "?")][ts][name] += n
        if outcome == MISMATCH and signature:
            by_class[signature][ts] += n
    routes: list[RouteSeries] = []
    for (method, route), series in by_route.items():
        points = _points(series, spans)
        routes.append({"method": method, "route": route,
                       "total": sum(p["total"] for p in points),
                       "mismatched": sum(p["mismatched"] for p in points), "points": points})
    routes.sort(key=lambda r: (-r["total"], r["route"], r["method"]))
    known = {c["signature"]: c for c in book}
    classes: list[ClassSeries] = []
    for signature, counted in by_class.items():
        c = known.get(signature)
        if c is None:
            continue
        classes.append({"signature": signature, "method": c["method"], "route": c["route"],
                        "status": c["status"], "paths": c["paths"][:5],
                        "count": sum(counted.values()), "count_all_time": c["count"],
                        "first_seen": c["first_seen"], "last_seen": c["last_seen"],
                        "reopened_at": c["reopened_at"],
                        "points": sorted(counted.items())})
    classes.sort(key=lambda c: (-c["count"], c["signature"]))
    return {"window": w.doc(), "step_s": step, "from_ts": lo, "until_ts": hi,
            "points": _points(overall, spans), "routes": routes, "classes": classes,
            "classes_left_out": 0}


def view(t: Timeline, route: str | None = None, max_classes: int = MAX_CLASSES) -> Timeline:
    """What the API answers: with `route` (`/users/{id}` or `GET /users/{id}`), only that
    route's series and classes (the overall points stay); at most `max_classes` classes, the
    most counted, and how many were left out."""
    routes, classes = t["routes"], t["classes"]
    if route:
        method, _, path = route.strip().rpartition(" ")

        def wanted(m: str, r: str) -> bool:
            return r == path and (not method or m == method.upper())

        routes = [r for r in routes if wanted(r["method"], r["route"])]
        classes = [c for c in classes if wanted(c["method"], c["route"])]
    return {**t, "routes": routes, "classes": classes[:max_classes],
            "classes_left_out": t["classes_left_out"] + max(0, len(classes) - max_classes)}


def _zero() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS.values(), 0)


def _points(series: dict[int, dict[str, int]], spans: dict[int, int]) -> list[Point]:
    out: list[Any] = [{"ts": ts, "span_s": spans[ts], **_counts(n)}
                      for ts, n in sorted(series.items())]
    return out
