"""Segments (shadow/segments.py): --segment-by parsed with messages that say what to write, a
request's segment read from its header, cookie or query parameter as the proxy stored it
(redacted: a secret-looking name's value is its token, one per tenant), and the cap's names."""

from __future__ import annotations

import pytest

from shadow.errors import ConfigError
from shadow.model import Request
from shadow.redact import Policy
from shadow.segments import (
    MAX_CHARS,
    NONE,
    OTHER,
    SegmentBy,
    asked,
    capped,
    parse_segment_by,
    segment_of,
    shown,
    to_admit,
)
from shadow.settings import load_settings


def test_segment_by_takes_a_kind_and_a_name() -> None:
    assert parse_segment_by("header:X-Tenant") == SegmentBy("header", "X-Tenant")
    assert parse_segment_by(" Cookie : tenant ") == SegmentBy("cookie", "tenant")
    assert parse_segment_by("query:filter[tenant]") == SegmentBy("query", "filter[tenant]")
    assert str(parse_segment_by("QUERY:t")) == "query:t"
    for bad, says in (("X-Tenant", "expected header:NAME, cookie:NAME or query:NAME"),
                      ("body:tenant", "expected header:NAME"), ("header:", "expected header"),
                      ("header:X Tenant", "'X Tenant' is not a header name"),
                      ("cookie:a=b", "not a cookie name"), ("query:a&b", "not a query name")):
        with pytest.raises(ConfigError, match="--segment-by: ") as e:
            parse_segment_by(bad)
        assert says in str(e.value), bad


def test_the_setting_is_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="--segment-by: expected header:NAME"):
        load_settings({"segment_by": "tenant"}, env={}, config_file=None)
    with pytest.raises(ConfigError, match="--v2-version-header: 'X Version' is not a valid "
                                          "header name"):
        load_settings({"v2_version_header": "X Version"}, env={}, config_file=None)
    s = load_settings({"segment_by": "header:X-Tenant", "max_segments": "3"}, env={},
                      config_file=None)
    assert (s.segment_by, s.max_segments) == ("header:X-Tenant", 3)
    assert load_settings({}, env={}, config_file=None).max_segments == 100


def request(url: str = "/items/1", headers: list[tuple[str, str]] | None = None) -> Request:
    return Request("GET", url, headers or [])


def test_a_request_s_segment_from_a_header_a_cookie_or_a_query_parameter() -> None:
    r = request("/items/1?x=1&tenant=acme%20corp&tenant=second",
                [("x-tenant", " acme "), ("X-Tenant", "other"),
                 ("Cookie", "a=1; tenant=\"globex\""), ("Cookie", "tenant=third")])
    assert segment_of(r, parse_segment_by("header:X-Tenant")) == "acme"  # the first, any case
    assert segment_of(r, parse_segment_by("cookie:tenant")) == "globex"
    assert segment_of(r, parse_segment_by("query:tenant")) == "acme corp"
    assert segment_of(r, None) == NONE
    bare = request("/items/1")
    for by in ("header:X-Tenant", "cookie:tenant", "query:tenant"):
        assert segment_of(bare, parse_segment_by(by)) == NONE
    assert segment_of(request("/?tenant="), parse_segment_by("query:tenant")) == NONE
    assert segment_of(request("/?tenant=a#tenant=b"), parse_segment_by("query:tenant")) == "a"
    long = segment_of(request(headers=[("X-Tenant", "t" * 500)]),
                      parse_segment_by("header:X-Tenant"))
    assert long == "t" * MAX_CHARS
    # a header value that is not UTF-8 (kept by the proxy as surrogate escapes): storable text
    odd = segment_of(request(headers=[("X-Tenant", b"caf\xe9".decode("utf-8", "surrogateescape"))]),
                     parse_segment_by("header:X-Tenant"))
    assert odd == "caf\\udce9" and odd.encode("utf-8")


def test_a_redacted_value_is_its_token_one_per_tenant() -> None:
    """The proxy redacts the request before anyone stores it: a segment under a secret-looking
    name is its keyed token, equal for equal values and apart for others."""
    policy = Policy.build(key=b"k" * 32)
    by = parse_segment_by("header:X-Api-Key")
    stored = [policy.request(request(headers=[("X-Api-Key", key)]))
              for key in ("acme-secret-1", "acme-secret-1", "globex-secret-2")]
    acme, again, globex = (segment_of(r, by) for r in stored)
    assert acme.startswith("tok_") and acme == again and globex != acme
    assert "acme" not in acme
    by_query = parse_segment_by("query:access_token")
    q = segment_of(policy.request(request("/x?access_token=s3cr3t-value-1")), by_query)
    assert q.startswith("tok_")


def test_the_cap_s_names() -> None:
    assert capped("acme", {"acme"}) == "acme"
    assert capped("globex", {"acme"}) == OTHER
    assert capped(NONE, set()) == NONE  # never overflows
    assert to_admit(["b", NONE, OTHER, "a", "b"]) == ["a", "b"]
    assert (shown(NONE), shown("acme"), asked("(none)"), asked("acme")) == \
        ("(none)", "acme", NONE, "acme")
