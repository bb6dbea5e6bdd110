"""Test helper: the whole pipeline (proxy, subscriber, comparer, API) in one event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from comparer import Comparer, ReportsApi, open_store
from proxy import Proxy, Publisher
from shadow.bus import connect, keys_for
from shadow.protection import Protection
from shadow.sealing import Keyring, SecretKey
from shadow.settings import Settings
from subscriber import Subscriber

TEST_KEYRING = Keyring(SecretKey.generate())


class Pipeline:
    """`protection`: what the proxy and the subscriber apply, by default what `shadow up`
    applies for these settings (with a test key)."""

    def __init__(self, settings: Settings, protection: Protection | None = None) -> None:
        assert settings.redis is not None
        protection = protection or Protection.from_settings(settings, TEST_KEYRING)
        self.settings = settings
        self.keys = keys_for(settings)  # its shards, hash-tagged on a Redis Cluster
        self.redis = connect(settings.redis, settings.redis_timeout_s)
        self.publisher = Publisher(self.redis, self.keys, max_queue=settings.max_queue,
                                   max_queue_bytes=settings.max_queue_bytes,
                                   batch=settings.publish_batch, maxlen=settings.stream_maxlen,
                                   wait_replicas=settings.publish_wait_replicas)
        self.proxy = Proxy(settings, self.publisher, protection=protection)
        self.subscriber = Subscriber(settings, self.redis, keys=self.keys, protection=protection)
        self.store = open_store(settings.store)
        self.comparer = Comparer(settings, self.redis, self.store, keys=self.keys)
        self.api = ReportsApi(settings, self.store, self.redis, keys=self.keys)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    async def start(self) -> Pipeline:
        await self.store.open()
        await self.publisher.start()
        await self.proxy.start()
        await self.subscriber.start()
        await self.comparer.start()
        await self.api.start()
        return self

    async def stop(self) -> None:
        """Each step bounded: a stop that hangs fails the test and names the step."""
        for name, step in (("proxy", self.proxy.stop), ("publisher", self.publisher.stop),
                           ("subscriber", self.subscriber.stop), ("comparer", self.comparer.stop),
                           ("api", self.api.stop), ("store", self.store.close),
                           ("redis", self.redis.aclose)):
            try:
                await asyncio.wait_for(step(), 20)
            except TimeoutError:
                raise AssertionError(f"Pipeline.stop: {name} did not stop within 20 s") from None

    async def __aenter__(self) -> Pipeline:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def summary(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.api_url + "/api/summary") as r:
            assert r.status == 200
            return await r.json()  # type: ignore[no-any-return]
