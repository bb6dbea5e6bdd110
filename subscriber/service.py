"""Replay loop: read requests (group "replayers"), call V2, publish candidates, then ack.

Each entry is handled by its own task, at most `replay_concurrency` at once; its
candidate is published and the entry acknowledged in one MULTI, so a crash in
between leaves the entry pending (to be replayed), never lost.

V2 down means late comparisons, not lost ones: while the circuit breaker is open no
new entry is read (the backlog waits in the stream, as the group's lag), requests
already read wait at the gate in arrival order, and when the cool-down ends the first
of them is V2's probe. A failed probe goes back in line; a successful one closes the
breaker and everything goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shadow import metrics
from shadow.aio import Backoff, cancel_and_wait, raise_if_cancelling
from shadow.bus import (
    Entry,
    GroupReader,
    StreamDrain,
    default_consumer_name,
    ensure_layout,
    keys_for,
)
from shadow.codec import decode_event, encode_event, peek_type
from shadow.drain import backstop_maxlen
from shadow.errors import EventError, ShadowError
from shadow.keys import EVENT_FIELD, REPLAYERS, Keys
from shadow.model import Answer, CandidateEvent, Request, RequestEvent
from shadow.protection import Protection, restore
from shadow.settings import Settings
from subscriber.client import ReplayClient
from subscriber.globalrate import GlobalRate
from subscriber.policy import CircuitBreaker, Policy, TokenBucket, ordering_key

log = logging.getLogger("shadow.subscriber")


class Gate:
    """Where replays wait while the V2 breaker is open, in arrival order (their entries stay
    pending in Redis). When the cool-down ends, the first in line goes to V2 as the probe;
    when the breaker closes, every waiter goes on."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.waiting: deque[asyncio.Future[bool]] = deque()
        self.changed = asyncio.Event()  # the breaker's state may have changed
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def enter(self, touch: Callable[[], Awaitable[None]], touch_every_s: float) -> bool:
        """Wait until this request may go to V2; True when it goes as the probe. While it
        waits, `touch` runs every `touch_every_s` (keeps its entry from looking abandoned)."""
        while True:
            if self.breaker.allow(time.monotonic()):
                return self.breaker.probing
            if self._closed:  # stopping: the entry stays pending for the next start
                raise asyncio.CancelledError
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            self._arm()
            metrics.REPLAYS_WAITING.inc()
            try:
                while not waiter.done():
                    await asyncio.wait({waiter}, timeout=touch_every_s)
                    if not waiter.done():
                        await touch()
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result():
                    self.breaker.abandon_probe()  # granted the probe, never sent it
                    self._arm()
                waiter.cancel()
                raise
            finally:
                metrics.REPLAYS_WAITING.dec()
                with contextlib.suppress(ValueError):
                    self.waiting.remove(waiter)
            if waiter.result():
                return True

    def settled(self) -> None:
        """After each breaker.record(): release everyone if closed, else plan the probe."""
        closed = self.breaker.state == "closed"
        metrics.V2_BREAKER_OPEN.set(0 if closed else 1)
        if closed:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            while self.waiting:
                waiter = self.waiting.popleft()
                if not waiter.done():
                    waiter.set_result(False)
        else:
            self._arm()
        self.changed.set()

    def close(self) -> None:
        """Stopping: every waiter, and any that comes later, gives up (entries stay pending)."""
        self._closed = True
        for waiter in self.waiting:
            waiter.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None or not self.waiting:
            return
        delay = self.breaker.until_probe(time.monotonic())
        if delay is not None:  # None: closed (waiters released) or a probe is out
            self._timer = asyncio.get_running_loop().call_later(delay, self._grant)

    def _grant(self) -> None:
        self._timer = None
        while self.waiting and self.waiting[0].done():
            self.waiting.popleft()
        if not self.waiting:
            return  # nobody in hand: the reader takes the probe from the stream
        if self.breaker.allow(time.monotonic()):
            self.waiting.popleft().set_result(self.breaker.probing)
        else:
            self._arm()


