"""Events on the stream, encoded and decoded (shadow/codec.py)."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.codec import decode_event, encode_event, peek_type
from shadow.errors import EventError
from shadow.model import Answer, CandidateEvent, Request, RequestEvent, ResponseEvent


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


# ---- stored parts: compressed, and older uncompressed ones still read ----

@given(st.binary(max_size=3000), st.text(max_size=40))
def test_stored_parts_round_trip_compressed(body: bytes, header: str) -> None:
    from shadow.codec import answer_from_dict, answer_to_dict, pack_part, unpack_part

    a = Answer(200, [("X-H", header), ("Content-Type", "application/json")], body, len(body),
               latency_ms=2.5, skipped=None)
    packed = pack_part(answer_to_dict(a))
    assert packed[:1] == b"\x02"  # the format marker: zstd with the built-in dictionary
    assert answer_from_dict(unpack_part(packed)) == a


def test_parts_stored_before_compression_still_read() -> None:
    from shadow.codec import (
        answer_to_dict,
        pack_part,
        request_from_dict,
        request_to_dict,
        unpack_part,
    )

    r = Request("POST", "/x", [("A", "1")], b'{"k": "' + b"v" * 500 + b'"}', 509)
    doc = request_to_dict(r)
    assert request_from_dict(unpack_part(orjson.dumps(doc).decode())) == r  # SQLite TEXT
    assert request_from_dict(unpack_part(orjson.dumps(doc))) == r
    assert request_from_dict(unpack_part(dict(doc))) == r  # a MongoDB document
    assert len(pack_part(doc)) < len(orjson.dumps(doc)) / 4  # repetitive JSON: much smaller
    skipped = answer_to_dict(Answer(None, skipped="method_not_replayed"))
    assert unpack_part(pack_part(skipped))["skipped"] == "method_not_replayed"
    # zstd without the dictionary (the first compressed format) still reads
    import zstandard

    head = {k: v for k, v in doc.items() if k != "body"}
    plain = b"\x01" + zstandard.ZstdCompressor().compress(orjson.dumps(head) + b"\0" + r.body)
    assert request_from_dict(unpack_part(plain)) == r


def test_the_dictionary_makes_small_parts_small() -> None:
    from shadow.codec import answer_to_dict, pack_part

    body = orjson.dumps({"id": 1, "name": "x" * 80, "tags": ["a", "b"]})
    a = Answer(200, [("Content-Type", "application/json"), ("Content-Length", "120")], body,
               len(body), latency_ms=3.0)
    assert len(pack_part(answer_to_dict(a))) < 100  # JSON: about 300 bytes; zstd alone: 160
