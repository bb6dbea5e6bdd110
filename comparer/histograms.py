"""Latency histograms as the stores keep them (pure): one rollup row per (time bucket, method,
route, side) holds that key's whole histogram, {latency bucket (shadow.stats.latency_bucket):
exchanges}, so a report reads one row per time bucket per route and side, however spread the
latencies are.

SQLite keeps a histogram as text, the JSON array of its (latency bucket, n) pairs in bucket
order, flattened: `[52,3,57,1]`; a write merges its increments into the stored text (`add`,
SQL function shadow_hist_add) in the write's transaction. MongoDB keeps it as a sub-document
`h: {"52": 3, "57": 1}` that writes `$inc` (`increments`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from shadow.windows import floor_to

Histogram = dict[int, int]  # latency bucket -> exchanges
FIELD = "h"  # the histogram's column (SQLite) or field (MongoDB)


def encode(h: Mapping[int, int]) -> str:
    """The stored text of a histogram (buckets counted 0 left out)."""
    return orjson.dumps([x for b in sorted(h) if h[b] for x in (b, h[b])]).decode()


def decode(text: str | bytes | None) -> Histogram:
    if not text:
        return {}
    flat = iter(orjson.loads(text))
    return dict(zip(flat, flat, strict=True))


def merge_into(into: Histogram, h: Mapping[int, int]) -> Histogram:
    for b, n in h.items():
        into[b] = into.get(b, 0) + n
    return into


def add(stored: str | bytes | None, more: str | bytes | None) -> str:
    """SQL function shadow_hist_add(h, excluded.h): a stored histogram plus increments."""
    return encode(merge_into(decode(stored), decode(more)))


def increments(h: Mapping[int, int]) -> dict[str, int]:
    """MongoDB's $inc of a histogram's increments."""
    return {f"{FIELD}.{b}": n for b, n in h.items() if n}


def from_doc(doc: Mapping[str, Any] | None) -> Histogram:
    """A MongoDB histogram sub-document, as a Histogram."""
    return {int(b): int(n) for b, n in (doc or {}).items()}


def fold(rows: Iterable[tuple[tuple[Any, ...], Histogram]], span: int,
         ) -> list[tuple[tuple[Any, ...], Histogram]]:
    """Compaction: histograms keyed with the bucket first, summed into the bucket of `span`
    each falls in, as increments to add there (none that sum to nothing)."""
    out: dict[tuple[Any, ...], Histogram] = {}
    for key, h in rows:
        merge_into(out.setdefault((floor_to(key[0], span), *key[1:]), {}), h)
    return [(k, {b: n for b, n in h.items() if n}) for k, h in out.items() if any(h.values())]


def flatten(rows: Iterable[tuple[str, str, str, str | None]],
            ) -> list[tuple[str, str, str, int, int]]:
    """SQLite's histograms of a window, (method, route, side, their stored texts joined by
    commas: SQL group_concat) each, as (method, route, side, latency bucket, n) rows summed
    over the window (n > 0 only)."""
    merged: dict[tuple[str, str, str], Histogram] = {}
    for method, route, side, texts in rows:
        if not texts:
            continue
        h = merged.setdefault((method, route, side), {})
        get = h.get
        for stored in orjson.loads(f"[{texts}]"):
            flat = iter(stored)
            for b, n in zip(flat, flat, strict=True):
                h[b] = get(b, 0) + n
    return [(*key, b, n) for key, h in merged.items() for b, n in h.items() if n > 0]