class Subscriber:
    def __init__(self, settings: Settings, redis: aioredis.Redis, *, keys: Keys | None = None,
                 protection: Protection | None = None) -> None:
        settings.require("v2")
        assert settings.v2 is not None
        self.settings = settings
        self.redis = redis
        # opens the requests' sealed credentials and redacts V2's answers with the proxy's
        # policy and key (None: answers published as received; only tests do that)
        self.protection = protection
        self.keys = keys or keys_for(settings)
        self.v2 = settings.v2.rstrip("/")
        self.v1_secondary = settings.v1_secondary.rstrip("/") if settings.v1_secondary else None
        self.policy = Policy.from_settings(settings)
        # rate limits: --max-replay-rate is this subscriber's own, --max-replay-rate-global is
        # shared by all (a token bucket in Redis); the breaker is this subscriber's own
        self.rate = TokenBucket(settings.max_replay_rate) if settings.max_replay_rate else None
        self.global_rate = GlobalRate(redis, self.keys.rate, settings.max_replay_rate_global) \
            if settings.max_replay_rate_global else None
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self.gate = Gate(self.breaker)
        self.reader = GroupReader(
            redis, self.keys.v1_streams, REPLAYERS,
            settings.consumer or default_consumer_name("subscriber"), keys=self.keys,
            count=min(100, settings.replay_concurrency), block_ms=200,
            claim_idle_s=settings.claim_idle_s, max_deliveries=settings.max_deliveries,
            maxlen=settings.stream_maxlen)
        self.drain = StreamDrain.from_settings(redis, self.keys, settings)
        self._slots = asyncio.Semaphore(settings.replay_concurrency)
        # by (stream, entry id): two shards' streams may hold the same id
        self._inflight: dict[tuple[str, bytes], asyncio.Task[None]] = {}
        self.client = ReplayClient(settings, self.policy,
                                   digest_key=protection.digest_key if protection else None)
        self.peak_inflight = 0
        self._order_locks: dict[str, asyncio.Lock] = {}
        self._order_users: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.replayed = 0
        targets = {"V2": self.v2}
        if self.v1_secondary:
            targets["V1'"] = self.v1_secondary
        writes = self.policy.write_targets(targets)
        if writes:
            read_only = [f"{name} gets only GET, HEAD and OPTIONS" for name in targets
                         if name not in writes]
            log.warning("--allow-side-effects: POST/PUT/PATCH/DELETE requests WILL be sent to "
                        "%s; make sure %s cannot charge, mail or write anything real%s",
                        " and ".join(f"{name} ({targets[name]})" for name in writes),
                        "it" if len(writes) == 1 else "none of them",
                        f" ({'; '.join(read_only)})" if read_only else "")

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.client.start()
        await ensure_layout(self.redis, self.keys)  # another shard count: a ConfigError
        await self.reader.ensure_groups()
        self._task = asyncio.create_task(self._run(), name="shadow-subscriber")
        await self.drain.start()

    async def stop(self, deadline_s: float = 5.0) -> None:
        """Stop reading, let in-flight replays finish within the deadline; the rest stays
        pending for this or another consumer. Idempotent."""
        task, self._task = self._task, None
        await self.drain.stop()
        await cancel_and_wait(task)
        self.gate.close()  # V2 is down: waiting entries stay pending for the next start
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=deadline_s)
            for t in list(self._inflight.values()):
                t.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.client.stop()

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            raise_if_cancelling()
            try:
                await self._slots.acquire()
                self._slots.release()
                await self._while_breaker_open()
                entries = await self.reader.read()
                backoff.reset()
            except (RedisError, OSError) as e:
                log.warning("Redis unavailable (%s); retrying in %.1f s", e, backoff.delay)
                await backoff.wait()
                continue
            skip: list[Entry] = []
            for entry in entries:
                if (entry.stream, entry.id) in self._inflight:
                    continue  # reclaimed while we are still working on it
                kind = peek_type(entry.data) if entry.data is not None else "trimmed"
                if kind in ("response", "candidate", "trimmed"):
                    skip.append(entry)  # responses are the comparer's business
                    continue
                await self._slots.acquire()
                t = asyncio.create_task(self._handle(entry), name=f"replay-{entry.id.decode()}")
                self._inflight[entry.stream, entry.id] = t
                self.peak_inflight = max(self.peak_inflight, len(self._inflight))
                t.add_done_callback(functools.partial(self._done, (entry.stream, entry.id)))
            if skip:
                with contextlib.suppress(RedisError, OSError):
                    await self.reader.ack(skip)

    async def _while_breaker_open(self) -> None:
        """While the V2 breaker is open, take no new entries: they wait in the stream (the
        group's lag). Go on when it closes, or when a probe is due and no request already
        read is waiting to be it (then the probe is the next entry in the stream)."""
        while self.breaker.state != "closed":
            delay = self.breaker.until_probe(time.monotonic())
            if delay == 0 and not self.gate.waiting:
                return
            self.gate.changed.clear()
            timeout = delay if delay is not None and not self.gate.waiting else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.changed.wait(), timeout)

    def _done(self, key: tuple[str, bytes], _task: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)
        self._slots.release()

    async def _handle(self, entry: Entry) -> None:
        assert entry.data is not None
        try:
            event = decode_event(entry.data)
        except EventError as e:
            metrics.POISON_EVENTS.labels(REPLAYERS).inc()
            log.warning("dead-lettering entry %s: %s", entry.id, e)
            with contextlib.suppress(RedisError, OSError):
                await self.reader.dead_letter(entry, str(e))
            return
        if not isinstance(event, RequestEvent):
            with contextlib.suppress(RedisError, OSError):
                await self.reader.ack([entry])
            return
        key = ordering_key(event.request, self.settings.ordered_by) \
            if self.settings.ordered_by else None
        if key is None:
            answer, secondary = await self._ask(event, entry)
        else:
            # requests sharing the key reach V2 one at a time, in arrival order (asyncio.Lock
            # is FIFO, and tasks reach it in the order they were read from the stream)
            lock = self._order_locks.setdefault(key, asyncio.Lock())
            self._order_users[key] = self._order_users.get(key, 0) + 1
            try:
                async with lock:
                    answer, secondary = await self._ask(event, entry)
            finally:
                self._order_users[key] -= 1
                if not self._order_users[key]:
                    del self._order_users[key], self._order_locks[key]
        candidate = self._protected(event, CandidateEvent(id=event.id, ts=time.time(),
                                                          answer=answer, secondary=secondary))
        try:
            await asyncio.shield(self._publish(entry, candidate))
        except (RedisError, OSError) as e:
            log.warning("request %s: candidate not published (%s); it stays pending",
                        event.request_id, e)
            return
        self.replayed += 1

    def _protected(self, event: RequestEvent, candidate: CandidateEvent) -> CandidateEvent:
        """V2's (and V1')'s answers redacted like V1's, before they leave this process."""
        p = self.protection
        if p is None:
            return candidate
        mode = p.body_mode(event.request.url)
        return CandidateEvent(
            id=candidate.id, ts=candidate.ts, answer=p.answer(candidate.answer, mode),
            secondary=p.answer(candidate.secondary, mode) if candidate.secondary else None)

    def _original(self, event: RequestEvent) -> Request | None:
        """The request as V1 got it (its sealed parts opened, in memory only), or None when
        they cannot be opened: a key that is not the proxy's, or a tampered entry."""
        try:
            return restore(event, self.protection.sealer if self.protection else None)
        except (ShadowError, ValueError) as e:
            metrics.REPLAYS.labels("skipped").inc()
            log.error("request %s: its sealed credentials cannot be opened (%s): not replayed. "
                      "The subscriber needs the proxy's key (--secret-key-file or "
                      "SHADOW_SECRET_KEY; previous keys in --previous-secret-key-files)",
                      event.request_id, type(e).__name__)
            return None

    async def _ask(self, event: RequestEvent, entry: Entry) -> tuple[Answer, Answer | None]:
        original = self._original(event)
        if original is None:
            return Answer(status=None, skipped="sealed_unreadable", target=self.v2), None
        answer = await self.replay(event, entry, original)
        secondary = None
        if self.v1_secondary and answer.skipped is None and \
                self.policy.sends(event.request.method, "V1'"):
            secondary = await self.client.call(self.v1_secondary, original,
                                               event.request_id, "V1'")
        return answer, secondary

    async def _publish(self, entry: Entry, candidate: CandidateEvent) -> None:
        """The candidate goes to the shard the request came from (its v2 stream shares the
        request stream's slot): added and acknowledged in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.owner(entry.stream).v2, {EVENT_FIELD: encode_event(candidate)},
                      maxlen=backstop_maxlen(self.settings.stream_maxlen), approximate=True)
            pipe.xack(entry.stream, REPLAYERS, entry.id)
            await pipe.execute()

    async def replay(self, event: RequestEvent, entry: Entry | None = None,
                     original: Request | None = None) -> Answer:
        """Send the request (`original`: as V1 got it; default the event's own) to V2; any
        failure becomes data on the answer. While the breaker is open it waits (see Gate); a
        failed probe waits again, never recorded."""
        reason = self.policy.decision(event.request, event.id)
        if reason is None and self.rate is not None and not self.rate.take(time.monotonic()):
            reason = "rate_limited"
        if reason is None and self.global_rate is not None and not await self._global_take():
            reason = "rate_limited"
        if reason is not None:
            metrics.REPLAYS.labels("skipped").inc()
            return Answer(status=None, skipped=reason, target=self.v2)
        while True:
            probe = await self.gate.enter(functools.partial(self._touch, entry),
                                          self.settings.claim_idle_s / 3)
            answer = await self.client.call(self.v2, original or event.request,
                                            event.request_id)
            was = self.breaker.state
            self.breaker.record(answer.error is None, time.monotonic())
            if self.breaker.state != was:
                log.warning("V2 circuit breaker %s -> %s (%s)%s", was, self.breaker.state,
                            answer.error or "V2 answered",
                            "; replays wait, new entries stay in the stream until a probe "
                            "succeeds" if self.breaker.state == "open" else "")
            self.gate.settled()
            if answer.error is None or not probe:
                return answer
            log.info("request %s was V2's probe and failed (%s): it waits for the next one",
                     event.request_id, answer.error)

    async def _global_take(self) -> bool:
        """A token of --max-replay-rate-global; none while Redis cannot be asked (the candidate
        could not be published either: the entry stays pending and is replayed later)."""
        assert self.global_rate is not None
        try:
            return await self.global_rate.take()
        except (RedisError, OSError) as e:
            log.warning("--max-replay-rate-global: Redis unavailable (%s)", e)
            return False

    async def _touch(self, entry: Entry | None) -> None:
        """Reset the idle time of an entry waiting at the gate (XCLAIM JUSTID: its delivery
        count stays), so no consumer takes it over as abandoned."""
        if entry is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await self.redis.xclaim(entry.stream, REPLAYERS, self.reader.consumer,
                                    min_idle_time=0, message_ids=[entry.id], justid=True)
