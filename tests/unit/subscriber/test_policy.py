"""The replay policy: which requests V2 gets, rewritten how; the token bucket and the
V2 circuit breaker; the ordering key (subscriber/policy.py)."""

from __future__ import annotations

from shadow.model import Request
from shadow.settings import load_settings
from subscriber.policy import CircuitBreaker, Policy, TokenBucket, sampled


def policy(**flags: object) -> Policy:
    return Policy.from_settings(load_settings(flags, env={}))


def test_methods_routes_sampling_and_rewrites() -> None:
    get, post = Request("GET", "/api/a?x=1", []), Request("POST", "/api/a", [])
    assert policy().decision(get, "r") is None
    assert policy().decision(post, "r") == "method_not_replayed"
    assert policy(allow_side_effects=True).decision(post, "r") is None
    p = policy(replay_include="/api/*", replay_exclude="/api/admin/*")
    assert p.decision(get, "r") is None
    assert p.decision(Request("GET", "/api/admin/x", []), "r") == "route_excluded"
    assert p.decision(Request("GET", "/other", []), "r") == "route_excluded"
    ids = [f"id-{i}" for i in range(10_000)]
    share = sum(sampled(i, 25) for i in ids) / len(ids)
    assert 0.23 < share < 0.27 and [sampled(i, 25) for i in ids] == [sampled(i, 25) for i in ids]
    assert policy(sample_percent=0).decision(get, "r") == "not_sampled"
    half = policy(sample_percent=50)  # by the key it is given: the exchange id
    assert {half.decision(get, i) for i in ids[:100]} == {None, "not_sampled"}
    rw = policy(v2_set_headers="Authorization: Bearer v2; X-Env: shadow",
                v2_remove_headers="Cookie", v2_strip_prefix="/api", v2_add_prefix="/v2")
    assert rw.url("/api/a?x=1") == "/v2/a?x=1" and rw.url("/other") == "/v2/other"
    assert rw.headers([("Cookie", "s=1"), ("Authorization", "Bearer v1"), ("Accept", "*/*")]) == [
        ("Accept", "*/*"), ("Authorization", "Bearer v2"), ("X-Env", "shadow")]


def test_only_v2_may_receive_writes_and_only_with_allow_side_effects() -> None:
    targets = {"V2": "http://v2", "V1'": "http://v1b"}
    writes = policy(allow_side_effects=True)
    assert [m for m in ("GET", "HEAD", "OPTIONS", "POST", "DELETE") if writes.sends(m, "V1'")] \
        == ["GET", "HEAD", "OPTIONS"]
    assert writes.sends("patch", "V2") and not policy().sends("POST", "V2")
    assert writes.write_targets(targets) == ["V2"]
    assert policy().write_targets(targets) == []


def test_token_bucket_and_breaker_states() -> None:
    bucket = TokenBucket(10, burst=2)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.1) is True and bucket.take(0.1) is False
    b = CircuitBreaker(threshold=3, cooldown_s=30)
    for t in range(2):
        b.record(False, t)
    assert b.state == "closed" and b.allow(2)
    b.record(False, 2)
    assert b.state == "open" and not b.allow(10)
    assert b.allow(32) and b.state == "half_open" and not b.allow(32)  # exactly one probe
    b.record(False, 33)
    assert b.state == "open" and not b.allow(40)
    assert b.allow(63)
    b.record(True, 64)
    assert b.state == "closed" and b.allow(64)


def test_ordering_key_from_header_or_cookie() -> None:
    from subscriber.policy import ordering_key

    assert ordering_key(Request("GET", "/", [("X-Session", "s1")]), "X-Session") == "h:s1"
    assert ordering_key(Request("GET", "/", [("Cookie", "a=1; sid=xyz")]), "sid") == "c:xyz"
    assert ordering_key(Request("GET", "/", []), "sid") is None
