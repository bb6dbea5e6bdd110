"""Rules suggested from noise and value detectors (shadow/suggest.py)."""

from __future__ import annotations

from shadow.rules import load_rules


def test_suggestions_from_noise_and_detectors_are_valid_rules():
    from shadow.model import Difference
    from shadow.suggest import looks_like, suggest, to_toml

    assert looks_like("123e4567-e89b-12d3-a456-426614174000") == "uuid"
    assert looks_like("2026-11-22T10:00:00.123Z") == "timestamp"
    assert looks_like(1763805600) == "timestamp" and looks_like(42) is None
    routes = [{"method": "GET", "route": "/a", "noise": [
        {"path": "$.at", "count": 30, "observed": 30, "rate": 1.0},
        {"path": "$.rare", "count": 1, "observed": 30, "rate": 0.03}]}]
    cls = {"method": "GET", "route": "/b", "signature": "abc", "count": 7}
    found = suggest(routes, [(cls, [Difference("$.items[2].ref", "changed",
                                               "123e4567-e89b-12d3-a456-426614174000",
                                               "00000000-e89b-12d3-a456-426614174000"),
                                    Difference("$.n", "changed", 1, 2)])])
    assert [(s["route"], s["path"], s["rule"]) for s in found] == [
        ("/a", "$.at", "ignore"), ("/b", "$.items[*].ref", "normalize")]
    ruleset = load_rules(to_toml(found), "suggested.toml")  # what we print, loads as rules
    assert [r.route for r in ruleset.rules] == ["/a", "/b"]
    assert ruleset.rules[1].normalize[0].regex.search("123e4567-e89b-12d3-a456-426614174000")
