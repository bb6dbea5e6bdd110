"""The pure core: ids, routes, settings, codec, diff and verdict."""

from __future__ import annotations

import base64
import gzip
import zlib
from pathlib import Path

import brotli
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.codec import decode_event, encode_event, peek_type
from shadow.compare import compare, signature
from shadow.diff import MAX_DECODED_BYTES, decoded_body, json_differences
from shadow.errors import ConfigError, EventError
from shadow.ids import is_sane_request_id, new_id
from shadow.model import Answer, CandidateEvent, Difference, Request, RequestEvent, ResponseEvent
from shadow.routes import route_template
from shadow.settings import load_settings, to_args

JSON = [("Content-Type", "application/json")]


def answer(body: object, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Answer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Answer(status, headers if headers is not None else list(JSON), raw, len(raw))


GET = Request("GET", "/x", [])


# ---- ids ----

def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 26 for i in ids)
    assert ids[0] < ids[-1] or ids[0][:10] == ids[-1][:10]


@pytest.mark.parametrize("value, sane", [
    ("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("", False), (None, False),
    ("has space", False), ("tab\t", False), ("ünïcode", False), ("a\r\nX-Evil: 1", False),
])
def test_request_id_sanity(value: str | None, sane: bool) -> None:
    assert is_sane_request_id(value) is sane


# ---- routes ----

@pytest.mark.parametrize("url, route", [
    ("/users/42", "/users/{id}"),
    ("/users/42/orders/7?x=1", "/users/{id}/orders/{id}"),
    ("/o/123e4567-e89b-12d3-a456-426614174000", "/o/{id}"),
    ("/blob/9f86d081884c7d65", "/blob/{id}"),
    ("/x/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/x/{id}"),
    ("/categories", "/categories"),
    ("/search?q=lamp", "/search"),
    ("/v2/users", "/v2/users"),
    ("/", "/"),
])
def test_route_templates(url: str, route: str) -> None:
    assert route_template(url) == route


# ---- settings ----

def test_settings_precedence_flags_env_file(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[shadow]\nv1 = "http://file"\nv2 = "http://file2"\nmax_queue = 5\n')
    env = {"SHADOW_V1": "http://env", "SHADOW_MAX_QUEUE": "7"}
    s = load_settings({"v1": "http://flag"}, env=env, config_file=str(cfg))
    assert (s.v1, s.v2, s.max_queue) == ("http://flag", "http://file2", 7)


def test_settings_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SHADOW_MAX_QUEUE"):
        load_settings({}, env={"SHADOW_MAX_QUEUE": "many"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env={}, config_file=str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[shadow]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        load_settings({}, env={}, config_file=str(bad))
    with pytest.raises(ConfigError, match="--store"):
        load_settings({"store": "postgres://x"}, env={})


def test_settings_round_trip_through_child_flags() -> None:
    s = load_settings({"v1": "http://a", "max_queue": 9, "allow_side_effects": True}, env={})
    args = to_args(s)
    flags = {args[i][2:].replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
    assert load_settings(flags, env={}) == s


# ---- codec ----

def test_events_round_trip() -> None:
    req = RequestEvent("id1", "rid", 1.5, Request("POST", "/a?b=%20", [("A", "1"), ("A", "2")],
                                                    b"\x00\xff", 2))
    resp = ResponseEvent("id1", 2.0, Answer(200, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
                                            b"hi", 2, latency_ms=3.5))
    cand = CandidateEvent("id1", 2.5, Answer(None, error="V2 timed out", skipped=None, target="t"))
    with_secondary = CandidateEvent("id1", 2.5, Answer(200, [], b"{}", 2),
                                    secondary=Answer(200, [("A", "b")], b"[1]", 3, latency_ms=1.0))
    for event in (req, resp, cand, with_secondary):
        data = encode_event(event)
        assert decode_event(data) == event
        assert peek_type(data) == event.type


@given(st.binary(max_size=300), st.lists(st.tuples(st.text(max_size=8), st.text(max_size=20)),
                                         max_size=4), st.booleans())
def test_any_body_and_headers_round_trip(body: bytes, headers: list[tuple[str, str]],
                                         truncated: bool) -> None:
    event = ResponseEvent("i", 1.0, Answer(200, headers, body, len(body) + truncated,
                                           body_truncated=truncated))
    data = encode_event(event)
    assert decode_event(data) == event
    assert orjson.loads(data)["body"] == base64.b64encode(body).decode()


def test_non_utf8_header_bytes_survive_encoding_exactly() -> None:
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    event = ResponseEvent("i", 1.0, Answer(200, [("X-Name", bad), ("X-Ok", "café")], b"", 0))
    data = encode_event(event)
    assert decode_event(data).answer.headers == [("X-Name", bad), ("X-Ok", "café")]
    # readable for anyone else reading the stream: the value with U+FFFD, then the bytes
    assert orjson.loads(data)["headers"][0] == ["X-Name", "caf\ufffd", "Y2Fm6Q=="]
    assert orjson.loads(data)["headers"][1] == ["X-Ok", "café"]


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"type":"request"}',
                                  b'{"type":"nope","id":"x"}',
                                  b'{"type":"response","id":"x","body":"!!"}'])
def test_malformed_events_are_event_errors(data: bytes) -> None:
    with pytest.raises(EventError):
        decode_event(data)


# ---- diff and verdict ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5),
                                                                      children, max_size=4),
    max_leaves=20)


