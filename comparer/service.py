"""The comparer's consumer loop: store the parts, compare what is complete, then acknowledge."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from comparer.firehose import FirehosePublisher
from comparer.housekeeping import Housekeeper, Limits, StreamHorizon
from comparer.notifier import Notifier
from comparer.store import Store
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
from shadow.codec import decode_event
from shadow.compare import Judgement, judge, refused
from shadow.deploys import describe, detected, version_of
from shadow.errors import EventError, ShadowError
from shadow.keep import KeepPolicy
from shadow.keys import COMPARERS, Keys
from shadow.model import CandidateEvent, Comparison, Event, Exchange, RequestEvent, RouteKey
from shadow.noise import V1Memory, repeat_counts
from shadow.redact import TOKEN, Policy
from shadow.rules import OTHER_ROUTE, capped_route, load_rules_file, route_of
from shadow.segments import NONE, OTHER, capped, parse_segment_by, segment_of
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
        self.keys = keys or keys_for(settings)
        self.reader = GroupReader(
            redis, self.keys.event_streams, COMPARERS,
            settings.consumer or default_consumer_name("comparer"), keys=self.keys,
            count=batch, block_ms=200, claim_idle_s=settings.claim_idle_s,
            max_deliveries=settings.max_deliveries, maxlen=settings.stream_maxlen)
        self.drain = StreamDrain.from_settings(redis, self.keys, settings)
        self.rules = load_rules_file(settings.rules)
        self.keep = KeepPolicy.from_settings(settings)  # which documents stay as evidence
        self._warn_expired()
        self.completed = 0
        self.firehose = FirehosePublisher(
            redis, self.keys.firehose,
            Policy.from_settings(settings, None))  # no key: secrets left are masked
        self.memory = V1Memory()
        self._known_noise: dict[RouteKey, list[str]] = {}
        self._next_noise_refresh = 0.0
        self.noise_refresh_s = 5.0
        self._task: asyncio.Task[None] | None = None
        self._batch: asyncio.Task[None] | None = None  # the batch being stored, shielded
        self._next_sweep = 0.0
        # compaction and retention: a task of their own, off the ingest path
        # (and the tombstones no part can still come for: the streams' horizon)
        self.housekeeper = Housekeeper(
            store, Limits.from_settings(settings),
            horizon=StreamHorizon(redis, self.keys, margin_s=settings.tombstone_margin_s))
        self._routes: set[str] = set()  # routes the store counts apart (--max-routes)
        self._overflow_logged = False
        # --segment-by: each request's segment; the ones the store counts apart (--max-segments)
        self.segment_by = parse_segment_by(settings.segment_by) if settings.segment_by else None
        self._segments: set[str] = set()
        self._segments_overflow_logged = False
        self._warn_redacted_segments()
        self._versions: set[str] = set()  # V2 versions with a deploy marker (--v2-version-header)
        # new and reopened classes, the verdict per route, lag: gauges and --notify-url
        self.notifier = Notifier(settings, redis, store, self.keys)

    def _warn_expired(self) -> None:
        for rule in self.rules.expired(datetime.date.today()):
            log.warning("rule %s (%s line %d, owner %s) expired on %s and no longer applies: "
                        "renew or remove it", rule.id, self.rules.source, rule.line,
                        rule.owner or "-", rule.expires)

    def _warn_redacted_segments(self) -> None:
        """Values under a secret-looking name reach the comparer redacted: as tokens (one per
        value: segments work), else masked or dropped (every exchange in one segment)."""
        s, by = self.settings, self.segment_by
        if by is None or not s.redaction or s.redact_action.strip().lower() == TOKEN:
            return
        if Policy.from_settings(s, None).is_secret(by.name):
            log.warning("--segment-by %s: the proxy redacts %r with --redact-action %s, so every "
                        "exchange falls in one segment: use --redact-action token (one token per "
                        "value) or --redact-allow %s", by, by.name, s.redact_action, by.name)

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
            await ensure_layout(self.redis, self.keys)  # another shard count: a ConfigError
            await self.reader.ensure_groups()
            await self.notifier.start()  # before any batch: it reads the classes known so far
            self._task = asyncio.create_task(self._run(), name="shadow-comparer")
            await self.drain.start()
            await self.housekeeper.start()

    async def stop(self, batch_deadline_s: float = 30.0) -> None:
        """Stop reading; a batch being stored finishes first (shielded: awaited here, so
        nothing uses the store after stop() returns; past the deadline it is cancelled and
        its entries stay pending). Idempotent."""
        task, self._task = self._task, None
        await self.housekeeper.stop()
        await self.drain.stop()
        await cancel_and_wait(task)
        batch, self._batch = self._batch, None
        if batch is not None and not batch.done():
            await asyncio.wait([batch], timeout=batch_deadline_s)
            await cancel_and_wait(batch)
        await self.notifier.stop()

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            raise_if_cancelling()
            try:
                await self.run_once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                log.warning("Redis unavailable (%s); retrying in %.1f s", e, backoff.delay)
                await backoff.wait()
            except Exception:
                log.exception("comparer batch failed; it stays pending and will be retried")
                await backoff.wait()

    async def run_once(self) -> int:
        """Read one batch, store it, compare, acknowledge. Returns entries handled."""
        await self._sweep()
        entries = await self.reader.read()
        if not entries:
            return 0
        # Store-then-acknowledge must not be cut in half by a shutdown (stop() awaits it).
        self._batch = asyncio.create_task(self._handle(entries), name="shadow-comparer-batch")
        await asyncio.shield(self._batch)
        return len(entries)

    async def _handle(self, entries: list[Entry]) -> None:
        """Each exchange on its own: one whose judging or storing fails is recorded as
        compare_error (the reason in its flags) and the rest of the batch goes on."""
        decoded: list[tuple[Entry, Event]] = []
        done: list[Entry] = []
        for entry in entries:
            if entry.data is None:
                done.append(entry)  # trimmed away before we read it: nothing to store
                continue
            try:
                decoded.append((entry, decode_event(entry.data)))
            except EventError as e:
                metrics.POISON_EVENTS.labels(COMPARERS).inc()
                log.warning("dead-lettering entry %s of %s: %s", entry.id, entry.stream, e)
                await self.reader.dead_letter(entry, str(e))
        events = [event for _, event in decoded]
        ready, stored = await self._apply(decoded, await self._route_names(events),
                                          await self._segment_names(events))
        done += stored
        await self._detect_deploys(events)
        for event in events:
            metrics.EVENTS_INGESTED.labels(event.type).inc()
        compared = await self._judge_all(ready)
        recorded = await self._complete([(x, j.comparison) for x, j in compared])
        repeats, changed = repeat_counts(((x.method or "?", x.route or "?"), j.v1_changed)
                                         for x, j in compared)
        if repeats:
            await self.store.add_suspected(repeats, changed)
        self.completed += len(recorded)
        new = [(x, recorded[x.id]) for x, _ in compared if x.id in recorded]  # not re-deliveries
        for _, r in new:
            metrics.COMPARISONS.labels(r.outcome).inc()
        self.notifier.recorded(new)  # never waits: notices go to bounded queues
        await self.reader.ack(done)
        try:
            await self.firehose.publish(new)
        except Exception:  # a live view: never worth failing a recorded batch
            log.exception("firehose: %d items not published", len(new))

    async def _route_names(self, events: list[Event]) -> dict[str, str]:
        """Each request's route, by exchange id: --trust-canonical-resource decides whether the
        client's header counts, and past --max-routes known routes (the store keeps them, for
        every replica and restart) new ones count as OTHER_ROUTE."""
        rules, trust = self.rules, self.settings.trust_canonical_resource
        named = {e.id: route_of(rules, e.request.method, e.request.url, e.request.headers,
                                trust_header=trust)
                 for e in events if isinstance(e, RequestEvent)}
        unknown = set(named.values()) - self._routes - {OTHER_ROUTE}
        if unknown:
            self._routes |= await self.store.admit_routes(sorted(unknown),
                                                          self.settings.max_routes)
        admitted = frozenset(self._routes | {OTHER_ROUTE})
        overflowed = sum(1 for e in events if isinstance(e, RequestEvent)
                         and named[e.id] not in admitted)
        if overflowed:
            metrics.ROUTES_OVERFLOWED.inc(overflowed)
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning("%d routes are known (--max-routes %d): requests to new routes now "
                            "count as the route %r. Raise --max-routes, or name routes with "
                            "templates (routes = [...]) in --rules", len(self._routes),
                            self.settings.max_routes, OTHER_ROUTE)
        return {ident: capped_route(route, admitted) for ident, route in named.items()}

    async def _segment_names(self, events: list[Event]) -> dict[str, str]:
        """Each request's segment (--segment-by), by exchange id: past --max-segments known
        segments (the store keeps them, for every replica and restart) new ones count as
        OTHER."""
        if self.segment_by is None:
            return {}
        named = {e.id: segment_of(e.request, self.segment_by)
                 for e in events if isinstance(e, RequestEvent)}
        unknown = set(named.values()) - self._segments - {NONE, OTHER}
        if unknown:
            self._segments |= await self.store.admit_segments(sorted(unknown),
                                                              self.settings.max_segments)
        out = {ident: capped(segment, self._segments) for ident, segment in named.items()}
        if not self._segments_overflow_logged and any(
                out[ident] == OTHER and named[ident] != OTHER for ident in out):
            self._segments_overflow_logged = True
            log.warning("%d segments are known (--max-segments %d): requests of new segments "
                        "now count as the segment %r. Raise --max-segments if they matter",
                        len(self._segments), self.settings.max_segments, OTHER)
        return out

    async def _detect_deploys(self, events: list[Event]) -> None:
        """--v2-version-header: the first V2 answer carrying a version no V2 deploy marker
        names records one, at that answer's time (its id is the version's: every replica
        records the same marker, once)."""
        header = self.settings.v2_version_header
        if not header:
            return
        first: dict[str, float] = {}
        for e in events:
            if isinstance(e, CandidateEvent):
                version = version_of(e.answer.headers, header)
                if version is not None and version not in self._versions:
                    first[version] = min(first.get(version, e.ts), e.ts)
        for version, ts in sorted(first.items(), key=lambda kv: kv[1]):
            if not await self.store.deploys("v2", limit=1, version=version):
                marker = detected(version, ts, header)
                await self.store.add_deploy(marker)
                log.info("%s marked: V2 answered with %s: %s for the first time (the verdict's "
                         "default window starts after it)", describe(marker), header, version)
            self._versions.add(version)

    async def _apply(self, decoded: list[tuple[Entry, Event]], routes: Mapping[str, str],
                     segments: Mapping[str, str] | None = None,
                     ) -> tuple[list[Exchange], list[Entry]]:
        """Store the events' parts: (exchanges now ready to compare, entries stored). When the
        batch fails, each event is stored alone; one the store refuses stays unacknowledged
        (redelivered, then dead-lettered) instead of holding back the others."""
        try:
            return await self.store.apply([e for _, e in decoded], routes, segments), \
                [entry for entry, _ in decoded]
        except Exception as e:
            if len(decoded) <= 1:
                raise
            log.warning("storing %d events together failed (%s: %s): storing them one by one",
                        len(decoded), type(e).__name__, e)
        ready: dict[str, Exchange] = {}
        stored: list[Entry] = []
        refused: list[tuple[Entry, Event, Exception]] = []
        for entry, event in decoded:
            try:
                ready.update((x.id, x) for x in await self.store.apply([event], routes, segments))
                stored.append(entry)
            except Exception as e:
                refused.append((entry, event, e))
        if not stored:
            raise refused[0][2]  # nothing can be stored: the store is down, retry the batch
        for entry, event, error in refused:
            metrics.EVENTS_UNSTORABLE.inc()
            log.error("exchange %s: the store refused its %s event (entry %s: %s: %s); it "
                      "stays unacknowledged and is dead-lettered after %d deliveries", event.id,
                      event.type, entry.id, type(error).__name__, error,
                      self.settings.max_deliveries)
        return [x for x in ready.values() if x.v1 is not None and x.v2 is not None], stored

    async def _judge_all(self, ready: list[Exchange]) -> list[tuple[Exchange, Judgement]]:
        rules, today = self.rules, datetime.date.today()
        known = await self._learned_noise()
        judged: list[tuple[Exchange, Judgement]] = []
        for x in ready:
            started = time.perf_counter()
            j = judge(x, rules, today, stale_after_s=self.settings.stale_after_s,
                      known_noise=known, remember=self.memory.observe)
            metrics.COMPARE_DURATION.observe(time.perf_counter() - started)
            if j.error is not None:
                log.error("exchange %s (request id %s): %s failed; recorded as compare_error",
                          x.id, x.request_id, j.step, exc_info=j.error)
            judged.append((x, j))
        return judged

    async def _complete(self, compared: list[tuple[Exchange, Comparison]],
                        ) -> dict[str, Comparison]:
        """Record the outcomes; what was recorded now, by exchange id. When the
        batch fails, each is recorded alone, and one the store refuses (a value it cannot hold)
        is recorded as compare_error. Only a store that refuses even that fails the batch (it
        is retried)."""
        try:
            ids = set(await self.store.complete([(x.id, r) for x, r in compared], keep=self.keep))
            return {x.id: r for x, r in compared if x.id in ids}
        except Exception as e:
            if not compared:
                raise
            log.warning("recording %d comparisons together failed (%s: %s): recording them one "
                        "by one", len(compared), type(e).__name__, e)
        recorded: dict[str, Comparison] = {}
        for x, r in compared:
            try:
                if await self.store.complete([(x.id, r)], keep=self.keep):
                    recorded[x.id] = r
                continue
            except Exception as e:
                log.exception("exchange %s (request id %s): the store refused its comparison; "
                              "recorded as compare_error", x.id, x.request_id)
                failed = refused(r, "store", e)
            if await self.store.complete([(x.id, failed)], keep=self.keep):
                recorded[x.id] = failed
        return recorded

    async def _learned_noise(self) -> dict[RouteKey, list[str]]:
        """With --auto-ignore-noise: per route, the paths the store suspects of being V1's own
        noise (refreshed every few seconds)."""
        if not self.settings.auto_ignore_noise:
            return {}
        now = time.monotonic()
        if now >= self._next_noise_refresh:
            self._next_noise_refresh = now + self.noise_refresh_s
            self._known_noise = await self.store.suspected()
        return self._known_noise

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        s = self.settings
        expired = await self.store.expire(time.time() - s.join_timeout_s, keep=self.keep)
        if expired:
            log.info("%d exchanges still missed a part after %.0f s (--join-timeout-s): "
                     "v1_only when V2's answer is missing, v1_missing when V1's is", expired,
                     s.join_timeout_s)
