"""Fail-open event publishing: a bounded queue drained into Redis in pipelined batches.

`offer()` never awaits: the client path only ever does a `put_nowait`. When the
queue is full, or Redis is slow or down, events are dropped and counted, and
the count reaches Redis (stats hash) with the next successful batch. No metrics
call can raise into `offer()` or stop the publishing task (`metrics.contained`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shadow import metrics
from shadow.aio import Backoff, cancel_and_wait, raise_if_cancelling
from shadow.codec import encode_event
from shadow.drain import backstop_maxlen
from shadow.keys import DROPPED_EVENTS, EVENT_FIELD, Keys
from shadow.model import Event

log = logging.getLogger("shadow.proxy.publisher")

# Each event is its own stream entry (field `e`); the batch travels as one command with
# one argument: the events framed by 4-byte big-endian lengths. One big argument costs the
# client a fraction of what as many small ones do (redis-py packs each argument in Python).
XADD_BATCH = f"""
local maxlen, blob = ARGV[1], ARGV[3]
local pos, n = 1, 0
while pos <= #blob do
    local size = struct.unpack('>I4', blob, pos)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', '{EVENT_FIELD.decode()}',
               string.sub(blob, pos + 4, pos + 3 + size))
    pos = pos + 4 + size
    n = n + 1
end
if tonumber(ARGV[2]) > 0 then
    redis.call('HINCRBY', KEYS[2], '{DROPPED_EVENTS}', ARGV[2])
end
return n
"""
_frame_size = struct.Struct(">I").pack
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


class Publisher:
    """Events are encoded as they are offered (their data is still in the CPU's caches, and
    the batch becomes one join) and queued as frames; a background task sends the batches."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, max_queue: int = 10_000,
                 max_queue_bytes: int = 128 * 1024 * 1024, batch: int = 256,
                 maxlen: int = 1_000_000, linger_s: float = 0.005) -> None:
        self.redis = redis
        self.keys = keys
        self.batch = batch
        self.linger_s = linger_s
        self.maxlen = maxlen
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._frames: list[bytes] = []  # size, event, size, event, ...: bounded by offer()
        self._ready = asyncio.Event()
        self.published = 0
        self.dropped = 0
        self._unreported_drops = 0
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._healthy = True
        self._script = redis.register_script(XADD_BATCH)

    @property
    def queued(self) -> int:
        return len(self._frames) // 2

    def offer(self, event: Event) -> bool:
        """Queue an event for Redis without waiting. False (and counted) when full."""
        frames = self._frames
        if len(frames) >= 2 * self.max_queue or self._queued_bytes >= self.max_queue_bytes:
            self._drop(1, "queue_full")
            return False
        try:
            data = encode_event(event)
        except Exception:  # a bug must cost an event, never the client's request
            self._drop(1, "error")
            log.exception("publisher: event %s could not be encoded; dropped", event.id)
            return False
        frames.append(_frame_size(len(data)))
        frames.append(data)
        self._queued_bytes += len(data)
        if not self._ready.is_set():
            self._ready.set()
        return True

    def drop(self, reason: str) -> None:
        """An event the proxy could not offer (e.g. it could not be redacted): counted."""
        self._drop(1, reason)

    def _drop(self, n: int, reason: str) -> None:
        self.dropped += n
        self._unreported_drops += n
        metrics.contained(lambda: metrics.EVENTS_DROPPED.labels(reason).inc(n))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shadow-publisher")

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Flush what is queued within the deadline, then stop. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drained(), flush_timeout_s)
        await cancel_and_wait(task)
        left = self.queued
        self._frames.clear()
        self._queued_bytes = 0
        if left:
            self._drop(left, "shutdown")
            log.warning("shutdown: %d events could not be published in %.1f s", left, flush_timeout_s)

    async def _drained(self) -> None:
        while self._frames or self._sending:  # queued, or a batch still on its way to Redis
            await asyncio.sleep(0.01)

    def _take(self) -> list[bytes]:
        """Up to `batch` events' frames, oldest first."""
        frames = self._frames
        if len(frames) <= 2 * self.batch:
            self._frames, taken = [], frames
        else:
            taken = frames[:2 * self.batch]
            del frames[:2 * self.batch]
        self._queued_bytes -= sum(map(len, taken)) - 4 * (len(taken) // 2)
        return taken

    async def _run(self) -> None:
        backoff = Backoff(_BACKOFF_MIN_S, _BACKOFF_MAX_S)
        while True:
            raise_if_cancelling()
            if not self._frames:
                self._ready.clear()
                await self._ready.wait()
            if self.queued < self.batch and self.linger_s:
                # Let a batch gather, also right after a publish: far fewer, bigger commands
                # (each Redis call costs far more than the events in it) for a few ms of delay.
                await asyncio.sleep(self.linger_s)
            frames = self._take()
            n = len(frames) // 2
            metrics.contained(metrics.PUBLISH_QUEUE.set, self.queued)
            self._sending = True
            try:
                await self._publish(frames)
            except (TimeoutError, RedisError, OSError) as e:
                self._drop(n, "redis")
                if self._healthy:
                    log.warning("Redis unavailable (%s): dropping events, clients unaffected", e)
                    self._healthy = False
                await backoff.wait()
                continue
            except Exception:  # a bug must not stop publishing for good
                self._drop(n, "error")
                log.exception("publisher: unexpected error, %d events dropped", n)
                continue
            finally:
                self._sending = False
            if not self._healthy:
                log.info("Redis is back: publishing resumed")
                self._healthy = True
            backoff.reset()
            self.published += n
            metrics.contained(metrics.EVENTS_PUBLISHED.inc, n)

    async def _publish(self, frames: list[bytes]) -> None:
        """One EVALSHA per batch: one argument to pack, one round trip, one reply."""
        drops = self._unreported_drops
        await self._script(keys=[self.keys.v1, self.keys.stats],
                           args=[backstop_maxlen(self.maxlen), drops, b"".join(frames)])
        self._unreported_drops -= drops


class Discard:
    """A publisher that publishes nothing (`--publish false`): same interface, no Redis."""

    published = 0
    dropped = 0

    def offer(self, event: Event) -> bool:
        return False

    def drop(self, reason: str) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self, flush_timeout_s: float = 0.0) -> None:
        return None
