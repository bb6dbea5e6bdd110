"""Redaction for what leaves the store's protection (the live firehose): pure functions.

Secrets are matched by name, case-insensitively: header names, and field names in
JSON bodies, query strings, form bodies and diff paths. A matched value becomes
`[redacted]`; the shape around it stays, so dashboards still see what changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from shadow.model import Headers

MASK = "[redacted]"
DEFAULT_HEADERS = ("authorization,proxy-authorization,cookie,set-cookie,x-api-key,"
                   "x-auth-token,x-csrf-token,x-xsrf-token")
DEFAULT_FIELDS = ("password,passwd,pwd,secret,client_secret,token,access_token,refresh_token,"
                  "id_token,api_key,apikey,authorization,session,sessionid,ssn,card_number,"
                  "cvv,cvc,iban,pin")
_PATH_SEGMENTS = re.compile(r"[.\[\]'\"]+")


def names(csv: str | None) -> frozenset[str]:
    """`"A, b"` -> {"a", "b"}: the comma-separated setting as lower-case names."""
    return frozenset(n.strip().lower() for n in (csv or "").split(",") if n.strip())


@dataclass(frozen=True, slots=True)
class Redaction:
    headers: frozenset[str]
    fields: frozenset[str]

    @classmethod
    def from_settings(cls, headers: str | None, fields: str | None) -> Redaction:
        return cls(names(headers), names(fields))

    def header_pairs(self, headers: Iterable[tuple[str, str]]) -> Headers:
        return [(k, MASK if k.lower() in self.headers else v) for k, v in headers]

    def url(self, url: str) -> str:
        """Query parameters named like secrets lose their values; the rest stays byte-exact."""
        path, sep, query = url.partition("?")
        if not sep:
            return url
        return f"{path}?{self.query(query)}"

    def query(self, query: str) -> str:
        parts = []
        for part in query.split("&"):
            name, eq, _ = part.partition("=")
            if eq and unquote_plus(name).lower() in self.fields:
                part = f"{name}={MASK}"
            parts.append(part)
        return "&".join(parts)

    def value(self, value: Any) -> Any:
        """A JSON value with every field named like a secret masked, at any depth."""
        if isinstance(value, dict):
            return {k: MASK if isinstance(k, str) and k.lower() in self.fields else self.value(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def sensitive_path(self, path: str) -> bool:
        """A diff path (`$.user.password`, `items[0]['api_key']`, a header name) that names
        a secret anywhere along it."""
        if path.lower() in self.headers:
            return True
        return any(seg.lower() in self.fields for seg in _PATH_SEGMENTS.split(path) if seg)
