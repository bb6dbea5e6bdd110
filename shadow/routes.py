"""Route templates (pure): /users/42/orders/9f1c... -> /users/{id}/orders/{id}."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"^-?\d+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,}$")
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-.~=]{20,}$")
PLACEHOLDER = "{id}"


def is_identifier_segment(segment: str) -> bool:
    if not segment:
        return False
    if _NUMBER.match(segment) or _UUID.match(segment):
        return True
    has_digit = any(c.isdigit() for c in segment)
    if _HEX.match(segment) and has_digit:
        return True
    if _ULID.match(segment) and has_digit:
        return True
    return bool(_TOKEN.match(segment) and has_digit and any(c.isalpha() for c in segment))


def route_template(url: str) -> str:
    """The normalized route of a path+query: identifiers become {id}, the query is dropped."""
    path = url.split("?", 1)[0].split("#", 1)[0] or "/"
    return "/".join(PLACEHOLDER if is_identifier_segment(s) else s for s in path.split("/"))
