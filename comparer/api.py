"""The reports API: JSON over HTTP, served by the comparer."""

from __future__ import annotations

import hmac
import logging
import socket
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from comparer.store import Store
from shadow import metrics
from shadow.codec import exchange_for_display
from shadow.keys import COMPARERS, Keys
from shadow.settings import Settings, check_access, parse_hostport

log = logging.getLogger("shadow.api")

STORE_KEY = web.AppKey("store", Store)
REDIS_KEY = web.AppKey("redis", aioredis.Redis)
KEYS_KEY = web.AppKey("keys", Keys)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _auth_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return json_response({"error": "unauthorized: send 'Authorization: Bearer <token>' "
                                           "(the value of SHADOW_API_TOKEN)"}, 401)
        return await handler(request)

    return auth


async def summary(request: web.Request) -> web.Response:
    data = await request.app[STORE_KEY].summary()
    keys = request.app[KEYS_KEY]
    try:
        dropped = await request.app[REDIS_KEY].hget(keys.stats, "dropped_events")
        data["dropped_events"] = int(dropped or 0)
    except (RedisError, OSError):
        data["dropped_events"] = None
        data["warnings"] = ["Redis is unreachable: dropped_events unknown"]
    return json_response(data)


async def exchange(request: web.Request) -> web.Response:
    key = request.match_info["id"]
    x = await request.app[STORE_KEY].get(key)
    if x is None:
        return json_response({"error": f"no exchange with id or request id {key!r}"}, 404)
    return json_response(exchange_for_display(x))


async def metrics_endpoint(request: web.Request) -> web.Response:
    r, keys = request.app[REDIS_KEY], request.app[KEYS_KEY]
    try:
        for stream in (keys.v1, keys.v2):
            metrics.STREAM_LENGTH.labels(stream).set(await r.xlen(stream))
            for group in await r.xinfo_groups(stream):
                name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                metrics.STREAM_PENDING.labels(stream, name).set(group["pending"])
                if group.get("lag") is not None:
                    metrics.STREAM_LAG.labels(stream, name).set(group["lag"])
    except (RedisError, OSError):
        pass
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def index(request: web.Request) -> web.Response:
    return web.Response(text="shadow reports API: /api/summary, /api/exchanges/{id}, /metrics\n")


def build_app(settings: Settings, store: Store, redis: aioredis.Redis, keys: Keys) -> web.Application:
    middlewares = [_auth_middleware(settings.api_token)] if settings.api_token else []
    app = web.Application(middlewares=middlewares)
    app[STORE_KEY] = store
    app[REDIS_KEY] = redis
    app[KEYS_KEY] = keys
    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary)
    app.router.add_get("/api/exchanges/{id}", exchange)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


class ReportsApi:
    """`async with ReportsApi(...) as api:` serves on `api.port`."""

    def __init__(self, settings: Settings, store: Store, redis: aioredis.Redis, *,
                 keys: Keys | None = None, sock: socket.socket | None = None) -> None:
        check_access(settings)
        self.settings = settings
        self.app = build_app(settings, store, redis, keys or Keys(settings.stream_prefix))
        self._sock = sock
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if self._sock is not None:
            site = web.SockSite(self._runner, self._sock)
        else:
            host, port = parse_hostport(self.settings.api, "--api")
            site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ReportsApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["COMPARERS", "ReportsApi", "build_app"]
