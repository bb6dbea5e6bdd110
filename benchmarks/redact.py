#!/usr/bin/env python3
"""Redaction micro-benchmark: µs per request + response through the default policy.

    .venv/bin/python benchmarks/redact.py [--variants 2000] [--rounds 7]

Each case is a POST with a JSON body answered with JSON (realistic headers both ways), in
`--variants` versions that differ as live traffic does: ids in the URL and bodies, and where
the case has them, a different e-mail address, password or card per request (so no token is
ever cached). A round runs every variant once; each figure is the best round, since other
processes only ever add time.
  1 KB JSON, no secrets          nothing to redact: both come back as the same objects
  ... + 3 never-seen words       every request brings words the policy has not met yet
  1 KB JSON, an e-mail           benchmarks/proxy.py's payload shape (it holds an address)
  1 KB JSON, password + card     a secret-named field and a card number under another name
  64 KiB JSON, no secrets        a big list of records
  GET, no bodies                 the request is headers and a URL; the answer 1 KB JSON
  redaction off                  Policy.off(): the floor (a call and a flag)
Single-threaded and CPU-bound: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadow.model import Answer, Request
from shadow.redact import Policy

KEY = b"benchmark-key-0123456789abcdef!!"
REQUEST_HEADERS = [("Host", "api.example.com"), ("User-Agent", "python-requests/2.32.3"),
                   ("Accept", "application/json"), ("Accept-Encoding", "gzip, deflate"),
                   ("Content-Type", "application/json"),
                   ("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y"),
                   ("X-Forwarded-For", "203.0.113.7")]
ANSWER_HEADERS = [("Content-Type", "application/json; charset=utf-8"),
                  ("Date", "Sun, 22 Nov 2026 10:00:00 GMT"), ("Server", "nginx"),
                  ("Cache-Control", "no-store"), ("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y")]
Pair = tuple[Request, Answer]
_rng = random.Random(7)


def word(n: int = 8) -> str:
    return "".join(_rng.choice(string.ascii_lowercase) for _ in range(n))


def card() -> str:
    digits = [4, *(_rng.randrange(10) for _ in range(14))]
    total = sum(d if i % 2 else (2 * d - 9 if d > 4 else 2 * d)
                for i, d in enumerate(reversed(digits)))
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def user(i: int, extra: dict[str, object]) -> bytes:
    return orjson.dumps({
        "id": i, "name": "Ada Lovelace", "plan": "pro", "tags": ["math", "engines"],
        "address": {"street": "12 St James Square", "city": "London", "zip": "SW1Y 4JH",
                    "country": "GB"},
        "orders": [{"id": i * 10 + k, "total": round(k * 3.5, 2), "currency": "GBP",
                    "state": "shipped"} for k in range(8)],
        "created_at": "1843-07-01T00:00:00Z", **extra})


def record(i: int) -> dict[str, object]:
    return {"id": i, "sku": f"SKU-{i:06d}", "name": f"Widget number {i}", "price": i * 3.5,
            "currency": "GBP", "state": "shipped", "tags": ["blue", "large"],
            "updated_at": "2026-11-22T10:00:00Z"}


def pair(i: int, body_in: bytes, body_out: bytes, method: str = "POST") -> Pair:
    headers = REQUEST_HEADERS if body_in else [h for h in REQUEST_HEADERS
                                               if h[0] != "Content-Type"]
    return (Request(method, f"/api/v2/users/{i}?expand=orders&page=2", list(headers), body_in,
                    len(body_in)),
            Answer(200, list(ANSWER_HEADERS), body_out, len(body_out)))


def plain(i: int) -> Pair:
    body = user(i, {"note": "thanks for the order"})
    return pair(i, body, body)


def fresh_words(i: int) -> Pair:
    body = user(i, {"note": f"{word()} {word()} {word()}"})
    return pair(i, body, body)


def email(i: int) -> Pair:
    body = user(i, {"email": f"{word(6)}.{i}@example.com"})
    return pair(i, body, body)


def secrets(i: int) -> Pair:
    body = user(i, {"password": f"Tr0ub4dor&{i}-{word(5)}", "payment": card()})
    return pair(i, body, body)


def big(i: int) -> Pair:
    body = orjson.dumps({"page": i, "items": [record(i * 1000 + k) for k in range(420)]})
    return pair(i, body, body)


def get(i: int) -> Pair:
    return pair(i, b"", user(i, {"note": "thanks"}), "GET")


def measure(policy: Policy, variants: list[Pair], rounds: int, fresh: bool) -> float:
    """Best µs per request+response over `rounds` passes over `variants` (each pass over its
    own slice when `fresh`: words never seen before)."""
    warm = variants[0] if fresh else None
    for r, a in [warm] if warm else variants:  # warm the caches, as a running proxy has
        policy.request(r)
        policy.answer(a)
    slices = [variants[1 + k::rounds] for k in range(rounds)] if fresh else [variants] * rounds
    best = float("inf")
    for batch in slices:
        started = time.perf_counter()
        for r, a in batch:
            policy.request(r)
            policy.answer(a)
        best = min(best, (time.perf_counter() - started) / len(batch) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2000, help="per case (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="best of (default 7)")
    args = parser.parse_args()
    policy = Policy.build(key=KEY)
    cases: list[tuple[str, Policy, Callable[[int], Pair], int, bool]] = [
        ("1 KB JSON, no secrets", policy, plain, args.variants, False),
        ("1 KB JSON, no secrets, 3 never-seen words", policy, fresh_words,
         args.variants * args.rounds // 4, True),
        ("1 KB JSON, an e-mail", policy, email, args.variants, False),
        ("1 KB JSON, password + card", policy, secrets, args.variants, False),
        ("64 KiB JSON, no secrets", policy, big, max(args.variants // 50, 4), False),
        ("GET, no bodies; 1 KB JSON answer", policy, get, args.variants, False),
        ("redaction off (1 KB JSON both ways)", Policy.off(), plain, args.variants, False),
    ]
    print(f"{'case':44} {'bytes in/out':>14} {'µs per request+response':>24}")
    for name, p, make, n, fresh in cases:
        variants = [make(i) for i in range(n)]
        us = measure(p, variants, args.rounds, fresh)
        r, a = variants[-1]
        changed = p.request(r) is not r or p.answer(a) is not a
        sizes = f"{len(r.body)}/{len(a.body)}"
        print(f"{name:44} {sizes:>14} {us:>20.1f} µs{'  (redacted)' if changed else ''}")


if __name__ == "__main__":
    main()
