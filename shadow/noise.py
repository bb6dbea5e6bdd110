"""Learned noise (pure): for identical requests (same method, url and body), paths whose V1
values change over time are suspected noise on their route."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import TypeGuard

from shadow.compare import generalize
from shadow.diff import decoded_body, json_differences, parse_json
from shadow.model import Answer, Request, RouteKey

# A path counts as noise when V1 disagreed with itself there in at least MIN_NOISE_RATE of
# MIN_OBSERVED or more observations on its route (V1' answers, or repeats of identical requests).
MIN_NOISE_RATE = 0.5
MIN_OBSERVED = 10


def noise_rate(count: int, observed: int) -> float | None:
    """How often V1 changed at a path, as reported (4 decimals); None before any observation."""
    return round(count / observed, 4) if observed else None


def is_noise(rate: float | None, observed: int) -> TypeGuard[float]:
    """Enough observations, and V1 changed in enough of them (`rate` is then a number)."""
    return rate is not None and rate >= MIN_NOISE_RATE and observed >= MIN_OBSERVED


def repeat_counts(seen: Iterable[tuple[RouteKey, list[str] | None]],
                  ) -> tuple[dict[RouteKey, int], dict[tuple[str, str, str], int]]:
    """From (route, paths where V1 changed since its last answer to the same request, None when
    there was none): the repeats per route, and the changes per (method, route, path)."""
    repeats: dict[RouteKey, int] = {}
    changed: dict[tuple[str, str, str], int] = {}
    for key, paths in seen:
        if paths is None:
            continue
        repeats[key] = repeats.get(key, 0) + 1
        for path in paths:
            changed[(*key, path)] = changed.get((*key, path), 0) + 1
    return repeats, changed


def request_key(request: Request) -> str:
    h = hashlib.sha1(request.method.encode() + b" " + request.url.encode("utf-8", "surrogatepass"))
    h.update(b"\n" + request.body)
    return h.hexdigest()


class V1Memory:
    """Remembers V1's last answer per identical request, least recently used out, bounded in
    answers and in bytes (big answers would otherwise make 50,000 of them gigabytes)."""

    def __init__(self, capacity: int = 50_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._last: OrderedDict[str, tuple[int | None, bytes]] = OrderedDict()

    def observe(self, request: Request, v1: Answer) -> list[str] | None:
        """The generalized paths where this V1 answer differs from V1's previous answer to
        the same request; None when there is no previous answer to compare with."""
        if v1.error or v1.body_truncated:
            return None
        body = decoded_body(v1)
        if body is None:
            return None
        key = request_key(request)
        previous = self._last.pop(key, None)
        if previous is not None:
            self.bytes -= len(previous[1])
        if len(body) <= self.max_bytes // 16:  # one answer never takes much of the budget
            self._last[key] = (v1.status, body)
            self.bytes += len(body)
        while self._last and (len(self._last) > self.capacity or self.bytes > self.max_bytes):
            _, (_, evicted) = self._last.popitem(last=False)
            self.bytes -= len(evicted)
        if previous is None:
            return None
        status, old = previous
        paths: set[str] = set()
        if status != v1.status:
            paths.add("status")
        if old != body:
            ok_old, doc_old = parse_json(old)
            ok_new, doc_new = parse_json(body)
            if ok_old and ok_new:
                paths |= {generalize(d.path) for d in json_differences(doc_old, doc_new)}
            else:
                paths.add("$")
        return sorted(paths)
