"""Answers to compare, for the unit tests of shadow/diff.py and shadow/compare.py."""

from __future__ import annotations

import orjson

from shadow.model import Answer, Request

JSON = [("Content-Type", "application/json")]


def answer(body: object, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Answer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Answer(status, headers if headers is not None else list(JSON), raw, len(raw))


GET = Request("GET", "/x", [])
