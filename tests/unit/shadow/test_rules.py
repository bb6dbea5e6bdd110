"""Rules: parsing with clear errors, and each rule hiding exactly what it says."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.compare import compare
from shadow.diff import json_differences
from shadow.model import Answer, Request
from shadow.rules import RulesError, load_rules

GET = Request("GET", "/x", [])
TODAY = dt.date(2026, 11, 22)


def answer(body: object, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Answer:
    raw = orjson.dumps(body)
    return Answer(status, headers or [("Content-Type", "application/json")], raw, len(raw))


def rules(text: str, route: str = "/x", method: str = "GET"):  # type: ignore[no-untyped-def]
    return load_rules(text, "r.toml").active(method, route, TODAY)


def run(text: str, a: object, b: object, **kw: object):  # type: ignore[no-untyped-def]
    return compare(GET, answer(a, **kw), answer(b), "/x", rules(text))  # type: ignore[arg-type]


def paths(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.path for d in result.diff]


def test_ignore_with_wildcards_and_recursive_descent_counts_the_exchange_it_changed():
    text = '[[rules]]\nname = "noise"\nignore = ["$.items[*].updated_at", "$..trace_id"]\n'
    r = run(text, {"items": [{"id": 1, "updated_at": 1}, {"id": 2, "updated_at": 2}],
                   "meta": {"trace_id": "a"}, "n": 1},
            {"items": [{"id": 1, "updated_at": 5}, {"id": 2, "updated_at": 6}],
             "meta": {"trace_id": "b"}, "n": 2})
    assert paths(r) == ["$.n"] and r.suppressed == {"noise": 1}  # hits count exchanges


THREE_RULES = (
    '[[rules]]\nname = "tags"\nunordered = ["$.tags"]\n'
    '[[rules]]\nname = "ids"\nnormalize = [{ path = "$.id", regex = "[0-9a-f-]{36}", '
    'replace = "<uuid>" }]\n'
    '[[rules]]\nname = "clock"\nignore = ["$.ts"]\n')
UUID1, UUID2 = "0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def test_overlapping_rules_are_each_credited_with_the_exchanges_they_changed():
    every = run(THREE_RULES, {"id": UUID1, "tags": [1, 2], "ts": 1},
                {"id": UUID2, "tags": [2, 1], "ts": 2})
    assert every.outcome == "match" and every.suppressed == {"tags": 1, "ids": 1, "clock": 1}
    # only the UUID differs: the unordered rule, first in the file, takes no credit for it
    ids_only = run(THREE_RULES, {"id": UUID1, "tags": [1, 2], "ts": 1},
                   {"id": UUID2, "tags": [1, 2], "ts": 1})
    assert ids_only.suppressed == {"ids": 1}
    tags_only = run(THREE_RULES, {"id": UUID1, "tags": [1, 2], "ts": 1},
                    {"id": UUID1, "tags": [2, 1], "ts": 1})
    assert tags_only.suppressed == {"tags": 1}
    clean = run(THREE_RULES, {"id": UUID1, "tags": [1], "ts": 1},
                {"id": UUID1, "tags": [1], "ts": 1})
    assert clean.suppressed == {}


def test_tolerance_unordered_match_by_normalize_null_and_modes():
    assert run('[[rules]]\ntolerance = { "$.price" = { abs = 0.01 } }\n',
               {"price": 1.0}, {"price": 1.005}).outcome == "match"
    assert run('[[rules]]\ntolerance = { "$.price" = { rel = 0.1 } }\n',
               {"price": 100}, {"price": 112}).outcome == "mismatch"
    assert run('[[rules]]\nunordered = ["$.tags"]\n', {"tags": ["a", "b"]},
               {"tags": ["b", "a"]}).outcome == "match"
    keyed = run('[[rules]]\nmatch_by = { "$.items" = "id" }\n',
                {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]},
                {"items": [{"id": 2, "v": "b"}, {"id": 1, "v": "X"}]})
    assert paths(keyed) == ['$.items["id=1"].v']
    norm = '[[rules]]\nnormalize = [{ path = "$..at", regex = "\\\\d{4}-\\\\d\\\\d-\\\\d\\\\dT[^Z]*Z", replace = "<ts>" }]\n'
    assert run(norm, {"a": {"at": "2026-01-01T10:00:00Z"}},
               {"a": {"at": "2026-01-02T11:00:00.5Z"}}).outcome == "match"
    assert run('[[rules]]\nnull_equals_missing = true\n', {"a": 1, "b": None},
               {"a": 1}).outcome == "match"
    assert run('[[rules]]\nmode = "subset"\n', {"a": 1}, {"a": 1, "new": 2}).outcome == "match"
    assert run('[[rules]]\nmode = "subset"\n', {"a": 1, "gone": 2}, {"a": 1}).outcome == "mismatch"
    assert run('[[rules]]\nmode = "schema"\n', {"a": 1, "s": "x"}, {"a": 2, "s": "y"}).outcome == "match"
    assert run('[[rules]]\nmode = "schema"\n', {"a": 1}, {"a": "1"}).outcome == "mismatch"


def test_status_equivalence_headers_route_method_and_expiry():
    eq = rules('[[rules]]\nstatus_equivalent = [[200, 204]]\n')
    assert compare(GET, answer({}, status=200), answer({}, status=204), "/x", eq).outcome == "match"
    hdr = rules('[[rules]]\nheaders = { exclude = ["cache-control"], include = ["x-api-version"] }\n')
    a = answer({}, headers=[("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                            ("X-Api-Version", "1")])
    b = answer({}, headers=[("Content-Type", "application/json"), ("X-Api-Version", "2")])
    assert paths(compare(GET, a, b, "/x", hdr)) == ["x-api-version"]
    text = '[[rules]]\nroute = "/users/*"\nmethod = "GET"\nignore = ["$.a"]\n'
    assert len(rules(text, route="/users/{id}")) == 1
    assert rules(text, route="/orders/{id}") == [] and rules(text, "/users/{id}", "POST") == []
    old = load_rules('[[rules]]\nignore = ["$.a"]\nexpires = 2026-01-01\nreason = "r"\n', "r.toml")
    assert old.active("GET", "/x", TODAY) == [] and [r.id for r in old.expired(TODAY)] == ["rules[0]"]


def test_user_route_templates():
    rs = load_rules('routes = ["/users/{user}/orders/{order}"]\n', "r.toml")
    assert rs.route_for("/users/alice/orders/7") == "/users/{user}/orders/{order}"
    assert rs.route_for("/users/alice") is None


@pytest.mark.parametrize("text, message", [
    ("[[rules]\n", "r.toml: not valid TOML"),
    ('[[rules]]\nignore = "$.a"\n', "r.toml:2: `ignore` must be a list of strings"),
    ('[[rules]]\nroute = "/a"\n\n[[rules]]\nignore = ["a.b"]\n', "r.toml:5: `ignore`: path pattern must start with $"),
    ('[[rules]]\ntolerance = { "$.p" = { abs = -1 } }\n', "r.toml:2: tolerance for '$.p'"),
    ('[[rules]]\nmode = "loose"\n', "r.toml:2: `mode` must be one of strict, subset, schema"),
    ('[[rules]]\nexpires = "2027-01-01"\n', "r.toml:2: `expires` must be a date"),
    ('[[rules]]\nignroe = ["$.a"]\n', "r.toml:2: unknown rule key 'ignroe'"),
    ('[[rules]]\nnormalize = [{ regex = "(" }]\n', "r.toml:2: bad regex"),
])
def test_invalid_rules_files_name_the_line_and_the_problem(text: str, message: str):
    with pytest.raises(RulesError) as e:
        load_rules(text, "r.toml")
    assert message in str(e.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.text(max_size=4),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from("abcd"), c, max_size=3),
    max_leaves=12)


@given(json_values, json_values, st.sampled_from(["a", "b", "c"]))
def test_ignoring_a_path_removes_exactly_its_differences(a: object, b: object, key: str):
    doc_a, doc_b = {"x": a, key: a}, {"x": b, key: b}
    everything = {d.path for d in json_differences(doc_a, doc_b)}
    kept = {d.path for d in run(f'[[rules]]\nignore = ["$.{key}"]\n', doc_a, doc_b).diff}
    under = {p for p in everything if p == f"$.{key}" or p.startswith((f"$.{key}.", f"$.{key}["))}
    assert kept == everything - under


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0, 1e3))
def test_numeric_tolerance_admits_exactly_the_values_within_it(a: float, b: float, tol: float):
    r = run(f'[[rules]]\ntolerance = {{ "$.v" = {{ abs = {tol!r} }} }}\n', {"v": a}, {"v": b})
    assert (r.outcome == "match") == (a == b or abs(a - b) <= tol)