@given(json_values)
def test_a_document_never_differs_from_itself(doc: object) -> None:
    assert json_differences(doc, doc) == []


@given(json_values, json_values)
def test_differing_paths_are_symmetric(a: object, b: object) -> None:
    forward = {d.path for d in json_differences(a, b)}
    backward = {d.path for d in json_differences(b, a)}
    assert forward == backward
    assert bool(forward) == (orjson.dumps(a, option=orjson.OPT_SORT_KEYS)
                             != orjson.dumps(b, option=orjson.OPT_SORT_KEYS))


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6))
def test_key_order_never_matters(d: dict[str, int]) -> None:
    assert json_differences(d, dict(reversed(list(d.items())))) == []


def test_kinds_of_json_differences() -> None:
    diff = json_differences({"id": 1, "name": "a", "items": [{"p": 1}]},
                            {"id": "1", "full_name": "a", "items": [{"p": 2}]})
    assert [(d.path, d.kind) for d in diff] == [
        ("$.full_name", "added"), ("$.id", "type"), ("$.items[0].p", "changed"),
        ("$.name", "removed")]


def test_match_mismatch_and_signature_groups_same_bug() -> None:
    assert compare(GET, answer({"a": 1}), answer({"a": 1}), "/x").outcome == "match"
    one = compare(GET, answer({"a": [1, 2]}), answer({"a": [1, 3]}), "/x")
    two = compare(GET, answer({"a": [5, 6, 7]}), answer({"a": [5, 6, 8]}), "/x")
    assert one.outcome == "mismatch" and one.signature == two.signature  # [1] vs [2]: same shape
    assert signature("GET", "/y", one.diff) != one.signature


def test_status_headers_and_ignored_headers() -> None:
    v1 = answer({"a": 1}, headers=[*JSON, ("Date", "1"), ("Cache-Control", "max-age=60, public"),
                                   ("Set-Cookie", "s=1; Path=/")])
    v2 = answer({"a": 1}, status=404, headers=[("Content-Type", "application/json; charset=UTF-8"),
                                               ("Date", "2"), ("Set-Cookie", "t=1")])
    diff = {(d.path, d.kind) for d in compare(GET, v1, v2, "/x").diff}
    assert diff == {("status", "status"), ("content-type", "header"),
                    ("cache-control", "header"), ("set-cookie", "header")}
    same = answer({"a": 1}, headers=[*JSON, ("Date", "9"), ("Server", "other"),
                                     ("Cache-Control", "public,max-age=60"),
                                     ("Set-Cookie", "s=2")])
    assert compare(GET, v1, same, "/x").outcome == "match"


