"""JSON differences and decoded bodies (shadow/diff.py)."""

from __future__ import annotations

import gzip
import zlib

import brotli
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.diff import MAX_DECODED_BYTES, decoded_body, json_differences
from tests.unit.shadow.answers import answer

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


def test_json_false_is_not_zero_and_one_is_not_true() -> None:
    assert [(d.path, d.kind) for d in json_differences([False, False], [False, 0])] == \
        [("$[1]", "type")]
    assert [(d.path, d.kind) for d in json_differences({"x": True}, {"x": 1})] == [("$.x", "type")]
