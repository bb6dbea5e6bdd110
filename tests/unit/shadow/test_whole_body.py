"""The whole body compared, past the capture cap (shadow/http.py Capture, shadow/compare.py):
lengths and digests of every byte decide what the captured prefixes cannot."""

from __future__ import annotations

import gzip

from shadow.compare import compare, whole_bodies_equal
from shadow.http import Capture
from shadow.model import Answer
from tests.unit.shadow.answers import GET

CAP = 64 * 1024
TEXT = [("Content-Type", "text/plain")]


def captured(body: bytes, headers: list[tuple[str, str]] | None = None,
             key: bytes | None = None, chunk: int = 10_000) -> Answer:
    """An answer as the proxy or the subscriber records it: streamed in chunks, capped."""
    c = Capture(CAP, key)
    for i in range(0, len(body), chunk):
        c.add(body[i:i + chunk])
    return Answer(200, headers if headers is not None else list(TEXT), c.bytes(), c.size,
                  c.truncated, digest=c.digest)


BIG = b"".join(b"line %06d\n" % i for i in range(10_000))  # 120,000 bytes


def test_capture_digests_every_byte_whatever_the_cap_and_chunking() -> None:
    a, b = captured(BIG, chunk=7), captured(BIG, chunk=65_536)
    assert (len(a.body), a.body_size, a.body_truncated) == (CAP, 120_000, True)
    assert a.digest == b.digest and a.digest is not None and a.digest.startswith("b2:")
    late = BIG[:100_000] + b"X" + BIG[100_001:]
    assert captured(late).digest != a.digest and captured(late).body == a.body
    keyed = captured(BIG, key=b"k" * 32)
    assert keyed.digest != a.digest and keyed.digest is not None
    assert keyed.digest.split(":")[0] != captured(BIG, key=b"j" * 32).digest.split(":")[0]  # type: ignore[union-attr]


def test_a_difference_after_the_cap_is_a_mismatch_of_kind_body() -> None:
    late = BIG[:80_000] + b"X" + BIG[80_001:]
    c = compare(GET, captured(BIG), captured(late), "/x")
    assert c.outcome == "mismatch"
    [d] = c.diff
    assert (d.path, d.kind) == ("$", "body")
    assert str(d.v1).startswith("differs after the first 64 KiB: 120000 bytes, digest ")


def test_a_different_length_after_the_cap_is_a_mismatch_even_without_digests() -> None:
    v1, v2 = captured(BIG), captured(BIG + b"more\n")
    v1.digest = v2.digest = None  # events from before digests
    assert compare(GET, v1, v2, "/x").outcome == "mismatch"


def test_equal_digests_make_a_truncated_comparison_a_real_match() -> None:
    c = compare(GET, captured(BIG), captured(BIG), "/x")
    assert c.outcome == "match" and c.diff == [] and "whole_body_equal" in c.flags
    # JSON cut at the cap cannot be parsed: the digests still prove the match
    doc = b"[" + b",".join(b'{"n": %d}' % i for i in range(20_000)) + b"]"
    json = [("Content-Type", "application/json")]
    assert compare(GET, captured(doc, json), captured(doc, json), "/x").outcome == "match"


def test_digests_of_other_keys_or_encodings_are_not_compared() -> None:
    late = BIG[:80_000] + b"X" + BIG[80_001:]
    # a key rotation that reached the proxy first: no verdict from the digests
    assert whole_bodies_equal(captured(BIG, key=b"k" * 32), captured(late, key=b"j" * 32)) \
        is None
    zipped = gzip.compress(BIG, compresslevel=1)
    gz = [*TEXT, ("Content-Encoding", "gzip")]
    assert whole_bodies_equal(captured(zipped, gz), captured(BIG)) is None
    # the same content compressed twice differently: raw digests differ, nothing is claimed
    other = gzip.compress(BIG, compresslevel=9)
    assert whole_bodies_equal(captured(zipped, gz), captured(other, gz)) is None
    assert whole_bodies_equal(captured(zipped, gz), captured(zipped, gz)) is True


def test_whole_bodies_within_the_cap_are_diffed_as_before() -> None:
    small, other = captured(b"a\nb\n"), captured(b"a\nc\n")
    assert whole_bodies_equal(small, other) is None  # the captured bodies are whole
    assert [(d.path, d.kind) for d in compare(GET, small, other, "/x").diff] == \
        [("line[2]", "changed")]


def test_the_digest_travels_in_events_and_stored_documents() -> None:
    from shadow.codec import answer_from_dict, answer_to_dict, decode_event, encode_event
    from shadow.model import CandidateEvent

    a = captured(BIG)
    event = CandidateEvent("i", 1.0, a)
    assert decode_event(encode_event(event)) == event
    assert answer_from_dict(answer_to_dict(a)).digest == a.digest
    older = answer_to_dict(a)
    del older["digest"]  # stored before digests: none
    assert answer_from_dict(older).digest is None
