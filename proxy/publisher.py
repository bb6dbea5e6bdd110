"""Fail-open event publishing: a bounded queue drained into Redis in pipelined batches.

`offer()` never awaits: the client path only ever does a `put_nowait`. When the
queue is full, or Redis is slow or down, events are dropped and counted, and
the count reaches Redis (stats hash) with the next successful batch. No metrics
call can raise into `offer()` or stop the publishing task (`metrics.contained`).

With sharded streams, each event is queued for its exchange's shard, and a batch is one
script call per shard (each in its shard's slot), sent at once. Before its first batch the
publisher checks the shard count recorded in Redis (bus.ensure_layout): a proxy started with
another count drops its events (counted, reason `shard_count`) and says what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from shadow import metrics
from shadow.aio import Backoff, cancel_and_wait, raise_if_cancelling
from shadow.bus import ensure_layout, recorded_shards, wait_replicas
from shadow.codec import encode_event
from shadow.drain import backstop_maxlen
from shadow.errors import ConfigError
from shadow.keys import DROPPED_EVENTS, EVENT_FIELD, UNCONFIRMED_EVENTS, Keys, shard_of
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
if ARGV[4] and tonumber(ARGV[4]) > 0 then
    redis.call('HINCRBY', KEYS[2], '{UNCONFIRMED_EVENTS}', ARGV[4])
end
return n
"""
_frame_size = struct.Struct(">I").pack
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


