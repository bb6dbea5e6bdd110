#!/usr/bin/env python3
"""Redaction micro-benchmark: µs per request + response through the default policy.

    .venv/bin/python benchmarks/redact.py [--seconds 1.0]

Cases (each a POST with a JSON body and its JSON answer, realistic headers both ways):
  1 KB JSON, no secrets        nothing to redact: both come back as the same objects
  1 KB JSON, e-mail            benchmarks/proxy.py's payload (it holds an e-mail address)
  1 KB JSON, password + card   a secret-named field and a card number under another name
  64 KiB JSON, no secrets      a big list of records
  GET, no bodies               the common case on the proxy's client path
  redaction off                Policy.off(): the floor (a call and a flag)
Single-threaded and CPU-bound: each figure is the best of 7 rounds; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadow.model import Answer, Request
from shadow.redact import Policy


def record(i: int) -> dict[str, object]:
    return {"id": i, "sku": f"SKU-{i:06d}", "name": f"Widget number {i}", "price": i * 3.5,
            "currency": "GBP", "state": "shipped", "tags": ["blue", "large"],
            "updated_at": "2026-11-22T10:00:00Z"}


def user(extra: dict[str, object]) -> bytes:
    doc: dict[str, object] = {
        "id": 12345, "name": "Ada Lovelace", "plan": "pro", "tags": ["math", "engines"],
        "address": {"street": "12 St James Square", "city": "London", "zip": "SW1Y 4JH",
                    "country": "GB"},
        "orders": [{"id": i, "total": round(i * 3.5, 2), "currency": "GBP", "state": "shipped"}
                   for i in range(8)],
        "created_at": "1843-07-01T00:00:00Z", **extra}
    return orjson.dumps(doc)


REQUEST_HEADERS = [("Host", "api.example.com"), ("User-Agent", "python-requests/2.32.3"),
                   ("Accept", "application/json"), ("Accept-Encoding", "gzip, deflate"),
                   ("Content-Type", "application/json"),
                   ("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y"),
                   ("X-Forwarded-For", "203.0.113.7")]
ANSWER_HEADERS = [("Content-Type", "application/json; charset=utf-8"),
                  ("Date", "Sun, 22 Nov 2026 10:00:00 GMT"), ("Server", "nginx"),
                  ("Cache-Control", "no-store"), ("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y")]


def pair(body_in: bytes, body_out: bytes, method: str = "POST") -> tuple[Request, Answer]:
    headers = REQUEST_HEADERS if body_in else [h for h in REQUEST_HEADERS
                                               if h[0] != "Content-Type"]
    return (Request(method, "/api/v2/users/12345?expand=orders&page=2", list(headers), body_in,
                    len(body_in)),
            Answer(200, list(ANSWER_HEADERS), body_out, len(body_out)))


def cases() -> list[tuple[str, Policy, Request, Answer]]:
    policy = Policy.build(key=b"benchmark-key-0123456789abcdef!!")
    plain = user({"note": "thanks for the order"})
    email = user({"email": "ada@example.com"})
    secret = user({"password": "Tr0ub4dor&3-horse", "payment": "4111 1111 1111 1111"})
    big = orjson.dumps({"items": [record(i) for i in range(420)]})
    return [
        ("1 KB JSON, no secrets", policy, *pair(plain, plain)),
        ("1 KB JSON, e-mail (proxy.py's)", policy, *pair(email, email)),
        ("1 KB JSON, password + card", policy, *pair(secret, secret)),
        (f"{len(big) // 1024} KiB JSON, no secrets", policy, *pair(big, big)),
        ("GET, no bodies, 1 KB JSON answer", policy, *pair(b"", plain, "GET")),
        ("redaction off", Policy.off(), *pair(plain, plain)),
    ]


def measure(policy: Policy, request: Request, answer: Answer, seconds: float,
            rounds: int = 7) -> float:
    """The best of `rounds` rounds: other processes only ever add time."""
    for _ in range(200):  # warm the caches (names, words, tokens), as a running proxy has
        policy.request(request)
        policy.answer(answer)
    best = float("inf")
    for _ in range(rounds):
        n, started = 0, time.perf_counter()
        deadline = started + seconds / rounds
        while True:
            for _ in range(50):
                policy.request(request)
                policy.answer(answer)
            n += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        best = min(best, (now - started) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per case (default 1)")
    args = parser.parse_args()
    print(f"{'case':40} {'bytes in/out':>14} {'µs per request+response':>24}")
    for name, policy, request, answer in cases():
        us = measure(policy, request, answer, args.seconds)
        changed = policy.request(request) is not request or policy.answer(answer) is not answer
        sizes = f"{len(request.body)}/{len(answer.body)}"
        print(f"{name:40} {sizes:>14} {us:>20.1f} µs{'  (redacted)' if changed else ''}")


if __name__ == "__main__":
    main()
