"""The read models of the reports API (types only): what /api/summary, /api/routes,
/api/classes and /api/mismatches return, as every store builds them. The field names are
the contract in DESIGN.md: add fields freely, never rename them."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from shadow.deploys import FixedIn
from shadow.windows import WindowDoc

Percentiles = dict[str, float | None]  # {"p50", "p95", "p99"}: ms, None without samples


class PathKind(TypedDict):
    path: str
    kind: str


class StatusPair(TypedDict):
    v1: int | None
    v2: int | None
    count: int


class TopDiff(TypedDict):
    path: str
    kind: str
    count: int


class NoiseEntry(TypedDict):
    """A path where V1 disagreed with itself: `count` times in `observed` chances."""

    path: str
    count: int
    observed: int
    rate: float | None


class Counts(TypedDict):
    """Exchanges by outcome (of a route, or of them all)."""

    total: int
    compared: int  # matched + mismatched + compare_errors (errors fail)
    matched: int
    mismatched: int
    skipped: int
    v2_errors: int
    pending: int
    v1_only: int
    v1_missing: int
    compare_errors: int
    match_rate: float | None


class RouteSummary(Counts):
    method: str
    route: str
    kept: int  # exchange documents held as evidence (shadow.keep); the counts are all of them
    v1_latency_ms: Percentiles
    v2_latency_ms: Percentiles
    classes: int
    status_pairs: list[StatusPair]
    top_diffs: list[TopDiff]
    noise: list[NoiseEntry]  # where V1 and V1' disagreed
    suspected_noise: list[NoiseEntry]  # where V1's answers to identical requests changed


class Summary(Counts):
    kept: int  # exchange documents held as evidence (shadow.keep); the counts are all of them
    stale: int
    routes_overflowed: int  # exchanges counted as the one OTHER_ROUTE (--max-routes)
    routes: list[RouteSummary]
    window: WindowDoc  # the time window counted (shadow.windows: exact to the minute)
    # with segment=: the segment counted (shadow.segments); counts, rates and classes are its
    # own, latency, status pairs, noise and documents held the route's over every segment
    segment: NotRequired[str]
    # added by the reports API from Redis
    dropped_events: NotRequired[int | None]
    unconfirmed_events: NotRequired[int]  # published, not confirmed by --publish-wait-replicas
    trimmed_unprocessed: NotRequired[dict[str, int]]
    raw_bodies: NotRequired[list[str]]  # --capture-bodies globs whose bodies are stored raw
    trimmed_unread: NotRequired[dict[str, int]]  # by stream label: deleted by a safety limit unread
    streams: NotRequired[dict[str, Any]]  # by label (v1, v2), over every shard
    stream_shards: NotRequired[int]  # --stream-shards
    shards: NotRequired[list[dict[str, Any]]]  # with several shards: each one's streams
    warnings: NotRequired[list[str]]


class MismatchClass(TypedDict):
    signature: str
    method: str
    route: str
    count: int
    paths: list[PathKind]
    status: str  # one of model.CLASS_STATUSES
    examples: list[str]  # exchange ids
    first_seen: float | None
    last_seen: float | None
    ticket: str | None
    note: str | None
    reopened: bool
    reopened_at: float | None
    fixed_in: NotRequired[FixedIn | None]  # marked fixed: the V2 deploy expected to fix it
    reopened_after: NotRequired[FixedIn | None]  # reopened: the deploy that should have fixed it


class SegmentSummary(Counts):
    """A segment's counts (shadow.segments): /api/segments."""

    segment: str  # as queries name it ("(none)": no value; "(other)": past --max-segments)
    routes: int  # routes it was counted on


class ExchangeSummary(TypedDict):
    """A listing row: what an engineer scans, without bodies."""

    id: str
    request_id: str | None
    ts: float | None
    method: str | None
    url: str | None
    route: str | None
    outcome: str | None
    v1_status: int | None
    v2_status: int | None
    signature: str | None
    flags: list[str]
    compared_at: float | None
    replay_delay_ms: float | None
    diff: list[PathKind]  # the first ten differences
