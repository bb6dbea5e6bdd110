"""Pure statistics: latency histograms, percentiles, Wilson intervals and the cutover verdict."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

# Latency histogram: log buckets 5% wide from 10 µs, so percentiles come from small
# precomputed tables instead of a scan of every exchange.
_BASE_MS = 0.01
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)


def latency_bucket(ms: float | None) -> int | None:
    if ms is None or ms != ms:  # None or NaN
        return None
    return max(0, int(math.log(max(ms, _BASE_MS) / _BASE_MS) / _LOG_GROWTH))


def bucket_value(bucket: int) -> float:
    """The middle of a bucket, in ms (within 2.5% of any latency that fell in it)."""
    return _BASE_MS * _GROWTH ** (bucket + 0.5)


def percentiles(buckets: Iterable[tuple[int, int]],
                qs: tuple[float, ...] = (0.50, 0.95, 0.99)) -> dict[str, float | None]:
    pairs = sorted((b, n) for b, n in buckets if n > 0)
    total = sum(n for _, n in pairs)
    names = [f"p{round(q * 100)}" for q in qs]
    if not total:
        return dict.fromkeys(names)
    out: dict[str, float | None] = {}
    for name, q in zip(names, qs, strict=True):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, n in pairs:
            seen += n
            if seen >= rank:
                out[name] = round(bucket_value(bucket), 3)
                break
    return out


# ---- the verdict ----

Z95 = 1.959963984540054
# The verdict's defaults: the match rate every route needs (a fraction; MIN_MATCH_PCT for
# people) and the compared exchanges it needs first.
MIN_MATCH = 0.999
MIN_MATCH_PCT = round(MIN_MATCH * 100, 6)
MIN_SAMPLES = 100


def wilson_lower(successes: int, n: int, z: float = Z95) -> float:
    """Lower bound of the Wilson score interval for a proportion (0 when n == 0)."""
    if n <= 0:
        return 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def clean_samples_needed(successes: int, n: int, min_rate: float, z: float = Z95,
                         limit: int = 10**9) -> int | None:
    """How many more matching samples would lift the Wilson lower bound to `min_rate`.
    None when no number of clean samples can (min_rate >= 1)."""
    if min_rate >= 1:
        return None
    if wilson_lower(successes, n, z) >= min_rate:
        return 0
    lo, hi = 0, 1
    while wilson_lower(successes + hi, n + hi, z) < min_rate:
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while lo + 1 < hi:  # binary search: the bound grows with every clean sample
        mid = (lo + hi) // 2
        if wilson_lower(successes + mid, n + mid, z) >= min_rate:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass
class RouteEvidence:
    method: str
    route: str
    compared: int
    matched: int
    accepted: int = 0  # mismatches in classes marked accepted (deliberate changes)
    failing: dict[str, int] = field(default_factory=dict)  # signature -> count, not accepted


def verdict(routes: list[RouteEvidence], *, min_match: float = MIN_MATCH,
            min_samples: int = MIN_SAMPLES,
            exclude: Iterable[str] = ()) -> dict[str, object]:
    """Ready only when every route seen has >= min_samples compared exchanges and the 95%
    Wilson lower bound of its match rate (accepted classes count as matches) >= min_match."""
    excluded = set(exclude)
    out: list[dict[str, object]] = []
    for r in sorted(routes, key=lambda r: (r.route, r.method)):
        if r.route in excluded or f"{r.method} {r.route}" in excluded:
            continue
        good = r.matched + r.accepted
        lower = wilson_lower(good, r.compared)
        needed = clean_samples_needed(good, r.compared, min_match)
        reasons = []
        if r.compared < min_samples:
            reasons.append(f"too few samples: {r.compared} compared, {min_samples} required")
        if lower < min_match:
            top = sorted(r.failing.items(), key=lambda kv: -kv[1])[:3]
            failing = ", ".join(f"{sig} ×{n}" for sig, n in top)
            text = (f"match rate {good}/{r.compared}: 95% lower bound {lower * 100:.3f}% "
                    f"< {min_match * 100:g}%")
            if failing:
                text += f"; failing classes: {failing}"
            elif needed is not None:  # short of evidence, not failing
                text += f"; needs about {needed} more clean samples"
            reasons.append(text)
        out.append({"method": r.method, "route": r.route, "ready": not reasons,
                    "reason": "; ".join(reasons) or "ok", "compared": r.compared,
                    "matched": r.matched, "accepted": r.accepted,
                    "match_rate_lower_bound": round(lower, 6),
                    "clean_samples_needed": needed})
    return {"ready": bool(out) and all(r["ready"] for r in out), "routes": out,
            "min_match": min_match, "min_samples": min_samples}
