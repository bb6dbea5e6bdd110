"""Shared fixtures: one real embedded Redis per session, real HTTP servers on port 0."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from proxy import Proxy, Publisher
from shadow.bus import connect
from shadow.cli.embedded_redis import EmbeddedRedis
from shadow.keys import Keys
from shadow.serve import start_site
from shadow.settings import Settings, load_settings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_server.url, 5.0)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    """Unique stream names per test: tests share one Redis without seeing each other."""
    return Keys(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def settings_factory(redis_server: EmbeddedRedis, keys: Keys, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis": redis_server.url, "stream_prefix": keys.prefix,
            "store": f"sqlite:///{tmp_path / 'shadow.db'}", "listen": "127.0.0.1:0",
            "api": "127.0.0.1:0", "claim_idle_s": 60.0,
            "keep": "all",  # tests look at single exchanges; the keep policy's own set "sampled"
        }
        values.update(overrides)
        return load_settings(values, env={}, config_file=None)

    return make


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start a real aiohttp app on an ephemeral loopback port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        port = await start_site(runner, "127.0.0.1:0")
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def wait_for(predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = 30.0,
                   what: str = "condition") -> None:
    """Poll until true (a plain or an async predicate); a hang becomes a clear failure
    instead of a stuck suite."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def reports_api(settings_factory: Callable[..., Settings], redis: aioredis.Redis,
                      keys: Keys) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start a real reports API (own SQLite store, the session's Redis): `await
    reports_api(api_token="x")` returns the started ReportsApi; all stopped after the test."""
    from comparer import ReportsApi, open_store

    started: list[tuple[Any, Any]] = []

    async def start(**overrides: Any) -> Any:
        settings = settings_factory(**overrides)
        store = open_store(settings.store)
        await store.open()
        api = ReportsApi(settings, store, redis, keys=keys)
        started.append((api, store))
        await api.start()
        return api

    yield start
    for api, store in started:
        await api.stop()
        await store.close()


@pytest.fixture
async def proxy_for(settings_factory, redis_server, keys) -> AsyncIterator[Callable[..., Any]]:
    """Start a real proxy in front of `v1`, publishing to the real Redis (or to `publisher`)."""
    started: list[tuple[Proxy, Any, Any]] = []

    async def start(v1: str, publisher: Any = None, **overrides: Any) -> Proxy:
        settings = settings_factory(v1=v1, **overrides)
        redis = connect(redis_server.url, 5.0)
        if publisher is None:
            publisher = Publisher(redis, keys)
            await publisher.start()
        proxy = Proxy(settings, publisher)
        await proxy.start()
        started.append((proxy, publisher, redis))
        return proxy

    yield start
    for proxy, publisher, redis in started:
        await proxy.stop()
        await publisher.stop()
        await redis.aclose()
