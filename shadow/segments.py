"""Segments (pure): the part of the traffic an exchange belongs to, e.g. its tenant, read from
its request as stored, so counts, classes and the verdict can be given per segment as well as
per route (`--segment-by header:X-Tenant`) and a team can cut over one customer at a time.

`--segment-by KIND:NAME` names where the value is: `header:NAME` (the first header of that
name, any case), `cookie:NAME` (the first cookie of that name in the Cookie headers) or
`query:NAME` (the first query parameter of that name, %-decoded). The comparer reads it from
the request the proxy published, which is redacted: a value under a secret-looking name
(`X-Api-Key`, `?token=`...) or one a detector catches (an e-mail address...) is there as its
token, `tok_<16 hex>`: still one per tenant, and stable while the secret key stays the same,
so segments work on it (they are listed under their tokens). With --redact-action mask or drop
those values are gone: every exchange then falls in one segment.

The segment names: the value itself (at most MAX_CHARS characters: longer ones are cut);
NONE ('' in the store, "(none)" in the reports) for an exchange whose request has no value
(or was counted before --segment-by was set); OTHER, "(other)", for the values past
--max-segments (admitted like routes: the first ones seen keep their places).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from shadow.errors import ConfigError
from shadow.model import Headers, Request

KINDS = ("header", "cookie", "query")
NONE = ""  # no segment: stored as '', named NONE_NAME in reports and queries
NONE_NAME = "(none)"
OTHER = "(other)"  # every value past --max-segments
MAX_CHARS = 128  # a longer value is cut to this many characters
_NAME = {"header": re.compile(r"[A-Za-z0-9_.-]+"), "cookie": re.compile(r"[A-Za-z0-9_.-]+"),
         "query": re.compile(r"[A-Za-z0-9_.\[\]-]+")}
EXAMPLE = "header:X-Tenant"


@dataclass(frozen=True, slots=True)
class SegmentBy:
    """Where an exchange's segment is read from: a header, a cookie or a query parameter."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_segment_by(text: str, flag: str = "--segment-by") -> SegmentBy:
    """`header:X-Tenant`, `cookie:tenant`, `query:tenant` (the kind in any case), or a
    ConfigError that says what to write."""
    kind, sep, name = text.strip().partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not sep or kind not in KINDS or not name:
        raise ConfigError(f"{flag}: expected header:NAME, cookie:NAME or query:NAME (e.g. "
                          f"{EXAMPLE}, cookie:tenant, query:tenant), got {text!r}")
    if not _NAME[kind].fullmatch(name):
        allowed = "letters, digits, '-', '_', '.'" + (", '[' and ']'" if kind == "query" else "")
        raise ConfigError(f"{flag}: {name!r} is not a {kind} name shadow can segment by "
                          f"({allowed})")
    return SegmentBy(kind, name)


def segment_of(request: Request, by: SegmentBy | None) -> str:
    """The segment of a request (as stored: redacted): its value under `by`, cut to
    MAX_CHARS, or NONE. Bytes that are not UTF-8 are kept as \\x escapes (one value, one
    segment)."""
    if by is None:
        return NONE
    if by.kind == "header":
        value = _header(request.headers, by.name)
    elif by.kind == "cookie":
        value = _cookie(request.headers, by.name)
    else:
        value = _query(request.url, by.name)
    return clean(value)


def clean(value: str | None) -> str:
    """A value as a segment name: trimmed, text any store takes, at most MAX_CHARS."""
    if not value:
        return NONE
    text = value.strip().encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:MAX_CHARS]


def _header(headers: Headers, name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


def _cookie(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k.lower() != "cookie":
            continue
        for part in v.split(";"):
            cname, sep, value = part.strip().partition("=")
            if sep and cname.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value
    return None


def _query(url: str, name: str) -> str | None:
    _, sep, query = url.partition("?")
    if not sep:
        return None
    query = query.split("#", 1)[0]
    for key, value in parse_qsl(query, keep_blank_values=True, errors="backslashreplace"):
        if key == name:
            return value
    return None


def capped(segment: str, admitted: set[str] | frozenset[str]) -> str:
    """`segment` when it is counted apart (NONE always is), else OTHER (--max-segments)."""
    return segment if segment == NONE or segment in admitted else OTHER


def to_admit(segments: set[str] | list[str]) -> list[str]:
    """The segments to look up or admit under --max-segments: NONE and OTHER never take a
    place."""
    return sorted(set(segments) - {NONE, OTHER})


def shown(segment: str) -> str:
    """A stored segment as reports name it (NONE is "(none)")."""
    return NONE_NAME if segment == NONE else segment


def asked(name: str) -> str:
    """A segment named in a query (`segment=`, `--segment`) as it is stored."""
    return NONE if name == NONE_NAME else name
