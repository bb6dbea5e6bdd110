"""Query filters for exchange listings (pure): parsed and validated once, shared by stores."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from shadow.errors import ShadowError
from shadow.model import OUTCOMES
from shadow.windows import WindowError, parse_instant, window


class FilterError(ShadowError):
    """A bad filter value: the message says which and what is accepted."""


@dataclass(frozen=True, slots=True)
class Filters:
    outcome: str | None = None
    route: str | None = None
    method: str | None = None
    v1_status: int | None = None
    v2_status: int | None = None
    path: str | None = None  # a differing JSON path contains this text
    url: str | None = None  # the request's URL (path and query, as stored) contains this text
    signature: str | None = None
    since: float | None = None
    until: float | None = None
    cursor: str | None = None  # exclusive: items with a smaller exchange id
    limit: int = 50


KNOWN = ("outcome", "route", "method", "v1_status", "v2_status", "path", "url", "signature",
         "since", "until", "cursor", "limit")
MAX_URL_TEXT = 2000
MAX_LIMIT = 1000


def parse_time(text: str, now: float, name: str = "since") -> float:
    """Unix seconds, ISO 8601 (naive = UTC), or a duration ago: 90s, 15m, 2h, 7d, 1w
    (shadow.windows.parse_instant)."""
    try:
        return parse_instant(text, now, name)
    except WindowError as e:
        raise FilterError(str(e)) from None


def _status(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FilterError(f"{name}: expected an HTTP status code, got {text!r}") from None
    if not 100 <= value <= 599:
        raise FilterError(f"{name}: expected an HTTP status code 100-599, got {value}")
    return value


def parse_filters(query: Mapping[str, str], now: float, *,
                  default_outcome: str | None = None) -> Filters:
    unknown = sorted(set(query) - set(KNOWN))
    if unknown:
        raise FilterError(f"unknown filter {unknown[0]!r}; known: {', '.join(KNOWN)}")
    outcome = query.get("outcome", default_outcome)
    if outcome is not None and outcome not in OUTCOMES:
        raise FilterError(f"outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}")
    method = query.get("method")
    if method is not None:
        method = method.upper()
        if not re.fullmatch(r"[A-Z]{1,20}", method):
            raise FilterError(f"method: expected an HTTP method such as GET, got {query['method']!r}")
    signature = query.get("signature")
    if signature is not None and not re.fullmatch(r"[0-9a-f]{4,64}", signature):
        raise FilterError(f"signature: expected a hex signature, got {signature!r}")
    limit_text = query.get("limit", "50")
    try:
        limit = int(limit_text)
    except ValueError:
        raise FilterError(f"limit: expected a number 1-{MAX_LIMIT}, got {limit_text!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise FilterError(f"limit: expected a number 1-{MAX_LIMIT}, got {limit}")
    url = query.get("url") or None
    if url is not None and len(url) > MAX_URL_TEXT:
        raise FilterError(f"url: expected at most {MAX_URL_TEXT} characters of the URL")
    cursor = query.get("cursor")
    if cursor is not None and not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", cursor):
        raise FilterError("cursor: not a cursor this API returned")
    since = parse_time(query["since"], now, "since") if "since" in query else None
    until = parse_time(query["until"], now, "until") if "until" in query else None
    if since is not None and until is not None and since > until:
        raise FilterError("since is after until")
    bounds = window(since, until)  # exact to the minute, as the reports count (shadow.windows)
    since, until = bounds.since, bounds.until
    return Filters(
        outcome=outcome, route=query.get("route") or None, method=method,
        v1_status=_status("v1_status", query["v1_status"]) if "v1_status" in query else None,
        v2_status=_status("v2_status", query["v2_status"]) if "v2_status" in query else None,
        path=query.get("path") or None, url=url, signature=signature, since=since, until=until,
        cursor=cursor, limit=limit)
