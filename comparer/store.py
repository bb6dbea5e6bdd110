"""The store contract: one document per exchange id, every write idempotent. The backends
(comparer/stores/) hold the driver code; what they share is comparer/records.py.

Counts are rollups: every exchange is counted by the minute of its `ts` (its arrival at the
proxy) in the same write as its document, an exchange that changes (pending -> match,
v1_only -> match...) moves its count in that minute, and deleting a document (retention)
never changes a count. Every report reads the rollups, for all time or for a `Window`
(shadow.windows: exact to the minute), never the exchanges.

Housekeeping (comparer/housekeeping.py runs it, off the ingest path): `compact` folds old
minute buckets into 10 minutes, hours and days (shadow.windows.FOLDS), so a window edge there
is exact to that bucket (`resolve` says which); `retain` deletes documents by age,
count and disk budget and rollup buckets by age, oldest first, in short batches, never a
class's last example and never a count; `forget_tombstones` deletes the keep policy's
tombstones once no part of their exchanges can still arrive (shadow.horizon)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from comparer.timeline import Timeline
from shadow.credentials import mask_url
from shadow.deploys import Deploy, FixedIn, round_up, since_deploy
from shadow.errors import ConfigError
from shadow.filters import Filters
from shadow.keep import EVERYTHING, KeepPolicy
from shadow.model import Comparison, Event, Exchange, RouteKey
from shadow.reports_model import ExchangeSummary, MismatchClass, SegmentSummary, Summary
from shadow.stats import RouteEvidence
from shadow.windows import ALL_TIME, Window


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, events: list[Event], routes: Mapping[str, str] | None = None,
                    segments: Mapping[str, str] | None = None) -> list[Exchange]:
        """Upsert each event's part (idempotent; the first copy of a part wins). Returns the
        touched exchanges that now have both answers and are not decided yet. `routes` holds
        the route of each request by exchange id (default: the automatic template),
        `segments` its segment (shadow.segments; default none)."""

    async def complete(self, results: list[tuple[str, Comparison]], *,
                       keep: KeepPolicy = EVERYTHING) -> list[str]:
        """Record outcomes of undecided exchanges; an already decided one is left as is, and
        the rules' suppression counts of recorded ones are added up. Returns the ids recorded
        now (so a re-delivery is never counted twice). The documents `keep` (shadow.keep)
        does not keep are deleted with it, each leaving a tombstone: a late or re-delivered
        part of that exchange is ignored by `apply` (never stored or counted again), for as
        long as one can still arrive (`forget_tombstones`)."""

    async def rule_hits(self) -> dict[str, int]:
        """Differences each rule has hidden so far."""

    async def add_suspected(self, observed: dict[tuple[str, str], int],
                            paths: dict[tuple[str, str, str], int]) -> None:
        """Count repeats of identical requests per route, and the paths where V1 changed."""

    async def suspected(self) -> dict[RouteKey, list[str]]:
        """Per (method, route), the paths where V1's answers to identical requests changed
        often enough to count as noise (shadow.noise.is_noise)."""

    async def expire(self, older_than_ts: float, *, keep: KeepPolicy = EVERYTHING) -> int:
        """Pending exchanges older than the join timeout get an outcome, whichever part is
        missing: no V2 answer -> v1_only; no V1 answer -> skipped when V2 was skipped too,
        else v1_missing. Returns how many. Their documents go through `keep` as in
        `complete`: one dropped is final (a V2 answer arriving later is ignored)."""

    async def admit_routes(self, routes: list[str], max_routes: int) -> set[str]:
        """Of `routes`, those counted apart: the ones already known, and new ones admitted
        while fewer than `max_routes` are known (atomically, across every process sharing
        the store). The others count as OTHER_ROUTE."""

    async def admit_segments(self, names: list[str], max_segments: int) -> set[str]:
        """The same for segments (--max-segments): the others count as segments.OTHER; the
        segments NONE and OTHER never take a place."""

    async def retain(self, *, max_age_s: float | None = None, max_docs: int | None = None,
                     max_bytes: int | None = None, rollup_max_age_s: float | None = None,
                     now: float | None = None) -> int:
        """Delete the oldest exchange documents beyond the limits: older than `max_age_s`,
        past `max_docs`, and while the store is over `max_bytes` (size_bytes); and rollup
        buckets (whole days) older than `rollup_max_age_s`. Counts stay (all-time ones always,
        windows up to the rollup age), and so does each class's last example. In small
        batches, yielding to the comparer's writes between them. Returns documents deleted."""

    async def forget_tombstones(self, before_ts: float) -> int:
        """Delete the tombstones of dropped exchanges whose latest part came before
        `before_ts` (unix seconds; shadow.horizon: the streams hold nothing of them any more),
        in small batches; not those decided without V1's answer (it may still come: they go
        with the documents' age limit, in `retain`). Returns how many."""

    async def compact(self, now: float | None = None, *, settle_s: float = 60.0) -> int:
        """Fold old per-minute rollup rows into 10 minutes, hours and days (FOLDS), in
        small batches; boundaries move first and rows are folded below one only `settle_s`
        after it moved. Every report for a window aligned to the coarser buckets, and for
        all time, stays the same. Returns the rows folded."""

    async def resolve(self, window: Window) -> Window:
        """The window the rollups answer exactly: an edge in a compacted stretch rounded to
        its bucket there (what every report for `window` covers and says)."""

    async def size_bytes(self) -> int:
        """What the store holds, as the disk budget counts it."""

    async def get(self, key: str) -> Exchange | None:
        """By exchange id, or by request id (newest first)."""

    async def count(self, window: Window = ALL_TIME) -> int:
        """Exchanges counted (in the window), whether their documents are kept or not."""

    async def outcomes(self, window: Window = ALL_TIME) -> dict[str, int]:
        """Exchanges counted per outcome (in the window); outcomes counted 0 left out."""

    async def list_exchanges(self, f: Filters) -> tuple[list[ExchangeSummary], str | None]:
        """Exchange summaries, newest first (by id), and the cursor of the next page."""

    async def classes(self, *, signature: str | None = None, window: Window = ALL_TIME,
                      segment: str | None = None) -> list[MismatchClass]:
        """Mismatch classes, most counted first. In a window: the classes counted there, with
        that count and their first/last sighting there (to the minute); their triage (status,
        ticket, note, examples) is the class's own. With a `segment`: the classes counted in
        it, with its count."""

    async def set_class_status(self, signature: str, status: str, ticket: str | None = None,
                               note: str | None = None, fixed_in: FixedIn | None = None,
                               ) -> MismatchClass | None:
        """Triage a class (None: no such class). Marked fixed, it records `fixed_in`, the
        deploy it expects its fix in: a later mismatch reopens it (new, reopened_after that
        deploy) only when received once that deploy was live (shadow.deploys.reopens);
        without one, any later mismatch does."""

    async def add_deploy(self, d: Deploy) -> None:
        """Record a deploy marker (shadow.deploys); the same id twice is recorded once."""

    async def deploys(self, target: str | None = None, limit: int = 100,
                      version: str | None = None) -> list[Deploy]:
        """Deploy markers (of `target`, of `version`), latest first (by the time they went
        live)."""

    async def summary(self, window: Window = ALL_TIME, segment: str | None = None) -> Summary:
        """The /api/summary object for the window. Noise and suspected-noise figures are
        all time. With a `segment` (as stored: '' is none), the routes it was counted on
        with its counts and classes; latency, status pairs and documents held are the
        route's over every segment."""

    async def route_evidence(self, window: Window = ALL_TIME,
                             segment: str | None = None) -> list[RouteEvidence]:
        """The verdict's evidence per route (in the window, of the segment): compared,
        matched, and the mismatches per class (accepted classes apart)."""

    async def segments(self, window: Window = ALL_TIME) -> list[SegmentSummary]:
        """Each segment counted in the window, with its counts, most counted first."""

    async def timeline(self, window: Window = ALL_TIME, step_s: int | None = None, *,
                       now: float | None = None) -> Timeline:
        """The window's counts per step of `step_s` seconds (None: about 120 points; raised
        past comparer.timeline.MAX_POINTS), overall, per route and per mismatch class (with
        the class's own first and last sighting), from the rollups (comparer.timeline)."""


async def default_verdict_window(store: Store) -> tuple[Window, Deploy | None]:
    """The verdict's default window, and the deploy it starts at: from the latest V2 deploy
    marker on, as compacted but never from before it (its edge rounds up); all time when
    there is none. /api/verdict and the readiness gauges judge over it."""
    latest = await store.deploys("v2", limit=1)
    if not latest:
        return await store.resolve(ALL_TIME), None
    start = since_deploy(latest[0])
    return round_up(await store.resolve(start), start.since or 0), latest[0]


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        from comparer.stores.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from comparer.stores.mongo import MongoStore

        return MongoStore(url)
    raise ConfigError(f"unsupported store {mask_url(url)!r}: use sqlite:///path/to/shadow.db or "
                      "mongodb://...")
