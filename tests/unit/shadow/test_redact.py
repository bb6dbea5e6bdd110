"""Redaction: secrets named by the settings are masked in headers, URLs and values, at any
depth, and nothing else changes (shadow/redact.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shadow.redact import DEFAULT_FIELDS, DEFAULT_HEADERS, MASK, Redaction

SECRET = "hunter2-s3cr3t"
REDACTION = Redaction.from_settings(DEFAULT_HEADERS, DEFAULT_FIELDS)


def test_redaction_names_come_from_settings_and_ignore_case() -> None:
    mine = Redaction.from_settings("X-Internal", "pin, Otp")
    assert mine.header_pairs([("x-internal", "a"), ("Authorization", "b")]) == \
        [("x-internal", MASK), ("Authorization", "b")]
    assert mine.url("/a?OTP=1&pin=2&q=3") == f"/a?OTP={MASK}&pin={MASK}&q=3"
    assert mine.url("/plain") == "/plain"
    assert mine.value({"Pin": 1, "x": [{"otp": 2}]}) == {"Pin": MASK, "x": [{"otp": MASK}]}


_keys = st.sampled_from(["a", "Password", "TOKEN", "list", "api_key", "b", "Session"])
_trees = st.recursive(
    st.one_of(st.integers(), st.text(max_size=5), st.just(SECRET)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=12)


@given(_trees)
def test_a_secret_under_a_secret_name_never_survives_redaction(tree: Any) -> None:
    """Wherever a field named like a secret holds it, at any depth, it is masked; and
    nothing else changes shape."""
    masked = REDACTION.value(tree)
    _assert_secret_only_where_named(tree, masked)


def _assert_secret_only_where_named(original: Any, masked: Any) -> None:
    if isinstance(original, dict):
        assert set(masked) == set(original)
        for k, v in original.items():
            if k.lower() in REDACTION.fields:
                assert masked[k] == MASK
            else:
                _assert_secret_only_where_named(v, masked[k])
    elif isinstance(original, list):
        assert len(masked) == len(original)
        for a, b in zip(original, masked, strict=True):
            _assert_secret_only_where_named(a, b)
    else:
        assert masked == original


@given(st.lists(st.tuples(st.sampled_from(["q", "token", "Access_Token", "page", "x y"]),
                          st.sampled_from([SECRET, "1", ""])), max_size=5))
def test_query_redaction_keeps_every_other_byte(params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{k.replace(' ', '+')}={v}" for k, v in params)
    url = REDACTION.url(f"/p?{query}")
    kept = [(k, v) for k, v in params if k.lower() not in REDACTION.fields]
    assert all(f"{k.replace(' ', '+')}={v}" in url for k, v in kept)
    if all(v != SECRET for _, v in kept):
        assert SECRET not in url
