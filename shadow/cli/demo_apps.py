"""The demo's sample services: V1 and a V2 "rewrite" with deliberate differences.

What V2 changed, on purpose (the demo's report must show each one):
  GET /users/{id}     field `name` renamed to `full_name`
  GET /products/{id}  `id` is now a string ("42" instead of 42)
  GET /orders/{id}    archived orders (id divisible by 10) answer 404 instead of 200
  GET /categories     the Cache-Control header is missing
  GET /status         `server_time` is a timestamp: differs on every call (noise)
  GET /search         unchanged
  POST /orders        never replayed (side effects), recorded as skipped
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from aiohttp import web

CHANGES = [
    ("/users/{id}", "$.name", "renamed field: name -> full_name"),
    ("/products/{id}", "$.id", "id became a string"),
    ("/orders/{id}", "status", "archived orders: 404 instead of 200"),
    ("/categories", "cache-control", "missing Cache-Control header"),
    ("/status", "$.server_time", "nondeterministic timestamp"),
]

_CACHE = {"Cache-Control": "public, max-age=60"}


def _user(n: int) -> dict[str, object]:
    return {"id": n, "name": f"User {n}", "email": f"user{n}@example.com",
            "plan": ["free", "pro", "team"][n % 3], "created_at": "2024-03-01T12:00:00Z"}


def _product(n: int) -> dict[str, object]:
    return {"id": n, "sku": f"SKU-{n:05d}", "price": round(4.99 + n * 0.5, 2), "currency": "EUR",
            "tags": ["demo", "sale"] if n % 2 else ["demo"]}


def _order(n: int) -> dict[str, object]:
    return {"id": n, "user_id": n % 97, "state": "archived" if n % 10 == 0 else "open",
            "lines": [{"sku": f"SKU-{(n * 7 + i) % 1000:05d}", "qty": i + 1} for i in range(n % 3 + 1)]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def build(version: int) -> web.Application:
    """The sample service: version 1 (the old system) or 2 (the rewrite)."""
    v2 = version == 2

    async def user(request: web.Request) -> web.Response:
        body = _user(int(request.match_info["id"]))
        if v2:
            body["full_name"] = body.pop("name")
        return web.json_response(body, headers=_CACHE)

    async def product(request: web.Request) -> web.Response:
        body = _product(int(request.match_info["id"]))
        if v2:
            body["id"] = str(body["id"])
        return web.json_response(body, headers=_CACHE)

    async def order(request: web.Request) -> web.Response:
        body = _order(int(request.match_info["id"]))
        if v2 and body["state"] == "archived":
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(body)

    async def categories(request: web.Request) -> web.Response:
        body = {"categories": ["books", "games", "garden", "music"]}
        return web.json_response(body, headers={} if v2 else _CACHE)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "server_time": _now()})

    async def search(request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        hits = [{"sku": f"SKU-{i:05d}", "score": round(1 / (i + 1), 4)} for i in range(len(q) % 5)]
        return web.json_response({"q": q, "hits": hits})

    async def create_order(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": int(time.time() * 1000) % 100000, "state": "open"},
                                 status=201)

    app = web.Application()
    app.router.add_get("/users/{id:\\d+}", user)
    app.router.add_get("/products/{id:\\d+}", product)
    app.router.add_get("/orders/{id:\\d+}", order)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/categories", categories)
    app.router.add_get("/status", status)
    app.router.add_get("/search", search)
    return app


def traffic(n: int, seed: int = 7) -> list[tuple[str, str, bytes | None]]:
    """A reproducible mix of demo requests: (method, path, body)."""
    rng = random.Random(seed)
    words = ["lamp", "chair", "desk", "mug", "pen", "book", "plant", "sofa"]
    out: list[tuple[str, str, bytes | None]] = []
    for _ in range(n):
        x = rng.random()
        if x < 0.25:
            out.append(("GET", f"/users/{rng.randint(1, 500)}", None))
        elif x < 0.45:
            out.append(("GET", f"/products/{rng.randint(1, 300)}", None))
        elif x < 0.65:
            out.append(("GET", f"/orders/{rng.randint(1, 2000)}", None))
        elif x < 0.75:
            out.append(("GET", "/categories", None))
        elif x < 0.82:
            out.append(("GET", "/status", None))
        elif x < 0.95:
            out.append(("GET", f"/search?q={rng.choice(words)}", None))
        else:
            out.append(("POST", "/orders", b'{"sku": "SKU-00001", "qty": 1}'))
    return out
