"""HAR 1.2 (pure): an exchange as a HAR entry, and the lines a streamed HAR file is made of.

One entry per exchange: the request as the client sent it (to an absolute URL: the origin
is the request's Host header, or the placeholder http://v1), V1's answer as the entry's
`response`, and, in fields HAR leaves to tools (an underscore first), V2's answer as `_v2`
(the same shape as `response`) and shadow's verdict as `_shadow` (outcome, class, diff).
Bodies are exported as they are stored: redacted by the proxy, never un-redacted here.
Text bodies are text; other bodies are base64 (`content.encoding`, or `postData._encoding`
for requests, which HAR 1.2 gives no such field). A compressed answer's content is decoded
(as browsers export it) when it can be; its Content-Encoding header stays as received.

A streamed HAR file is `log_head()`, then one `entry_line()` per exchange, then LOG_TAIL:
one entry per line, so a file of N entries has N + 2 lines.
"""

from __future__ import annotations

import base64
import datetime
import http
import re
import urllib.parse
from typing import Any

from shadow import codec
from shadow.diff import decoded_body
from shadow.model import Answer, Exchange, Headers, Request

HAR_VERSION = "1.2"
PLACEHOLDER_ORIGIN = "http://v1"  # when the request named no usable Host
HTTP_VERSION = "HTTP/1.1"  # what the proxy speaks to V1 and V2; not recorded per exchange
LOG_TAIL = b"]}}\n"
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_ABSOLUTE = re.compile(r"^https?://", re.IGNORECASE)


def started(ts: float | None) -> str:
    """ISO 8601 with milliseconds and the UTC offset, as HAR's startedDateTime wants it."""
    try:
        when = datetime.datetime.fromtimestamp(ts or 0.0, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        when = datetime.datetime.fromtimestamp(0.0, datetime.UTC)
    return when.isoformat(timespec="milliseconds")


def _first(headers: Headers, name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


def _pairs(headers: Headers) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in headers]


def absolute_url(request: Request | None, url: str | None) -> str:
    """The URL the client asked for, with an origin: its Host header (and the scheme the
    proxy recorded) when the Host is a plain host[:port], else PLACEHOLDER_ORIGIN."""
    target = url if url is not None else (request.url if request is not None else "/")
    if _ABSOLUTE.match(target):
        return target  # absolute-form request target
    host = _first(request.headers, "host") if request is not None else None
    if host is not None and _HOST.fullmatch(host.strip()):
        scheme = request.scheme if request is not None and request.scheme in ("http", "https") \
            else "http"
        origin = f"{scheme}://{host.strip()}"
    else:
        origin = PLACEHOLDER_ORIGIN
    return origin + (target if target.startswith("/") else "/" + target)


def _query(url: str) -> list[dict[str, str]]:
    query = urllib.parse.urlsplit(url).query if "?" in url else ""
    return [{"name": k, "value": v}
            for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True, errors="replace")]


def request_cookies(headers: Headers) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for k, v in headers:
        if k.lower() != "cookie":
            continue
        for item in v.split(";"):
            name, eq, value = item.strip().partition("=")
            if name and eq:
                out.append({"name": name, "value": value})
    return out


_COOKIE_FLAGS = {"httponly": "httpOnly", "secure": "secure"}
_COOKIE_TEXT = {"path": "path", "domain": "domain", "expires": "expires"}


def response_cookies(headers: Headers) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k, v in headers:
        if k.lower() != "set-cookie":
            continue
        first, *attributes = v.split(";")
        name, eq, value = first.strip().partition("=")
        if not (name and eq):
            continue
        cookie: dict[str, Any] = {"name": name, "value": value}
        for attribute in attributes:
            key, _, text = attribute.strip().partition("=")
            key = key.lower()
            if key in _COOKIE_FLAGS:
                cookie[_COOKIE_FLAGS[key]] = True
            elif key in _COOKIE_TEXT and text:
                cookie[_COOKIE_TEXT[key]] = text
        out.append(cookie)
    return out


def _text_or_base64(body: bytes) -> tuple[str, bool]:
    """(text, True) for UTF-8 bodies, (base64, False) for others."""
    try:
        return body.decode("utf-8"), True
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), False


def _truncation(captured: int, size: int) -> str:
    return f"truncated by shadow's capture cap: the first {captured} of {size} bytes"


