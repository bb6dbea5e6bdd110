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
    compared: int  # judged: matches, mismatches and compare errors
    matched: int
    accepted: int = 0  # mismatches in classes marked accepted (deliberate changes)
    failing: dict[str, int] = field(default_factory=dict)  # signature -> count, not accepted
    v2_errors: dict[str, int] = field(default_factory=dict)  # error kind -> count
    compare_errors: int = 0  # exchanges whose judging or storing failed (in `compared`)
    # p50/p95/p99 in ms of the exchanges compared to the end (matches and mismatches)
    v1_latency_ms: dict[str, float | None] = field(default_factory=dict)
    v2_latency_ms: dict[str, float | None] = field(default_factory=dict)
    # the triage of the failing classes: signature -> (status, ticket)
    triage: dict[str, tuple[str, str | None]] = field(default_factory=dict)


# The verdict's other gates' defaults: V2 errors per answer that was not a mismatch, and
# V2's p99 latency against V1's (judged only when V2's p99 is at least the floor).
MAX_V2_ERROR_RATE = 0.001
MAX_LATENCY_RATIO = 1.5
LATENCY_FLOOR_MS = 5.0


def parse_rate(text: str) -> float:
    """A rate as a fraction ("0.001") or a percentage ("0.1%"), in [0, 1]."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate: give a fraction (0.001) or a "
                         "percentage (0.1%)") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a rate between 0 and 1 (0% and 100%)")
    return value


def v2_error_rate(r: RouteEvidence) -> float:
    """V2 errors over V2 errors and clean samples (matches and accepted). Mismatches and
    compare errors are judged by the match rate: they never dilute the error rate, so a
    failure of any kind never lowers it."""
    errors = sum(r.v2_errors.values())
    clean = r.matched + r.accepted
    return errors / (errors + clean) if errors else 0.0


def latency_ratio(r: RouteEvidence, q: str = "p99") -> float | None:
    """V2's latency percentile `q` over V1's (None: either is unknown)."""
    v1, v2 = r.v1_latency_ms.get(q), r.v2_latency_ms.get(q)
    if v1 is None or v2 is None or v1 <= 0:
        return None
    return v2 / v1


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} ×{n}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def verdict(routes: list[RouteEvidence], *, min_match: float = MIN_MATCH,
            min_samples: int = MIN_SAMPLES, exclude: Iterable[str] = (),
            max_v2_error_rate: float = MAX_V2_ERROR_RATE,
            max_latency_ratio: float = MAX_LATENCY_RATIO,
            latency_floor_ms: float = LATENCY_FLOOR_MS) -> dict[str, object]:
    """Ready only when every route seen has >= min_samples clean samples (matches and
    accepted classes), the 95% Wilson lower bound of its match rate >= min_match (V2 errors
    and compare errors count as failures, accepted classes as matches), its V2 error rate
    <= max_v2_error_rate, and V2's p99 latency <= max_latency_ratio × V1's (unless V2's
    p99 is under latency_floor_ms). Adding a failure never makes a route readier; adding a
    clean sample never makes it less ready."""
    excluded = set(exclude)
    out: list[dict[str, object]] = []
    for r in sorted(routes, key=lambda r: (r.route, r.method)):
        if r.route in excluded or f"{r.method} {r.route}" in excluded:
            continue
        good = r.matched + r.accepted
        errors = sum(r.v2_errors.values())
        samples = r.compared + errors
        lower = wilson_lower(good, samples)
        needed = clean_samples_needed(good, samples, min_match)
        reasons = []
        if good < min_samples:
            clean = f" ({good} clean)" if good != samples else ""
            reasons.append(f"too few samples: {samples} compared{clean}, "
                           f"{min_samples} clean required")
        if lower < min_match:
            top = sorted(r.failing.items(), key=lambda kv: -kv[1])[:3]
            failing = []
            if errors:
                failing.append(f"{_plural(errors, 'V2 error')} ({_kinds(r.v2_errors)})")
            if r.compare_errors:
                failing.append(_plural(r.compare_errors, "compare error"))
            if top:
                failing.append("failing classes: " + ", ".join(f"{sig} ×{n}" for sig, n in top))
            text = (f"match rate {good}/{samples}: 95% lower bound {lower * 100:.3f}% "
                    f"< {min_match * 100:g}%")
            if failing:
                text += "; " + "; ".join(failing)
            elif needed is not None:  # short of evidence, not failing
                text += f"; needs about {needed} more clean samples"
            reasons.append(text)
        error_rate = v2_error_rate(r)
        if error_rate > max_v2_error_rate:
            reasons.append(f"V2 error rate {error_rate * 100:.3g}% ({_plural(errors, 'error')} "
                           f"to {good} clean samples) > {max_v2_error_rate * 100:g}%")
        p99, p95 = latency_ratio(r, "p99"), latency_ratio(r, "p95")
        v2_p99 = r.v2_latency_ms.get("p99")
        latency_judged = p99 is not None and v2_p99 is not None and v2_p99 >= latency_floor_ms
        if latency_judged and p99 is not None and p99 > max_latency_ratio:
            text = (f"V2 slower: p99 {_ms(v2_p99)} vs V1 {_ms(r.v1_latency_ms.get('p99'))} "
                    f"({p99:.2f}× > {max_latency_ratio:g}×)")
            if p95 is not None:
                text += (f", p95 {_ms(r.v2_latency_ms.get('p95'))} vs "
                         f"{_ms(r.v1_latency_ms.get('p95'))} ({p95:.2f}×)")
            reasons.append(text)
        out.append({"method": r.method, "route": r.route, "ready": not reasons,
                    "reason": "; ".join(reasons) or "ok", "reasons": reasons, "samples": samples,
                    "compared": r.compared, "matched": r.matched, "accepted": r.accepted,
                    "match_rate": round(good / samples, 6) if samples else None,
                    "match_rate_lower_bound": round(lower, 6),
                    "clean_samples_needed": needed,
                    "v2_errors": errors, "v2_error_kinds": dict(r.v2_errors),
                    "v2_error_rate": round(error_rate, 6),
                    "compare_errors": r.compare_errors,
                    "latency": {"v1_ms": dict(r.v1_latency_ms), "v2_ms": dict(r.v2_latency_ms),
                                "p95_ratio": None if p95 is None else round(p95, 3),
                                "p99_ratio": None if p99 is None else round(p99, 3),
                                "judged": latency_judged},
                    "classes": [{"signature": sig, "count": n,
                                 "status": r.triage.get(sig, ("new", None))[0],
                                 "ticket": r.triage.get(sig, ("new", None))[1]}
                                for sig, n in sorted(r.failing.items(),
                                                     key=lambda kv: (-kv[1], kv[0]))]})
    return {"ready": bool(out) and all(r["ready"] for r in out), "routes": out,
            "min_match": min_match, "min_samples": min_samples,
            "max_v2_error_rate": max_v2_error_rate, "max_latency_ratio": max_latency_ratio,
            "latency_floor_ms": latency_floor_ms}
