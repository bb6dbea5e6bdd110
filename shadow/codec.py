"""Wire formats, in one module: events <-> JSON stream entries, parts <-> store JSON.

Stream events are JSON (one object per entry, field `e`) so any dashboard can
read them. Bodies travel base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

import orjson
import zstandard

from shadow.errors import EventError
from shadow.model import (
    Answer,
    CandidateEvent,
    Difference,
    Event,
    Exchange,
    Headers,
    Request,
    RequestEvent,
    ResponseEvent,
)

_b64_bytes = binascii.b2a_base64


def _b64(data: bytes) -> str:
    return _b64_bytes(data, newline=False).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(storable(obj))


def storable(obj: Any) -> Any:
    """`obj` made safe for JSON and BSON, losing nothing that matters.

    Header bytes that are not UTF-8 arrive as lone surrogates (surrogateescape),
    which JSON and BSON cannot carry: such a header becomes a triple
    [name, value with U+FFFD, base64 of the exact bytes], which `_headers` reads back
    exactly. Other such strings get U+FFFD; integers beyond 64 bits become text."""
    if isinstance(obj, int) and not isinstance(obj, bool) and not -2**63 <= obj < 2**63:
        return str(obj)
    if isinstance(obj, str):
        return obj if obj.isascii() else _replace_surrogates(obj)
    if isinstance(obj, dict):
        return {k: _safe_headers(v) if k == "headers" and isinstance(v, list) else storable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [storable(v) for v in obj]
    return obj


def _replace_surrogates(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _safe_headers(headers: list[Any]) -> list[Any]:
    out: list[Any] = []
    for pair in headers:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            out.append(storable(pair))
            continue
        name, value = pair
        if isinstance(value, str) and not value.isascii():
            raw = value.encode("utf-8", "surrogateescape")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                out.append([storable(name), raw.decode("utf-8", "replace"), _b64(raw)])
                continue
        out.append([storable(name), value])
    return out


# ---- parts (shared by events and store documents) ----

def request_to_dict(r: Request) -> dict[str, Any]:
    return {**_request_head(r), "headers": _safe_headers(r.headers), "body": _b64(r.body)}


def _request_head(r: Request) -> dict[str, Any]:
    out: dict[str, Any] = {"method": r.method, "url": r.url, "headers": r.headers,
                           "body_size": r.body_size, "body_truncated": r.body_truncated}
    if r.client is not None:
        out["client"] = r.client
    if r.scheme is not None:
        out["scheme"] = r.scheme
    return out


def request_from_dict(d: dict[str, Any]) -> Request:
    return Request(
        method=str(d["method"]),
        url=str(d["url"]),
        headers=_headers(d.get("headers")),
        body=_unb64(d.get("body") or ""),
        body_size=int(d.get("body_size") or 0),
        body_truncated=bool(d.get("body_truncated")),
        client=_optional_str(d.get("client")),
        scheme=_optional_str(d.get("scheme")),
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def answer_to_dict(a: Answer) -> dict[str, Any]:
    return {**_answer_head(a), "headers": _safe_headers(a.headers), "body": _b64(a.body)}


def _answer_head(a: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": a.status,
        "headers": a.headers,
        "body_size": a.body_size,
        "body_truncated": a.body_truncated,
        "latency_ms": a.latency_ms,
        "error": a.error,
    }
    if a.skipped is not None:
        out["skipped"] = a.skipped
    if a.target is not None:
        out["target"] = a.target
    if a.incomplete is not None:
        out["incomplete"] = a.incomplete
    if a.digest is not None:
        out["digest"] = a.digest
    return out


def answer_from_dict(d: dict[str, Any]) -> Answer:
    status = d.get("status")
    latency = d.get("latency_ms")
    return Answer(
        status=None if status is None else int(status),
        headers=_headers(d.get("headers")),
        body=_unb64(d.get("body") or ""),
        body_size=int(d.get("body_size") or 0),
        body_truncated=bool(d.get("body_truncated")),
        latency_ms=None if latency is None else float(latency),
        error=d.get("error"),
        skipped=d.get("skipped"),
        target=d.get("target"),
        incomplete=d.get("incomplete"),
        digest=_optional_str(d.get("digest")),
    )


def _headers(raw: Any) -> Headers:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("headers must be a list of [name, value] pairs")
    out: Headers = []
    for pair in raw:
        if not isinstance(pair, (list, tuple)) or len(pair) not in (2, 3):
            raise ValueError("headers must be a list of [name, value] pairs")
        if len(pair) == 3:  # [name, readable value, base64 of the exact bytes]: see storable()
            out.append((str(pair[0]), _unb64(str(pair[2])).decode("utf-8", "surrogateescape")))
        else:
            out.append((str(pair[0]), str(pair[1])))
    return out


# ---- events ----

def encode_event(event: Event) -> bytes:
    """One stream entry's JSON. The proxy encodes two per request, so the body's base64 is
    spliced in as bytes: a third of the cost of passing a long string through the encoder."""
    if isinstance(event, RequestEvent):
        head = {"type": "request", "id": event.id, "request_id": event.request_id,
                "ts": event.ts, **_request_head(event.request)}
        if event.sealed is not None:
            head["sealed"] = event.sealed
        body = event.request.body
    else:
        head = {"type": event.type, "id": event.id, "ts": event.ts,
                **_answer_head(event.answer)}
        if isinstance(event, CandidateEvent) and event.secondary is not None:
            head["secondary"] = answer_to_dict(event.secondary)
        body = event.answer.body
    return b"".join((_dumps(head)[:-1], b',"body":"', _b64_bytes(body, newline=False), b'"}'))


_TYPE_PREFIX = b'{"type":"'


def peek_type(data: bytes) -> str | None:
    """The event type without parsing the whole entry (encode_event writes `type` first).
    None when the entry does not look like a shadow event at all."""
    if not data.startswith(_TYPE_PREFIX):
        return None
    end = data.find(b'"', len(_TYPE_PREFIX))
    return data[len(_TYPE_PREFIX):end].decode("ascii", "replace") if end > 0 else None


def decode_event(data: bytes | str) -> Event:
    """Parse one stream entry; anything malformed raises EventError (a poison message)."""
    try:
        d = orjson.loads(data)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        kind = d.get("type")
        ident = d.get("id")
        if not isinstance(ident, str) or not ident:
            raise ValueError("missing id")
        ts = float(d.get("ts") or 0.0)
        if kind == "request":
            sealed = d.get("sealed")
            return RequestEvent(id=ident, request_id=str(d.get("request_id") or ident), ts=ts,
                                request=request_from_dict(d),
                                sealed=sealed if isinstance(sealed, str) else None)
        if kind == "response":
            return ResponseEvent(id=ident, ts=ts, answer=answer_from_dict(d))
        if kind == "candidate":
            secondary = d.get("secondary")
            return CandidateEvent(id=ident, ts=ts, answer=answer_from_dict(d),
                                  secondary=answer_from_dict(secondary) if secondary else None)
        raise ValueError(f"unknown event type {kind!r}")
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, binascii.Error) as e:
        raise EventError(f"malformed event: {e}") from e


# ---- store documents ----

def dumps(obj: Any) -> bytes:
    return _dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


# A stored part (a request or an answer, as request_to_dict/answer_to_dict make it) is
# compressed: a marker byte, then zstd(the part's JSON without its body, a NUL (JSON never
# holds one), the body's raw bytes). PACKED (what pack_part writes): zstd with the built-in
# dictionary below, which holds what parts say again and again (their keys, common headers):
# a 300-byte answer becomes about 70 bytes, where zstd alone makes it 160. ZSTD_PLAIN: zstd
# without it (written for a while; still read). Parts stored before, as JSON text (or, in
# MongoDB, as a document), still read as they were.
ZSTD_PLAIN = b"\x01"
PACKED = b"\x02"
# Never change these bytes: stored parts depend on them (another dictionary gets a new marker).
_PART_DICTIONARY = b"".join((
    b'["Date","Mon, 01 Jan 2026 00:00:00 GMT"]["Server","nginx"]["Cache-Control","no-cache"]',
    b'["Set-Cookie","["Vary","Accept-Encoding"]["ETag","W/\\"["Location","',
    b'["Transfer-Encoding","chunked"]["Content-Encoding","gzip"]["Connection","keep-alive"]',
    b'["Access-Control-Allow-Origin","*"]["Content-Type","text/html; charset=utf-8"]',
    b'["Content-Type","text/plain; charset=utf-8"]["Content-Type","application/json; charset=',
    b'utf-8"]["Content-Type","application/x-www-form-urlencoded"]["Content-Type","multipart/',
    b'form-data; boundary=["User-Agent","Mozilla/5.0 ["Accept","*/*"]["Accept","application/',
    b'json"]["Accept-Encoding","gzip, deflate, br"]["Accept-Language","en-US,en;q=0.9"]',
    b'["Authorization","["Cookie","["X-Forwarded-For","["X-Forwarded-Proto","https"]',
    b'["X-Forwarded-Host","["Host","["X-Request-Id","',
    b'{"id":"name":"email":"type":"status":"message":"error":"data":{"items":[{"total":',
    b'"page":"created_at":"2026-"updated_at":"2026-true,false,null}]',
    b',"skipped":"",",target":"","incomplete":","digest":"',
    b'{"method":"POST","url":"/","headers":[["Host","',
    b'{"method":"GET","url":"/","headers":[],"body_size":0,"body_truncated":false,"client":"',
    b'127.0.0.1","scheme":"https"}',
    b'{"status":404,"headers":[["Content-Type","application/json"],["Content-Length","',
    b'"]],"body_size":0,"body_truncated":false,"latency_ms":,"error":null}',
    b'{"status":200,"headers":[["Content-Type","application/json"],["Content-Length","',
    b'"]],"body_size":,"body_truncated":false,"latency_ms":,"error":null}',
))
_dictionary = zstandard.ZstdCompressionDict(_PART_DICTIONARY,
                                            dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_zstd_in = zstandard.ZstdCompressor(dict_data=_dictionary, compression_params=(
    zstandard.ZstdCompressionParameters.from_level(3, write_content_size=True,
                                                   write_checksum=False, write_dict_id=False)))
_local = threading.local()  # decompressors, one per thread (SQLite's calls shadow_skipped)


def _decompressor(marker: bytes) -> zstandard.ZstdDecompressor | None:
    mine: dict[bytes, zstandard.ZstdDecompressor] | None = getattr(_local, "zstd", None)
    if mine is None:
        mine = _local.zstd = {PACKED: zstandard.ZstdDecompressor(dict_data=_dictionary),
                              ZSTD_PLAIN: zstandard.ZstdDecompressor()}
    return mine.get(marker)


def pack_part(part: dict[str, Any]) -> bytes:
    head = {k: v for k, v in part.items() if k != "body"}
    body = part.get("body")
    raw = _unb64(body) if isinstance(body, str) else b""
    return PACKED + _zstd_in.compress(_dumps(head) + b"\0" + raw)


def unpack_part(stored: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A part as pack_part stored it, or as older versions did (zstd without the dictionary,
    JSON text, a document)."""
    if isinstance(stored, dict):
        return stored
    if isinstance(stored, (bytes, bytearray, memoryview)):
        unpack = _decompressor(bytes(stored[:1]))
        if unpack is not None:
            head, _, raw = unpack.decompress(bytes(stored[1:])).partition(b"\0")
            part: dict[str, Any] = orjson.loads(head)
            part["body"] = _b64(raw)
            return part
    loaded: dict[str, Any] = orjson.loads(stored)
    return loaded