def har_request(r: Request | None, method: str | None, url: str | None) -> dict[str, Any]:
    headers = r.headers if r is not None else []
    full_url = absolute_url(r, url)
    out: dict[str, Any] = {
        "method": (r.method if r is not None else method) or "GET",
        "url": full_url, "httpVersion": HTTP_VERSION,
        "cookies": request_cookies(headers), "headers": _pairs(headers),
        "queryString": _query(full_url), "headersSize": -1,
        "bodySize": (max(r.body_size, len(r.body)) if r is not None else 0),
    }
    if r is None:
        out["comment"] = "the request was not recorded (only its answers were)"
        return out
    if r.body or r.body_size:
        mime = _first(headers, "content-type") or ""
        text, readable = _text_or_base64(r.body)
        post: dict[str, Any] = {"mimeType": mime, "params": [], "text": text}
        if not readable:
            post["_encoding"] = "base64"
        elif mime.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
            post["params"] = [{"name": k, "value": v} for k, v in urllib.parse.parse_qsl(
                text, keep_blank_values=True, errors="replace")]
        if r.body_truncated:
            post["_truncated"] = True
            post["comment"] = _truncation(len(r.body), r.body_size)
        out["postData"] = post
    return out


def har_response(a: Answer | None, missing: str) -> dict[str, Any]:
    """An answer as a HAR response; no answer (or no status: it failed) is status 0, with
    `_error` saying why."""
    if a is None:
        return {"status": 0, "statusText": "", "httpVersion": HTTP_VERSION, "cookies": [],
                "headers": [], "content": {"size": 0, "mimeType": ""}, "redirectURL": "",
                "headersSize": -1, "bodySize": -1, "_error": missing}
    status = a.status or 0
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    decoded = decoded_body(a)
    encoded = decoded is not None and decoded is not a.body
    body = decoded if decoded is not None else a.body
    text, readable = _text_or_base64(body)
    content: dict[str, Any] = {
        "size": len(body) if not a.body_truncated else max(a.body_size, len(body)),
        "mimeType": a.header("content-type") or "", "text": text}
    if not readable:
        content["encoding"] = "base64"
    if encoded and not a.body_truncated and len(body) >= a.body_size:
        content["compression"] = len(body) - a.body_size
    if a.body_truncated:
        content["_truncated"] = True
        content["comment"] = _truncation(len(a.body), a.body_size)
    out: dict[str, Any] = {
        "status": status, "statusText": reason, "httpVersion": HTTP_VERSION,
        "cookies": response_cookies(a.headers), "headers": _pairs(a.headers),
        "content": content, "redirectURL": a.header("location") or "", "headersSize": -1,
        "bodySize": max(a.body_size, len(a.body))}
    for name, value in (("_error", a.error), ("_skipped", a.skipped), ("_target", a.target),
                        ("_incomplete", a.incomplete), ("_digest", a.digest)):
        if value is not None:
            out[name] = value
    if a.latency_ms is not None:
        out["_latency_ms"] = a.latency_ms
    return out


def _ms(value: float | None) -> float:
    return round(value, 3) if value is not None and value >= 0 else 0.0


def entry(x: Exchange) -> dict[str, Any]:
    """The HAR entry of one exchange: V1's answer as `response`, V2's as `_v2`, the
    comparison as `_shadow`. `time` and `timings.wait` are V1's latency as the proxy measured
    it (send and receive are not measured apart: 0)."""
    wait = _ms(x.v1.latency_ms if x.v1 is not None else None)
    shadow: dict[str, Any] = {
        "id": x.id, "request_id": x.request_id, "route": x.route, "outcome": x.outcome,
        "signature": x.signature, "flags": x.flags, "diff": codec.diff_to_list(x.diff),
        "noise": codec.diff_to_list(x.noise), "compared_at": x.compared_at,
        "replay_delay_ms": x.replay_delay_ms}
    if x.v1_secondary is not None:
        shadow["v1_secondary"] = har_response(x.v1_secondary, "")
    return {
        "startedDateTime": started(x.ts), "time": wait,
        "request": har_request(x.request, x.method, x.url),
        "response": har_response(x.v1, "V1's answer was not recorded"),
        "cache": {}, "timings": {"send": 0, "wait": wait, "receive": 0},
        "_v2": har_response(x.v2, "V2's answer was not recorded (not replayed yet, skipped "
                                  "or expired)"),
        "_shadow": shadow,
    }


def log_head(version: str, shadow: dict[str, Any] | None = None) -> bytes:
    """The start of a HAR log, up to its first entry (ends with a newline)."""
    head: dict[str, Any] = {"version": HAR_VERSION,
                            "creator": {"name": "shadow", "version": version}}
    if shadow:
        head["_shadow"] = shadow
    return codec.dumps({"log": head})[:-2] + b',"entries":[\n'


def entry_line(x: Exchange, first: bool) -> bytes:
    """One entry as one line (a comma first unless it is the first)."""
    return (b"" if first else b",") + codec.dumps(entry(x)) + b"\n"