class Publisher:
    """Events are encoded as they are offered (their data is still in the CPU's caches, and
    the batch becomes one join) and queued as frames, per shard; a background task sends the
    batches. `wait_replicas`: a batch counts as published only once that many replicas have
    it (WAIT); fewer within the timeout, and its events are counted as unconfirmed."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, max_queue: int = 10_000,
                 max_queue_bytes: int = 128 * 1024 * 1024, batch: int = 256,
                 maxlen: int = 1_000_000, linger_s: float = 0.005, wait_replicas: int = 0,
                 wait_timeout_s: float = 1.0,
                 on_published: Callable[[list[bytes], bool], None] | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.batch = batch
        self.linger_s = linger_s
        self.maxlen = maxlen
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout_s * 1000))
        self._queued_bytes = 0
        self._queued = 0
        self._shards = keys.shards
        # per shard: size, event, size, event, ...: bounded by offer()
        self._frames: list[list[bytes]] = [[] for _ in range(keys.shards)]
        self._ready = asyncio.Event()
        self.published = 0
        self.dropped = 0
        self.unconfirmed = 0  # published, but fewer than wait_replicas replicas confirmed them
        self._unreported_drops = 0
        self._unreported_unconfirmed = 0
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._healthy = True
        self._layout_checked = False
        self._layout_error: str | None = None
        self._next_unconfirmed_log = 0.0
        self._script = redis.register_script(XADD_BATCH)
        # audits (and tests): each batch's encoded events once Redis took them, and whether
        # the replicas confirmed them (always True without wait_replicas)
        self.on_published = on_published

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch on its way: every event offered so far is counted as
        published, unconfirmed or dropped."""
        return not self._queued and not self._sending

    def offer(self, event: Event) -> bool:
        """Queue an event for Redis without waiting. False (and counted) when full."""
        if self._queued >= self.max_queue or self._queued_bytes >= self.max_queue_bytes:
            self._drop(1, "queue_full")
            return False
        try:
            data = encode_event(event)
            frames = self._frames[shard_of(event.id, self._shards) if self._shards > 1 else 0]
        except Exception:  # a bug must cost an event, never the client's request
            self._drop(1, "error")
            log.exception("publisher: event %s could not be encoded; dropped", event.id)
            return False
        frames.append(_frame_size(len(data)))
        frames.append(data)
        self._queued += 1
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
        self._frames = [[] for _ in range(self._shards)]
        self._queued = self._queued_bytes = 0
        if left:
            self._drop(left, "shutdown")
            log.warning("shutdown: %d events could not be published in %.1f s", left, flush_timeout_s)

    async def _drained(self) -> None:
        while self._queued or self._sending:  # queued, or a batch still on its way to Redis
            await asyncio.sleep(0.01)

    def _take(self) -> list[tuple[int, list[bytes]]]:
        """Per shard with events queued, up to `batch` events' frames, oldest first."""
        taken = []
        for shard, frames in enumerate(self._frames):
            if not frames:
                continue
            if len(frames) <= 2 * self.batch:
                self._frames[shard], part = [], frames
            else:
                part = frames[:2 * self.batch]
                del frames[:2 * self.batch]
            n = len(part) // 2
            self._queued -= n
            self._queued_bytes -= sum(map(len, part)) - 4 * n
            taken.append((shard, part))
        return taken

    async def _run(self) -> None:
        backoff = Backoff(_BACKOFF_MIN_S, _BACKOFF_MAX_S)
        while True:
            raise_if_cancelling()
            if not self._queued:
                self._ready.clear()
                await self._ready.wait()
            if self.queued < self.batch and self.linger_s:
                # Let a batch gather, also right after a publish: far fewer, bigger commands
                # (each Redis call costs far more than the events in it) for a few ms of delay.
                await asyncio.sleep(self.linger_s)
            batches = self._take()
            n = sum(len(frames) // 2 for _, frames in batches)
            metrics.contained(metrics.PUBLISH_QUEUE.set, self.queued)
            self._sending = True
            try:
                sent = await self._send(batches)
            except Exception:  # a bug must not stop publishing for good
                self._drop(n, "error")
                log.exception("publisher: unexpected error, %d events dropped", n)
                continue
            finally:
                self._sending = False
            self.published += sent
            metrics.contained(metrics.EVENTS_PUBLISHED.inc, sent)
            if sent < n:
                await backoff.wait()
                continue
            if not self._healthy:
                log.info("Redis is back: publishing resumed")
                self._healthy = True
            backoff.reset()

    async def _send(self, batches: list[tuple[int, list[bytes]]]) -> int:
        """One script call per shard, all at once; the events of a call that fails are
        dropped and counted. Returns the events published."""
        n = sum(len(frames) // 2 for _, frames in batches)
        if not await self._layout_ok():
            self._drop(n, "shard_count")
            return 0
        # counts reported with the first shard's batch
        drops, unconfirmed = self._unreported_drops, self._unreported_unconfirmed
        results = await asyncio.gather(
            *(self._publish(shard, frames, *((drops, unconfirmed) if i == 0 else (0, 0)))
              for i, (shard, frames) in enumerate(batches)), return_exceptions=True)
        sent = 0
        for (_, frames), result in zip(batches, results, strict=True):
            count = len(frames) // 2
            if isinstance(result, BaseException):
                if not isinstance(result, (TimeoutError, RedisError, OSError)):
                    raise result
                self._drop(count, "redis")
                if self._healthy:
                    log.warning("Redis unavailable (%s): dropping events, clients unaffected",
                                result)
                    self._healthy = False
                continue
            sent += count
        if batches and not isinstance(results[0], BaseException):
            self._unreported_drops -= drops
            self._unreported_unconfirmed -= unconfirmed
        return sent

    async def _layout_ok(self) -> bool:
        """The shard count checked against Redis's record before the first batch (recorded
        if there is none, or if the streams are drained). After a refusal it is only compared
        again (never recorded by a running proxy): publishing resumes once the services have
        been restarted with this count."""
        if self._layout_checked:
            return True
        if self._layout_error is None:
            try:
                await ensure_layout(self.redis, self.keys)
            except ConfigError as e:
                self._layout_error = str(e)
                log.error("publisher: events dropped: %s", e)
                return False
        elif await recorded_shards(self.redis, self.keys) != self.keys.shards:
            return False
        self._layout_checked = True
        self._layout_error = None
        return True

    async def _publish(self, shard: int, frames: list[bytes], drops: int,
                       unconfirmed: int = 0) -> None:
        """One EVALSHA per shard's batch: one argument to pack, one round trip, one reply
        (with wait_replicas, the WAIT follows on the same connection)."""
        keys = self.keys.shard(shard)
        args: list[EncodableT] = [backstop_maxlen(self.maxlen), drops, b"".join(frames),
                                  unconfirmed]
        if not self.wait_replicas:
            await self._script(keys=[keys.v1, keys.stats], args=args)
            self._published(frames, True)
            return
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                # (a cluster pipeline refuses .evalsha(); the raw command is routed by its keys)
                pipe.execute_command("EVALSHA", self._script.sha, 2, keys.v1, keys.stats, *args)
                await wait_replicas(self.redis, pipe, keys.v1, self.wait_replicas,
                                    self.wait_timeout_ms)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            if isinstance(replies[0], NoScriptError) and attempt == 1:
                await self.redis.script_load(XADD_BATCH)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            confirmed = int(replies[1]) >= self.wait_replicas
            if not confirmed:
                self._unconfirmed(len(frames) // 2, int(replies[1]))
            self._published(frames, confirmed)
            return

    def _published(self, frames: list[bytes], confirmed: bool) -> None:
        if self.on_published is not None:
            try:
                self.on_published(frames[1::2], confirmed)
            except Exception:  # an observer's bug must not count the batch as failed
                log.exception("publisher: on_published failed")

    def _unconfirmed(self, n: int, replicas: int) -> None:
        """Published, but fewer replicas than --publish-wait-replicas have them: a failover
        now could lose them. Counted, and said once a minute at most."""
        self.unconfirmed += n
        self._unreported_unconfirmed += n  # to the stats hash with the next batch
        now = time.monotonic()
        if now >= self._next_unconfirmed_log:
            self._next_unconfirmed_log = now + 60.0
            log.warning("%d events published but confirmed by %d of %d replicas within %d ms "
                        "(%d so far): is a replica down or lagging?", n, replicas,
                        self.wait_replicas, self.wait_timeout_ms, self.unconfirmed)


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
