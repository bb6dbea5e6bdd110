"""The cutover verdict's gates (shadow/stats.py): errors count as failures, an error-rate and a
latency gate, and the properties that make it safe to bet on: a failure never makes a route
readier, a clean sample never makes it less ready."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shadow.compare import error_kind
from shadow.model import Answer
from shadow.stats import RouteEvidence, parse_rate, verdict


def one(r: RouteEvidence, **gates: Any) -> dict[str, Any]:
    routes: list[dict[str, Any]] = verdict([r], **gates)["routes"]  # type: ignore[assignment]
    assert len(routes) == 1
    return routes[0]


def test_v2_errors_are_failures_reported_by_kind() -> None:
    """10,000 matches and 5,000 V2 errors were 'ready' before: errors count now."""
    r = RouteEvidence("GET", "/items/{id}", 10_000, 10_000,
                      v2_errors={"connection reset": 9, "timeout": 3})
    route = one(r)
    assert route["ready"] is False and route["samples"] == 10_012
    assert "12 V2 errors (connection reset ×9, timeout ×3)" in route["reason"]
    assert "V2 error rate 0.12% (12 errors to 10000 clean samples) > 0.1%" in route["reason"]
    assert (route["v2_errors"], route["v2_error_kinds"]) == (12, {"connection reset": 9,
                                                                 "timeout": 3})
    # the error gate alone holds it back when the match-rate gate is relaxed
    relaxed = one(r, min_match=0.99)
    assert relaxed["ready"] is False and relaxed["reason"].startswith("V2 error rate")
    assert one(r, min_match=0.99, max_v2_error_rate=0.002)["ready"] is True


def test_compare_errors_are_failures_apart_from_classes() -> None:
    r = RouteEvidence("GET", "/x", 5_000, 4_997, compare_errors=3)
    route = one(r)
    assert route["ready"] is False and "3 compare errors" in route["reason"]
    assert "failing classes" not in route["reason"] and route["classes"] == []


def test_too_few_clean_samples_however_many_failures() -> None:
    r = RouteEvidence("GET", "/x", 150, 90, failing={"abc": 60})
    route = one(r, min_match=0.1)
    assert "too few samples: 150 compared (90 clean), 100 clean required" in route["reason"]


def test_latency_gate_at_p99_with_the_figures_and_a_floor() -> None:
    slow = RouteEvidence("GET", "/x", 10_000, 10_000,
                         v1_latency_ms={"p50": 10.0, "p95": 20.0, "p99": 30.0},
                         v2_latency_ms={"p50": 30.0, "p95": 60.0, "p99": 90.0})
    route = one(slow)
    assert route["ready"] is False
    assert "V2 slower: p99 90 ms vs V1 30 ms (3.00× > 1.5×), p95 60 ms vs 20 ms (3.00×)" \
        in route["reason"]
    assert route["latency"]["p99_ratio"] == 3.0 and route["latency"]["judged"] is True
    assert one(slow, max_latency_ratio=3.5)["ready"] is True
    assert one(slow, latency_floor_ms=100)["ready"] is True  # V2's p99 under the floor
    fast = dataclasses.replace(slow, v2_latency_ms={"p50": 1.0, "p95": 2.0, "p99": 4.0},
                               v1_latency_ms={"p50": 0.1, "p95": 0.2, "p99": 0.3})
    assert one(fast)["ready"] is True  # 13× slower, but V2's p99 is under the 5 ms floor
    assert one(dataclasses.replace(slow, v1_latency_ms={}))["ready"] is True  # unknown


def test_failing_classes_carry_their_triage() -> None:
    r = RouteEvidence("GET", "/x", 10_000, 9_990, failing={"aaa": 7, "bbb": 3},
                      triage={"aaa": ("bug", "JIRA-7"), "bbb": ("new", None)})
    assert one(r)["classes"] == [
        {"signature": "aaa", "count": 7, "status": "bug", "ticket": "JIRA-7"},
        {"signature": "bbb", "count": 3, "status": "new", "ticket": None}]


def test_rates_as_fractions_or_percentages() -> None:
    assert parse_rate("0.001") == parse_rate("0.1%") == 0.001
    for bad in ("fast", "2", "-1%"):
        try:
            parse_rate(bad)
        except ValueError as e:
            assert "fraction (0.001) or a percentage (0.1%)" in str(e) or "between 0 and 1" in str(e)
        else:
            raise AssertionError(bad)


def test_error_kinds_from_the_subscriber_texts() -> None:
    def kind(error: str) -> str:
        return error_kind(Answer(None, error=error))

    assert kind("V2 timed out") == "timeout"
    assert kind("V2 unreachable: ClientOSError: [Errno 104] Connection reset by peer") == \
        "connection reset"
    assert kind("V2 unreachable: ServerDisconnectedError: Server disconnected") == \
        "connection closed"
    assert kind("V2 unreachable: ClientConnectorError: Cannot connect to host 127.0.0.1:9 "
                "ssl:default [Connect call failed ('127.0.0.1', 9)]") == "cannot connect"
    assert kind("V2 unreachable: ClientPayloadError: Response payload is not completed") == \
        "body cut off"
    assert kind("V2 unreachable: InvalidURL: x") == "other"


# ---- properties ----

KINDS = ("timeout", "connection reset")


@st.composite
def evidence(draw: st.DrawFn) -> RouteEvidence:
    matched = draw(st.integers(0, 20_000))
    accepted = draw(st.integers(0, 50))
    failing = draw(st.dictionaries(st.sampled_from(("aaa", "bbb", "ccc")), st.integers(1, 60)))
    compare_errors = draw(st.integers(0, 20))
    errors = draw(st.dictionaries(st.sampled_from(KINDS), st.integers(1, 60)))
    latency = draw(st.none() | st.tuples(st.floats(0.1, 500), st.floats(0.1, 500)))
    v1: dict[str, float | None]
    v2: dict[str, float | None]
    v1, v2 = ({}, {}) if latency is None else ({"p95": latency[0], "p99": latency[0]},
                                               {"p95": latency[1], "p99": latency[1]})
    compared = matched + accepted + sum(failing.values()) + compare_errors
    return RouteEvidence("GET", "/x", compared, matched, accepted, failing, errors,
                         compare_errors, v1, v2)


@st.composite
def cases(draw: st.DrawFn) -> tuple[RouteEvidence, dict[str, Any]]:
    """Evidence and gates, often right at their edges (the samples gate one off the count,
    the error gate at the route's own rate), where a wrong gate would flip."""
    r = draw(evidence())
    samples = r.compared + sum(r.v2_errors.values())
    errors = sum(r.v2_errors.values())
    rate = errors / (errors + r.matched + r.accepted) if errors else 0.0
    g = draw(st.fixed_dictionaries({
        "min_match": st.floats(0.5, 1.0),
        "min_samples": st.integers(0, 5_000) | st.integers(-2, 2).map(lambda d: max(0, samples + d))
        | st.integers(-2, 2).map(lambda d: max(0, r.matched + r.accepted + d)),
        "max_v2_error_rate": st.floats(0.0, 1.0) | st.just(rate)
        | st.floats(0.0, 1e-3).map(lambda d: max(0.0, rate - d)),
        "max_latency_ratio": st.floats(1.0, 5.0), "latency_floor_ms": st.floats(0.0, 50.0)}))
    return r, g


def add_failure(r: RouteEvidence, which: str) -> RouteEvidence:
    if which == "mismatch":
        return dataclasses.replace(r, compared=r.compared + 1,
                                   failing={**r.failing, "aaa": r.failing.get("aaa", 0) + 1})
    if which == "compare_error":
        return dataclasses.replace(r, compared=r.compared + 1,
                                   compare_errors=r.compare_errors + 1)
    return dataclasses.replace(r, v2_errors={**r.v2_errors, which: r.v2_errors.get(which, 0) + 1})


def ready(r: RouteEvidence, g: dict[str, Any]) -> bool:
    return bool(verdict([r], **g)["ready"])


EDGE = RouteEvidence("GET", "/x", 100, 100)  # one short of the samples gate below
LOOSE = {"min_match": 0.5, "min_samples": 101, "max_v2_error_rate": 0.05,
         "max_latency_ratio": 2.0, "latency_floor_ms": 5.0}


@settings(max_examples=500)
@given(cases(), st.sampled_from(("mismatch", "compare_error", *KINDS)))
# a failure is not a sample: it never fills the samples gate
@example((EDGE, LOOSE), "mismatch")
@example((EDGE, LOOSE), "timeout")
# a mismatch never dilutes the V2 error rate (6 errors to 100 clean: 5.7% > 5%)
@example((dataclasses.replace(EDGE, v2_errors={"timeout": 6}), {**LOOSE, "min_samples": 0}),
         "mismatch")
def test_adding_a_failure_never_makes_a_route_readier(case: tuple[RouteEvidence, dict[str, Any]],
                                                      which: str) -> None:
    r, g = case
    worse = add_failure(r, which)
    assert not ready(worse, g) or ready(r, g)
    before, after = one(r, **g), one(worse, **g)
    assert after["match_rate_lower_bound"] <= before["match_rate_lower_bound"]
    assert after["v2_error_rate"] >= before["v2_error_rate"]


@settings(max_examples=500)
@given(cases(), st.booleans())
def test_adding_a_clean_sample_never_makes_a_route_less_ready(
        case: tuple[RouteEvidence, dict[str, Any]], accepted: bool) -> None:
    r, g = case
    better = dataclasses.replace(r, compared=r.compared + 1, matched=r.matched + int(not accepted),
                                 accepted=r.accepted + int(accepted))
    assert not ready(r, g) or ready(better, g)
    assert one(better, **g)["match_rate_lower_bound"] >= one(r, **g)["match_rate_lower_bound"]