def diff_to_list(diff: list[Difference]) -> list[dict[str, Any]]:
    return [{"path": d.path, "kind": d.kind, "v1": d.v1, "v2": d.v2} for d in diff]


def diff_from_list(raw: list[dict[str, Any]] | None) -> list[Difference]:
    return [Difference(d["path"], d["kind"], d.get("v1"), d.get("v2")) for d in raw or []]


def body_for_display(body: bytes, truncated: bool = False) -> dict[str, Any]:
    """Bodies decoded for people: text when it is UTF-8, else base64, said so."""
    try:
        return {"text": body.decode("utf-8"), "encoding": "utf-8", "truncated": truncated}
    except UnicodeDecodeError:
        return {"base64": _b64(body), "encoding": "base64", "truncated": truncated}


def exchange_for_display(x: Exchange) -> dict[str, Any]:
    """The exchange document as the reports API shows it: bodies decoded for people."""

    def part(p: Request | Answer | None) -> dict[str, Any] | None:
        if p is None:
            return None
        d = request_to_dict(p) if isinstance(p, Request) else answer_to_dict(p)
        d["body"] = body_for_display(p.body, p.body_truncated)
        return d

    return {
        "id": x.id, "request_id": x.request_id, "ts": x.ts, "method": x.method, "url": x.url,
        "route": x.route, "outcome": x.outcome, "signature": x.signature, "flags": x.flags,
        "compared_at": x.compared_at, "request": part(x.request), "v1": part(x.v1),
        "v2": part(x.v2), "v1_secondary": part(x.v1_secondary), "diff": diff_to_list(x.diff),
        "noise": diff_to_list(x.noise), "replay_delay_ms": x.replay_delay_ms,
    }
