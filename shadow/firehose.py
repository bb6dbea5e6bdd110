"""The live firehose: one small, redacted item per compared exchange (pure functions).

The comparer publishes items on the Redis channel `<prefix>:firehose`; the reports API
streams them as server-sent events (`/api/firehose`), which the dashboard and
`shadow tail` read. Items never carry bodies; diff values are masked where their path
names a secret and shortened when long.
"""

from __future__ import annotations

import datetime
import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

from shadow import codec
from shadow.model import Answer, Comparison, Difference, Exchange
from shadow.redact import MASK, Policy

MAX_DIFFS = 10
MAX_VALUE_CHARS = 200


def item(x: Exchange, c: Comparison, redaction: Policy) -> dict[str, Any]:
    request_headers = x.request.headers if x.request is not None else []
    return {
        "id": x.id,
        "request_id": x.request_id,
        "ts": x.ts,
        "method": x.method,
        "url": redaction.url(x.url or ""),
        "route": x.route,
        "outcome": c.outcome,
        "signature": c.signature,
        "flags": c.flags,
        "v1": _answer(x.v1),
        "v2": _answer(x.v2),
        "request_headers": redaction.header_pairs(request_headers),
        "diff_count": len(c.diff),
        "diff": [_difference(d, redaction) for d in c.diff[:MAX_DIFFS]],
    }


def _answer(a: Answer | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"status": a.status, "latency_ms": a.latency_ms, "error": a.error, "skipped": a.skipped}


def _difference(d: Difference, redaction: Policy) -> dict[str, Any]:
    if redaction.sensitive_path(d.path):
        v1, v2 = (MASK if d.v1 is not None else None), (MASK if d.v2 is not None else None)
    else:
        v1, v2 = _short(redaction.value(d.v1)), _short(redaction.value(d.v2))
    return {"path": d.path, "kind": d.kind, "v1": v1, "v2": v2}


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, (dict, list)):
        text = codec.dumps(value).decode()
        return value if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
    return value


def wanted(it: dict[str, Any], *, outcomes: frozenset[str] = frozenset(),
           route: str | None = None, method: str | None = None) -> bool:
    """Filters of `/api/firehose` and `shadow tail`: outcome set, route glob, method."""
    if outcomes and it.get("outcome") not in outcomes:
        return False
    if method and (it.get("method") or "").upper() != method.upper():
        return False
    return not route or fnmatch.fnmatchcase(it.get("route") or "", route)


def line(it: dict[str, Any]) -> str:
    """One line for a terminal: time, outcome, method, url, statuses, latencies, first diff."""
    ts = it.get("ts")
    when = datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3] if ts else "--:--:--"
    v1, v2 = it.get("v1") or {}, it.get("v2") or {}
    status = f"{v1.get('status') or '-'}→{v2.get('status') or v2.get('skipped') or '-'}"
    lat = f"{_ms(v1.get('latency_ms'))}/{_ms(v2.get('latency_ms'))} ms"
    text = f"{when} {it.get('outcome', '?'):<9} {it.get('method') or '?':<6} {it.get('url')}  " \
           f"{status}  {lat}"
    diffs = it.get("diff") or []
    if diffs:
        first = diffs[0]
        more = f" (+{it['diff_count'] - 1} more)" if it.get("diff_count", 0) > 1 else ""
        text += f"  {first['path']} {first['kind']}: {first['v1']!r} → {first['v2']!r}{more}"
    elif v2.get("error"):
        text += f"  V2: {v2['error']}"
    return text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def sse_events(lines: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """(event, data) pairs from a server-sent-events byte stream; comments are skipped."""
    event, data = "message", list[bytes]()
    for raw in lines:
        text = raw.rstrip(b"\r\n")
        if not text:
            if data:
                yield event, b"\n".join(data)
            event, data = "message", []
        elif text.startswith(b":"):
            continue
        else:
            name, _, value = text.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
