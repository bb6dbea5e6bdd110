"""The live firehose, both ends: the comparer publishes, the reports API fans out.

A live view, not a record: items go over Redis pub/sub only while somebody listens,
and a client that reads too slowly loses the oldest items (counted and told) instead of
growing a buffer. Nothing here can slow down or fail a comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shadow import codec, firehose
from shadow.aio import Backoff, cancel_and_wait, raise_if_cancelling
from shadow.bus import listeners, publish
from shadow.model import Comparison, Exchange
from shadow.redact import Policy

log = logging.getLogger("shadow.firehose")

_LISTENERS_CHECK_S = 2.0
_BACKOFF_MAX_S = 2.0


class FirehosePublisher:
    """Comparer side: publish one redacted item per newly recorded comparison."""

    def __init__(self, redis: aioredis.Redis, channel: str, redaction: Policy) -> None:
        self.redis = redis
        self.channel = channel
        self.redaction = redaction
        self._listeners = 0
        self._next_check = 0.0

    async def publish(self, done: Iterable[tuple[Exchange, Comparison]]) -> int:
        """Best effort; returns the items sent (0 when nobody listens or Redis failed)."""
        done = list(done)
        if not done:
            return 0
        try:
            if not await self._listened():
                return 0
            await publish(self.redis, self.channel,  # one pipeline (a cluster's too)
                          [codec.dumps(firehose.item(x, c, self.redaction)) for x, c in done])
        except (RedisError, OSError) as e:
            log.debug("firehose: not published (%s)", e)
            return 0
        return len(done)

    async def _listened(self) -> bool:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _LISTENERS_CHECK_S
            self._listeners = await listeners(self.redis, self.channel)  # every cluster node
        return self._listeners > 0


class Listener:
    """One SSE client's bounded queue of raw items (JSON bytes), and what it wants of them."""

    def __init__(self, capacity: int,
                 wanted: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.wanted = wanted  # None: everything
        self.items: deque[bytes] = deque(maxlen=capacity)
        self.dropped = 0
        self.closed = False
        self._ready = asyncio.Event()

    def put(self, raw: bytes) -> None:
        if len(self.items) == self.items.maxlen:
            self.dropped += 1  # the oldest goes: a slow reader never grows memory
        self.items.append(raw)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self, timeout_s: float) -> list[bytes]:
        """What arrived, waiting up to `timeout_s` for something; [] on timeout or close."""
        if not self.items and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        self._ready.clear()
        out = list(self.items)
        self.items.clear()
        return out


class FirehoseHub:
    """API side: one Redis subscription per process, only while clients are connected."""

    def __init__(self, redis: aioredis.Redis, channel: str, *, per_client: int = 1000,
                 max_clients: int = 64) -> None:
        self.redis = redis
        self.channel = channel
        self.per_client = per_client  # items queued per client: memory is bounded by both
        self.max_clients = max_clients
        self.listeners: set[Listener] = set()
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        return len(self.listeners) >= self.max_clients

    @contextlib.asynccontextmanager
    async def listen(self, wanted: Callable[[dict[str, Any]], bool] | None = None
                     ) -> AsyncIterator[Listener]:
        listener = Listener(self.per_client, wanted)
        self.listeners.add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="shadow-firehose")
        try:
            yield listener
        finally:
            self.listeners.discard(listener)

    async def close(self) -> None:
        """Ends every client's stream (server shutdown) and the subscription."""
        for listener in list(self.listeners):
            listener.close()
        self.listeners.clear()
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _fan_out(self, raw: bytes) -> None:
        """To every listener that wants it; parsed at most once, however many filter."""
        parsed: dict[str, Any] | None = None
        for listener in self.listeners:
            if listener.wanted is not None:
                if parsed is None:
                    try:
                        parsed = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        parsed = {}  # not one of ours: no filter matches it
                if not isinstance(parsed, dict) or not listener.wanted(parsed):
                    continue
            listener.put(raw)

    async def _run(self) -> None:
        backoff = Backoff(0.1, _BACKOFF_MAX_S)
        while self.listeners:
            raise_if_cancelling()
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                backoff.reset()
                while self.listeners:
                    raise_if_cancelling()
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._fan_out(msg["data"])
            except (RedisError, OSError) as e:
                log.warning("firehose: Redis unavailable (%s); retrying in %.1f s", e, backoff.delay)
                await backoff.wait()
            finally:
                self.subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
