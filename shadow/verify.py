"""A verification run's verdict per mismatch class (pure): fixed, still failing, or new."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from shadow.model import MATCH, MISMATCH, Comparison
from shadow.reports_model import ExchangeSummary


def verification_report(before: list[ExchangeSummary],
                        after: dict[str, Comparison]) -> dict[str, Any]:
    """`before`: the stored exchange summaries that were replayed; `after`: today's comparison
    per exchange id. Classes are keyed by their stored signature."""
    classes: dict[str, dict[str, Any]] = {}
    regressions: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = defaultdict(int)
    for x in before:
        now = after.get(x["id"])
        if now is None:
            counts["not_replayed"] += 1
            continue
        signature = x.get("signature")
        if x["outcome"] == MISMATCH and signature:
            c = classes.setdefault(signature, {
                "signature": signature, "method": x["method"], "route": x["route"],
                "replayed": 0, "fixed": 0, "still_failing": 0, "changed": 0, "errors": 0,
                "examples": []})
            c["replayed"] += 1
            if now.outcome == MATCH:
                c["fixed"] += 1
            elif now.outcome != MISMATCH:
                c["errors"] += 1
            elif now.signature == x["signature"]:
                c["still_failing"] += 1
                if len(c["examples"]) < 3:
                    c["examples"].append(x["id"])
            else:
                c["changed"] += 1
        elif x["outcome"] == MATCH and now.outcome == MISMATCH and now.signature:
            r = regressions.setdefault(now.signature, {
                "signature": now.signature, "method": x["method"], "route": x["route"],
                "count": 0, "paths": sorted({d.path for d in now.diff})[:5], "examples": []})
            r["count"] += 1
            if len(r["examples"]) < 3:
                r["examples"].append(x["id"])
        counts[now.outcome] += 1
    for c in classes.values():
        c["verdict"] = ("fixed" if c["fixed"] == c["replayed"] else
                        "still failing" if c["still_failing"] else
                        "changed" if c["changed"] else "errors")
    return {"replayed": sum(v for k, v in counts.items() if k != "not_replayed"),
            "outcomes": dict(counts),
            "classes": sorted(classes.values(), key=lambda c: (-c["replayed"], c["signature"])),
            "new_regressions": sorted(regressions.values(), key=lambda r: -r["count"])}
