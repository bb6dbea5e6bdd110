"""The readiness verdict from match evidence (shadow/stats.py)."""

from __future__ import annotations


def test_wilson_verdict_needs_evidence_and_never_hides_rare_regressions() -> None:
    from shadow.stats import RouteEvidence, clean_samples_needed, verdict, wilson_lower

    assert clean_samples_needed(0, 0, 0.999) == 3838  # "about 3,840" clean samples for 99.9%
    assert wilson_lower(3838, 3838) >= 0.999 > wilson_lower(3837, 3837)
    # a big route with a rare regression: 99.95% raw, but 5 failures must hold it back
    big = RouteEvidence("GET", "/big", 10_000, 9_995, failing={"abc": 5})
    small = RouteEvidence("GET", "/small", 40, 40)
    v = verdict([big, small], min_match=0.999, min_samples=100)
    assert v["ready"] is False
    routes = {r["route"]: r for r in v["routes"]}  # type: ignore[attr-defined]
    assert "failing classes: abc ×5" in routes["/big"]["reason"]
    assert "too few samples: 40 compared" in routes["/small"]["reason"]
    assert "needs about 3798 more clean samples" in routes["/small"]["reason"]
    accepted = RouteEvidence("GET", "/big", 10_000, 9_995, accepted=5)
    assert verdict([accepted], min_match=0.999, min_samples=100)["ready"] is True
    assert verdict([big], exclude=["GET /big"])["routes"] == []
