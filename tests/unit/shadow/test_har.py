"""An exchange as a HAR 1.2 entry (shadow/har.py), checked against the HAR 1.2 JSON Schema
(tests/data/har-1.2.schema.json, written from the specification)."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shadow import codec, har
from shadow.model import Answer, Difference, Exchange, Request

SCHEMA = json.loads((Path(__file__).parents[2] / "data" / "har-1.2.schema.json").read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def har_file(*exchanges: Exchange) -> dict[str, Any]:
    """A whole HAR file as the export streams it (head, one line per entry, tail)."""
    lines = [har.log_head("9.9", {"filters": {}})]
    lines += [har.entry_line(x, first=i == 0) for i, x in enumerate(exchanges)]
    data = b"".join([*lines, har.LOG_TAIL])
    assert data.count(b"\n") == len(exchanges) + 2  # one entry per line
    parsed: dict[str, Any] = orjson.loads(data)
    return parsed


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    return doc


def exchange(**overrides: Any) -> Exchange:
    body = b'{"id": 7, "name": "Ada"}'
    values: dict[str, Any] = {
        "id": "0001", "request_id": "req-1", "ts": 1_780_000_000.25, "method": "POST",
        "url": "/users/7?verbose=1&tag=a&tag=b", "route": "/users/{id}",
        "request": Request("POST", "/users/7?verbose=1&tag=a&tag=b",
                           [("Host", "api.example:8080"), ("Content-Type", "application/json"),
                            ("Cookie", "session=shadow-token-abc; theme=dark"),
                            ("Authorization", "Bearer shadow-token-xyz")],
                           b'{"name": "Ada"}', 15, scheme="https"),
        "v1": Answer(201, [("Content-Type", "application/json"),
                           ("Set-Cookie", "sid=shadow-token-1; Path=/; HttpOnly; Secure"),
                           ("Location", "/users/7")], body, len(body), latency_ms=12.5),
        "v2": Answer(200, [("Content-Type", "application/json")], b'{"id": "7"}', 11,
                     latency_ms=30.0, target="http://v2"),
        "outcome": "mismatch", "signature": "abcd1234",
        "diff": [Difference("status", "status", 201, 200), Difference("$.id", "type", 7, "7")],
    }
    values.update(overrides)
    return Exchange(**values)


def test_an_exchange_is_an_entry_with_v1_as_response_and_v2_and_the_diff_beside() -> None:
    doc = valid(har_file(exchange()))
    assert doc["log"]["version"] == "1.2" and doc["log"]["creator"]["name"] == "shadow"
    (e,) = doc["log"]["entries"]
    assert e["startedDateTime"] == "2026-05-28T20:26:40.250+00:00"
    req = e["request"]
    assert req["method"] == "POST"
    assert req["url"] == "https://api.example:8080/users/7?verbose=1&tag=a&tag=b"
    assert req["queryString"] == [{"name": "verbose", "value": "1"}, {"name": "tag", "value": "a"},
                                  {"name": "tag", "value": "b"}]
    assert {"name": "Authorization", "value": "Bearer shadow-token-xyz"} in req["headers"]
    assert req["cookies"] == [{"name": "session", "value": "shadow-token-abc"},
                              {"name": "theme", "value": "dark"}]
    assert req["postData"] == {"mimeType": "application/json", "params": [],
                               "text": '{"name": "Ada"}'}
    assert req["bodySize"] == 15
    resp = e["response"]
    assert (resp["status"], resp["statusText"]) == (201, "Created")
    assert resp["content"] == {"size": 24, "mimeType": "application/json",
                               "text": '{"id": 7, "name": "Ada"}'}
    assert resp["redirectURL"] == "/users/7"
    assert resp["cookies"] == [{"name": "sid", "value": "shadow-token-1", "path": "/",
                                "httpOnly": True, "secure": True}]
    assert e["time"] == 12.5 and e["timings"] == {"send": 0, "wait": 12.5, "receive": 0}
    assert e["_v2"]["status"] == 200 and e["_v2"]["content"]["text"] == '{"id": "7"}'
    assert e["_v2"]["_target"] == "http://v2" and e["_v2"]["_latency_ms"] == 30.0
    shadow = e["_shadow"]
    assert (shadow["id"], shadow["outcome"], shadow["signature"]) == ("0001", "mismatch",
                                                                      "abcd1234")
    assert shadow["diff"] == [{"path": "status", "kind": "status", "v1": 201, "v2": 200},
                              {"path": "$.id", "kind": "type", "v1": 7, "v2": "7"}]


def test_binary_compressed_truncated_and_missing_parts() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    plain = b'{"ok": true, "pad": "' + b"a" * 200 + b'"}'
    zipped = gzip.compress(plain)
    x = exchange(
        request=Request("PUT", "/blob", [("Content-Type", "image/png")], png, 4000,
                        body_truncated=True),
        url="/blob",
        v1=Answer(200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
                  zipped, len(zipped), latency_ms=1.0),
        v2=None, outcome="v1_only")
    (e,) = valid(har_file(x))["log"]["entries"]
    assert e["request"]["url"] == "http://v1/blob"  # no Host: the placeholder origin
    post = e["request"]["postData"]
    assert base64.b64decode(post["text"]) == png and post["_encoding"] == "base64"
    assert post["_truncated"] is True and "10 of 4000" in post["comment"]
    assert e["request"]["bodySize"] == 4000
    content = e["response"]["content"]
    assert content["text"] == plain.decode()  # decoded, as browsers export it
    assert content["size"] == len(plain) and content["compression"] == len(plain) - len(zipped)
    assert {"name": "Content-Encoding", "value": "gzip"} in e["response"]["headers"]
    assert e["_v2"]["status"] == 0 and "not recorded" in e["_v2"]["_error"]

    failed = exchange(v1=Answer(None, error="V1 refused the connection", latency_ms=None),
                      v2=Answer(502, [], b"\xff\xfe", 2), request=None, url="/x?a=1")
    (e,) = valid(har_file(failed))["log"]["entries"]
    assert e["response"]["status"] == 0 and e["response"]["_error"] == "V1 refused the connection"
    assert e["time"] == 0 and e["request"]["url"] == "http://v1/x?a=1"
    assert e["request"]["method"] == "POST"  # from the exchange when the request is missing
    assert e["_v2"]["content"]["encoding"] == "base64"
    assert base64.b64decode(e["_v2"]["content"]["text"]) == b"\xff\xfe"


def test_form_posts_list_their_params_and_odd_hosts_get_the_placeholder() -> None:
    x = exchange(request=Request("POST", "/login", [
        ("Host", "evil.example/<script>"),
        ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
        b"user=ada&password=shadow-token-9&x=", 35))
    (e,) = valid(har_file(x))["log"]["entries"]
    assert e["request"]["url"] == "http://v1/users/7?verbose=1&tag=a&tag=b"
    assert e["request"]["postData"]["params"] == [
        {"name": "user", "value": "ada"}, {"name": "password", "value": "shadow-token-9"},
        {"name": "x", "value": ""}]


def test_an_empty_export_is_a_valid_har() -> None:
    assert valid(har_file())["log"]["entries"] == []


HEADERS = st.lists(st.tuples(st.text(min_size=1, max_size=10), st.text(max_size=30)),
                   max_size=5)
ANSWERS = st.none() | st.builds(
    Answer, status=st.none() | st.integers(100, 599), headers=HEADERS,
    body=st.binary(max_size=64), body_size=st.integers(0, 10**6),
    body_truncated=st.booleans(), latency_ms=st.none() | st.floats(0, 1e6),
    error=st.none() | st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.builds(
    Exchange, id=st.text(min_size=1, max_size=20), ts=st.none() | st.floats(0, 4e9),
    method=st.none() | st.sampled_from(["GET", "POST", "DELETE"]),
    url=st.none() | st.text(max_size=40),
    request=st.none() | st.builds(Request, method=st.sampled_from(["GET", "POST"]),
                                  url=st.text(max_size=40), headers=HEADERS,
                                  body=st.binary(max_size=64),
                                  body_size=st.integers(0, 10**6)),
    v1=ANSWERS, v2=ANSWERS,
    diff=st.lists(st.builds(Difference, path=st.text(max_size=10), kind=st.just("changed"),
                            v1=st.integers() | st.text(max_size=5),
                            v2=st.none() | st.floats(allow_nan=False)), max_size=3)))
def test_any_exchange_is_a_valid_entry_on_one_line(x: Exchange) -> None:
    """Whatever a store holds (odd URLs, text that is not UTF-8 when encoded, huge numbers in a
    diff, missing parts), the entry is one line of JSON that validates as HAR 1.2."""
    line = har.entry_line(x, first=True)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = {"log": {"version": "1.2", "creator": {"name": "shadow", "version": "0"},
                   "entries": [orjson.loads(line)]}}
    valid(doc)
    assert doc["log"]["entries"][0]["_shadow"]["id"] == codec.storable(x.id)


def test_bytes_that_are_not_utf8_become_replacement_characters_not_errors() -> None:
    """Headers and URLs carry undecodable bytes as lone surrogates (surrogateescape)."""
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")
    x = exchange(url=f"/q?name={odd}", request=Request("GET", f"/q?name={odd}",
                                                       [("X-Name", odd)]))
    (e,) = valid(har_file(x))["log"]["entries"]
    assert {"name": "X-Name", "value": "caf\ufffd"} in e["request"]["headers"]
    assert e["request"]["url"] == "http://v1/q?name=caf\ufffd"
