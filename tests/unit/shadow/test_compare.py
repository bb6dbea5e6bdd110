"""One exchange compared: outcome, differences and signature (shadow/compare.py)."""

from __future__ import annotations

import gzip

import brotli

from shadow.compare import compare, signature
from shadow.diff import decoded_body
from shadow.model import Answer
from tests.unit.shadow.answers import GET, JSON, answer


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


def test_binary_bodies_compare_by_size_and_hash() -> None:
    binary = [("Content-Type", "application/octet-stream")]
    r = compare(GET, answer(b"\xff\x00a", headers=binary), answer(b"\xff\x00b", headers=binary), "/x")
    assert r.outcome == "mismatch" and r.diff[0].kind == "body"
    assert r.diff[0].v1["size"] == 3 and "sha256" in r.diff[0].v1  # type: ignore[index,operator]


def test_v2_error_and_skipped_outcomes() -> None:
    assert compare(GET, answer({}), Answer(None, error="V2 timed out"), "/x").outcome == "v2_error"
    assert compare(GET, answer({}), Answer(None, skipped="method_not_replayed"),
                   "/x").outcome == "skipped"


def test_huge_integers_are_compared_and_stored() -> None:
    from shadow.codec import diff_to_list, dumps

    big = b'{"n": 123456789012345678901234567890}'
    r = compare(GET, answer(big), answer(b'{"n": 123456789012345678901234567891}'), "/x")
    assert r.outcome == "mismatch" and r.diff[0].path == "$.n"
    assert b"123456789012345678901234567890" in dumps(diff_to_list(r.diff))


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
