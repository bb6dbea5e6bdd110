"""The comparer's consumer loop: store the parts, compare what is complete, then acknowledge."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from comparer.firehose import FirehosePublisher
from comparer.store import Store
from shadow import metrics
from shadow.aio import cancel_and_wait
from shadow.bus import Entry, GroupReader, default_consumer_name
from shadow.codec import decode_event
from shadow.compare import compare, replay_delay_ms
from shadow.errors import EventError, ShadowError
from shadow.keys import COMPARERS, Keys
from shadow.model import Comparison, Event, Exchange
from shadow.noise import V1Memory
from shadow.redact import Redaction
from shadow.rules import load_rules_file, route_of
from shadow.settings import Settings

log = logging.getLogger("shadow.comparer")

_SWEEP_EVERY_S = 1.0


class Comparer:
    """Consumer group "comparers" on both streams. The only writer of the store."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, store: Store, *,
                 keys: Keys | None = None, batch: int = 500) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.keys = keys or Keys(settings.stream_prefix)
        self.reader = GroupReader(
            redis, [self.keys.v1, self.keys.v2], COMPARERS,
            settings.consumer or default_consumer_name("comparer"),
            count=batch, block_ms=200, claim_idle_s=settings.claim_idle_s,
            dead_stream=self.keys.dead, max_deliveries=settings.max_deliveries,
            maxlen=settings.stream_maxlen, stats_key=self.keys.stats)
        self.rules = load_rules_file(settings.rules)
        self._warn_expired()
        self.completed = 0
        self.firehose = FirehosePublisher(
            redis, self.keys.firehose,
            Redaction.from_settings(settings.redact_headers, settings.redact_fields))
        self.memory = V1Memory()
        self._known_noise: dict[tuple[str, str], list[str]] = {}
        self._next_noise_refresh = 0.0
        self.noise_refresh_s = 5.0
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0

    def _warn_expired(self) -> None:
        for rule in self.rules.expired(datetime.date.today()):
            log.warning("rule %s (%s line %d, owner %s) expired on %s and no longer applies: "
                        "renew or remove it", rule.id, self.rules.source, rule.line,
                        rule.owner or "-", rule.expires)

    def reload_rules(self) -> bool:
        """Read --rules again (SIGHUP): the next batch is compared under the new rules. A bad
        file changes nothing: the rules in force stay, and the error says what to fix."""
        try:
            rules = load_rules_file(self.settings.rules)
        except ShadowError as e:
            log.error("rules not reloaded, the previous ones stay in force: %s", e)
            return False
        self.rules = rules
        log.info("rules reloaded from %s: %d rules", self.settings.rules, len(rules.rules))
        self._warn_expired()
        return True

    async def start(self) -> None:
        if self._task is None:
            await self.reader.ensure_groups()
            self._task = asyncio.create_task(self._run(), name="shadow-comparer")

    async def stop(self) -> None:
        """Stop reading; a batch being stored finishes first (shielded). Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self.run_once()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                log.warning("Redis unavailable (%s); retrying in %.1f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("comparer batch failed; it stays pending and will be retried")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def run_once(self) -> int:
        """Read one batch, store it, compare, acknowledge. Returns entries handled."""
        await self._sweep()
        entries = await self.reader.read()
        if not entries:
            return 0
        # Store-then-acknowledge must not be cut in half by a shutdown.
        await asyncio.shield(self._handle(entries))
        return len(entries)

    async def _handle(self, entries: list[Entry]) -> None:
        events: list[Event] = []
        good: list[Entry] = []
        for entry in entries:
            if entry.data is None:
                good.append(entry)  # trimmed away before we read it: nothing to store
                continue
            try:
                events.append(decode_event(entry.data))
                good.append(entry)
            except EventError as e:
                metrics.POISON_EVENTS.labels(COMPARERS).inc()
                log.warning("dead-lettering entry %s of %s: %s", entry.id, entry.stream, e)
                await self.reader.dead_letter(self.keys.dead, entry, str(e),
                                              self.settings.stream_maxlen)
        rules = self.rules
        ready = await self.store.apply(
            events, lambda r: route_of(rules, r.method, r.url, r.headers))
        today = datetime.date.today()
        for event in events:
            metrics.EVENTS_INGESTED.labels(event.type).inc()
        compared: list[tuple[Exchange, Comparison]] = []
        repeats: dict[tuple[str, str], int] = {}
        changed: dict[tuple[str, str, str], int] = {}
        known = await self._learned_noise()
        for x in ready:
            assert x.v1 is not None and x.v2 is not None
            route_key = (x.method or "?", x.route or "?")
            if x.request is not None:
                paths = self.memory.observe(x.request, x.v1)
                if paths is not None:
                    repeats[route_key] = repeats.get(route_key, 0) + 1
                    for path in paths:
                        changed[(*route_key, path)] = changed.get((*route_key, path), 0) + 1
            started = time.perf_counter()
            try:
                result = compare(x.request, x.v1, x.v2, x.route,
                                 rules.active(x.method, x.route, today), x.v1_secondary,
                                 known.get(route_key, ()))
            except Exception as e:  # one odd exchange must not stop the others
                log.exception("exchange %s: comparison failed", x.id)
                result = Comparison("mismatch", [], None, [f"compare_error:{type(e).__name__}"])
            result.replay_delay_ms = replay_delay_ms(x.v1_ts, x.v2_ts, x.v2)
            if result.replay_delay_ms is not None and \
                    result.replay_delay_ms > self.settings.stale_after_s * 1000:
                result.flags.append("stale")
            metrics.COMPARE_DURATION.observe(time.perf_counter() - started)
            compared.append((x, result))
        recorded = set(await self.store.complete([(x.id, r) for x, r in compared]))
        if repeats:
            await self.store.add_suspected(repeats, changed)
        self.completed += len(recorded)
        new = [(x, r) for x, r in compared if x.id in recorded]  # not re-deliveries
        for _, r in new:
            metrics.COMPARISONS.labels(r.outcome).inc()
        await self.reader.ack(good)
        await self.firehose.publish(new)

    async def _learned_noise(self) -> dict[tuple[str, str], list[str]]:
        """With --auto-ignore-noise: per route, the paths where V1 changed in at least half of
        10+ repeats of identical requests (refreshed every few seconds)."""
        if not self.settings.auto_ignore_noise:
            return {}
        now = time.monotonic()
        if now >= self._next_noise_refresh:
            self._next_noise_refresh = now + self.noise_refresh_s
            summary = await self.store.summary()
            self._known_noise = {
                (r["method"], r["route"]): [n["path"] for n in r["suspected_noise"]
                                            if n["observed"] >= 10 and (n["rate"] or 0) >= 0.5]
                for r in summary["routes"]}
        return self._known_noise

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        s = self.settings
        expired = await self.store.expire(time.time() - s.join_timeout_s)
        if expired:
            log.info("%d exchanges got no V2 answer within %.0f s: v1_only", expired,
                     s.join_timeout_s)
        if s.retention_max_age_s is not None or s.retention_max_docs is not None:
            deleted = await self.store.retain(max_age_s=s.retention_max_age_s,
                                              max_docs=s.retention_max_docs)
            if deleted:
                log.info("retention: deleted %d old exchanges", deleted)