def test_compressed_bodies_are_compared_decoded() -> None:
    v1 = answer(gzip.compress(b'{"a": 1, "b": 2}'), headers=[*JSON, ("Content-Encoding", "gzip")])
    v2 = answer(b'{"b": 2, "a": 1}')
    result = compare(GET, v1, v2, "/x")
    assert result.outcome == "match", result
    br = answer(brotli.compress(b'{"a": 1, "b": 3}'), headers=[*JSON, ("Content-Encoding", "br")])
    result = compare(GET, v1, br, "/x")
    assert result.outcome == "mismatch" and [d.path for d in result.diff] == ["$.b"]
    two_members = gzip.compress(b'{"a": 1,') + gzip.compress(b' "b": 2}')
    assert decoded_body(answer(two_members, headers=[("Content-Encoding", "gzip")])) == \
        b'{"a": 1, "b": 2}'


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_decompression_bombs_are_cut_at_the_bound(encoding: str) -> None:
    """64 MiB of zeros shrink to a few KiB: decoding stops at MAX_DECODED_BYTES."""
    zeros = b"\0" * (64 << 20)
    packed = {"gzip": lambda: gzip.compress(zeros, compresslevel=1),
              "br": lambda: brotli.compress(zeros, quality=1),
              "deflate": lambda: zlib.compress(zeros, 1)}[encoding]()
    assert len(packed) < 400_000
    got = decoded_body(answer(packed, headers=[("Content-Encoding", encoding)]))
    assert got is not None and len(got) == MAX_DECODED_BYTES


def test_binary_bodies_compare_by_size_and_hash() -> None:
    binary = [("Content-Type", "application/octet-stream")]
    r = compare(GET, answer(b"\xff\x00a", headers=binary), answer(b"\xff\x00b", headers=binary), "/x")
    assert r.outcome == "mismatch" and r.diff[0].kind == "body"
    assert r.diff[0].v1["size"] == 3 and "sha256" in r.diff[0].v1  # type: ignore[index,operator]


def test_v2_error_and_skipped_outcomes() -> None:
    assert compare(GET, answer({}), Answer(None, error="V2 timed out"), "/x").outcome == "v2_error"
    assert compare(GET, answer({}), Answer(None, skipped="method_not_replayed"),
                   "/x").outcome == "skipped"


def test_difference_model_is_plain_data() -> None:
    assert Difference("$.a", "changed", 1, 2) == Difference("$.a", "changed", 1, 2)


def test_huge_integers_are_compared_and_stored() -> None:
    from shadow.codec import diff_to_list, dumps

    big = b'{"n": 123456789012345678901234567890}'
    r = compare(GET, answer(big), answer(b'{"n": 123456789012345678901234567891}'), "/x")
    assert r.outcome == "mismatch" and r.diff[0].path == "$.n"
    assert b"123456789012345678901234567890" in dumps(diff_to_list(r.diff))


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


def test_json_false_is_not_zero_and_one_is_not_true() -> None:
    assert [(d.path, d.kind) for d in json_differences([False, False], [False, 0])] == \
        [("$[1]", "type")]
    assert [(d.path, d.kind) for d in json_differences({"x": True}, {"x": 1})] == [("$.x", "type")]


def test_text_form_and_multipart_bodies_compare_by_their_structure() -> None:
    text = [("Content-Type", "text/plain")]
    r = compare(GET, answer(b"a\nb\nc\n", headers=text), answer(b"a\nB\nc\nd\n", headers=text), "/x")
    assert [(d.path, d.kind, d.v1, d.v2) for d in r.diff] == [
        ("line[2]", "changed", "b", "B"), ("line[4]", "added", None, "d")]
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    same = compare(GET, answer(b"a=1&b=2", headers=form), answer(b"b=2&a=1", headers=form), "/x")
    assert same.outcome == "match"
    r = compare(GET, answer(b"a=1&b=2&b=3", headers=form), answer(b"a=1&b=2", headers=form), "/x")
    assert [(d.path, d.kind) for d in r.diff] == [("$.b[1]", "removed")]
    mp = [("Content-Type", 'multipart/form-data; boundary="XyZ"')]
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            b'Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n--XyZ--\r\n')
    other = body.replace(b"hello", b"world")
    r = compare(GET, answer(body, headers=mp), answer(other, headers=mp), "/x")
    assert [(d.path, d.kind, d.v1, d.v2) for d in r.diff] == [
        ("$.title.text", "changed", "hello", "world")]
