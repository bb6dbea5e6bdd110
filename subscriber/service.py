"""Replay loop: read requests (group "replayers"), call V2, publish candidates, then ack.

Each entry is handled by its own task, at most `replay_concurrency` at once; its
candidate is published and the entry acknowledged in one MULTI, so a crash in
between leaves the entry pending (to be replayed), never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shadow import metrics
from shadow.aio import cancel_and_wait
from shadow.bus import Entry, GroupReader, default_consumer_name
from shadow.codec import decode_event, encode_event, peek_type
from shadow.errors import EventError
from shadow.keys import EVENT_FIELD, REPLAYERS, Keys
from shadow.model import Answer, CandidateEvent, RequestEvent
from shadow.settings import Settings
from subscriber.client import ReplayClient
from subscriber.policy import CircuitBreaker, Policy, TokenBucket, ordering_key

log = logging.getLogger("shadow.subscriber")



class Subscriber:
    def __init__(self, settings: Settings, redis: aioredis.Redis, *, keys: Keys | None = None) -> None:
        settings.require("v2")
        assert settings.v2 is not None
        self.settings = settings
        self.redis = redis
        self.keys = keys or Keys(settings.stream_prefix)
        self.v2 = settings.v2.rstrip("/")
        self.v1_secondary = settings.v1_secondary.rstrip("/") if settings.v1_secondary else None
        self.policy = Policy.from_settings(settings)
        self.rate = TokenBucket(settings.max_replay_rate) if settings.max_replay_rate else None
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.reader = GroupReader(
            redis, [self.keys.v1], REPLAYERS,
            settings.consumer or default_consumer_name("subscriber"),
            count=min(100, settings.replay_concurrency), block_ms=200,
            claim_idle_s=settings.claim_idle_s, dead_stream=self.keys.dead,
            max_deliveries=settings.max_deliveries, maxlen=settings.stream_maxlen,
            stats_key=self.keys.stats)
        self._slots = asyncio.Semaphore(settings.replay_concurrency)
        self._inflight: dict[bytes, asyncio.Task[None]] = {}
        self.client = ReplayClient(settings, self.policy)
        self.peak_inflight = 0
        self._order_locks: dict[str, asyncio.Lock] = {}
        self._order_users: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.replayed = 0
        if settings.allow_side_effects:
            log.warning("--allow-side-effects: POST/PUT/PATCH/DELETE requests WILL be sent to V2 "
                        "(%s); make sure V2 cannot charge, mail or write anything real", self.v2)

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.client.start()
        await self.reader.ensure_groups()
        self._task = asyncio.create_task(self._run(), name="shadow-subscriber")

    async def stop(self, deadline_s: float = 5.0) -> None:
        """Stop reading, let in-flight replays finish within the deadline; the rest stays
        pending for this or another consumer. Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=deadline_s)
            for t in list(self._inflight.values()):
                t.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.client.stop()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._slots.acquire()
                self._slots.release()
                entries = await self.reader.read()
                backoff = 0.05
            except (RedisError, OSError) as e:
                log.warning("Redis unavailable (%s); retrying in %.1f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            skip: list[Entry] = []
            for entry in entries:
                if entry.id in self._inflight:
                    continue  # reclaimed while we are still working on it
                kind = peek_type(entry.data) if entry.data is not None else "trimmed"
                if kind in ("response", "candidate", "trimmed"):
                    skip.append(entry)  # responses are the comparer's business
                    continue
                await self._slots.acquire()
                t = asyncio.create_task(self._handle(entry), name=f"replay-{entry.id.decode()}")
                self._inflight[entry.id] = t
                self.peak_inflight = max(self.peak_inflight, len(self._inflight))
                t.add_done_callback(functools.partial(self._done, entry.id))
            if skip:
                with contextlib.suppress(RedisError, OSError):
                    await self.reader.ack(skip)

    def _done(self, entry_id: bytes, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(entry_id, None)
        self._slots.release()

    async def _handle(self, entry: Entry) -> None:
        assert entry.data is not None
        try:
            event = decode_event(entry.data)
        except EventError as e:
            metrics.POISON_EVENTS.labels(REPLAYERS).inc()
            log.warning("dead-lettering entry %s: %s", entry.id, e)
            with contextlib.suppress(RedisError, OSError):
                await self.reader.dead_letter(self.keys.dead, entry, str(e),
                                              self.settings.stream_maxlen)
            return
        if not isinstance(event, RequestEvent):
            with contextlib.suppress(RedisError, OSError):
                await self.reader.ack([entry])
            return
        key = ordering_key(event.request, self.settings.ordered_by) \
            if self.settings.ordered_by else None
        if key is None:
            answer, secondary = await self._ask(event)
        else:
            # requests sharing the key reach V2 one at a time, in arrival order (asyncio.Lock
            # is FIFO, and tasks reach it in the order they were read from the stream)
            lock = self._order_locks.setdefault(key, asyncio.Lock())
            self._order_users[key] = self._order_users.get(key, 0) + 1
            try:
                async with lock:
                    answer, secondary = await self._ask(event)
            finally:
                self._order_users[key] -= 1
                if not self._order_users[key]:
                    del self._order_users[key], self._order_locks[key]
        candidate = CandidateEvent(id=event.id, ts=time.time(), answer=answer, secondary=secondary)
        try:
            await asyncio.shield(self._publish(entry, candidate))
        except (RedisError, OSError) as e:
            log.warning("request %s: candidate not published (%s); it stays pending",
                        event.request_id, e)
            return
        self.replayed += 1

    async def _ask(self, event: RequestEvent) -> tuple[Answer, Answer | None]:
        answer = await self.replay(event)
        secondary = None
        if self.v1_secondary and answer.skipped is None:
            secondary = await self.client.call(self.v1_secondary, event.request,
                                               event.request_id, "V1'")
        return answer, secondary

    async def _publish(self, entry: Entry, candidate: CandidateEvent) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.v2, {EVENT_FIELD: encode_event(candidate)},
                      maxlen=self.settings.stream_maxlen, approximate=True)
            pipe.xack(entry.stream, REPLAYERS, entry.id)
            await pipe.execute()

    async def replay(self, event: RequestEvent) -> Answer:
        """Send the request to V2; any failure becomes data on the answer."""
        reason = self.policy.decision(event.request, event.request_id)
        now = time.monotonic()
        if reason is None and self.rate is not None and not self.rate.take(now):
            reason = "rate_limited"
        if reason is None and not self.breaker.allow(now):
            reason = "breaker_open"
        if reason is not None:
            metrics.REPLAYS.labels("skipped").inc()
            return Answer(status=None, skipped=reason, target=self.v2)
        answer = await self.client.call(self.v2, event.request, event.request_id)
        was = self.breaker.state
        self.breaker.record(answer.error is None, time.monotonic())
        if self.breaker.state != was:
            log.warning("V2 circuit breaker %s -> %s (%s)", was, self.breaker.state,
                        answer.error or "V2 answered")
        return answer


