"""The comparer's watch and its webhook notifications (--notify-url): the async shell around
shadow/notify.py.

`Notifier` is handed each batch of recorded comparisons (`recorded`, synchronous and cheap: a
dictionary lookup per mismatch), and every `interval_s` (30 s) it reads what only the store
and Redis know: the verdict per route (the `shadow_route_ready` gauge, from the rollups as
/api/verdict computes it with its defaults and default window), how far behind each consumer
group is, each stream's use of its safety limits, and the class book (classes marked fixed
in the meantime).

Sending never holds the comparer back: each URL has a bounded queue and one task that posts
to it, retrying with backoff; a full queue drops the notice (counted in
shadow_notifications_total{result="dropped"}). A webhook URL is a secret (a Slack URL holds
its token): logs show its scheme and host only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from comparer.store import Store, default_verdict_window
from shadow import metrics, notify
from shadow.aio import cancel_and_wait, raise_if_cancelling
from shadow.bus import stream_health
from shadow.drain import parse_id
from shadow.keys import Keys
from shadow.model import MISMATCH, Comparison, Exchange
from shadow.notify import ClassBook, Notice
from shadow.settings import Settings
from shadow.stats import verdict

log = logging.getLogger("shadow.notify")

INTERVAL_S = 30.0
MAX_QUEUE = 100  # notices waiting per URL
TRIES = 4  # per notice and URL: the first and three retries, 1 s, 2 s and 4 s apart
FIRST_RETRY_S = 1.0
TIMEOUT_S = 10.0  # per try
_WARN_EVERY_S = 60.0


class Destination:
    """One webhook URL: a bounded queue of request bodies and the task that posts them."""

    def __init__(self, url: str, *, max_queue: int = MAX_QUEUE, tries: int = TRIES,
                 first_retry_s: float = FIRST_RETRY_S, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.shown = notify.endpoint(url)
        self.tries = tries
        self.first_retry_s = first_retry_s
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._next_warning = 0.0

    def offer(self, body: bytes) -> bool:
        """Queue a body; False (counted, never waiting) when the queue is full."""
        try:
            self.queue.put_nowait(body)
            return True
        except asyncio.QueueFull:
            metrics.NOTIFICATIONS.labels("dropped").inc()
            self._warn("queue full (%d notices waiting): a notice was dropped",
                       self.queue.maxsize)
            return False

    def start(self, session: aiohttp.ClientSession) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(session),
                                             name=f"shadow-notify-{self.shown}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self, session: aiohttp.ClientSession) -> None:
        while True:
            raise_if_cancelling()
            body = await self.queue.get()
            try:
                await self.deliver(session, body)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: this notice is lost, the next ones are not
                metrics.NOTIFICATIONS.labels("failed").inc()
                log.exception("notification to %s failed", self.shown)

    async def deliver(self, session: aiohttp.ClientSession, body: bytes) -> bool:
        """POST one body, retried with backoff on a network error, a timeout, 408, 429 or 5xx;
        any other answer but 2xx fails at once. Counted sent or failed."""
        why = ""
        for attempt in range(self.tries):
            if attempt:
                metrics.NOTIFICATION_RETRIES.inc()
                await asyncio.sleep(self.first_retry_s * 2 ** (attempt - 1))
            try:
                async with session.post(
                        self.url, data=body, allow_redirects=False,
                        headers={"Content-Type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                why = type(e).__name__  # its text may quote the URL, which is a secret
                continue
            if 200 <= status < 300:
                metrics.NOTIFICATIONS.labels("sent").inc()
                return True
            why = f"HTTP {status}"
            if status not in (408, 429) and status < 500:
                break  # the receiver refuses it: trying again would not help
        metrics.NOTIFICATIONS.labels("failed").inc()
        self._warn("a notice could not be delivered (%s); check --notify-url and the receiver",
                   why)
        return False

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._next_warning:  # one warning a minute per URL at most
            self._next_warning = now + _WARN_EVERY_S
            log.warning("notifications to %s: " + message, self.shown, *args)


class Notifier:
    """Started and stopped by the comparer, before and after its loop."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, store: Store, keys: Keys, *,
                 interval_s: float = INTERVAL_S, debounce_s: float = notify.DEBOUNCE_S) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.keys = keys
        self.interval_s = interval_s
        self.verdict_options: dict[str, Any] = {}  # shadow.stats.verdict's gates (its defaults)
        self.format = settings.notify_format
        self.behind_s = settings.notify_behind_s
        self.destinations = [Destination(url) for url in notify.parse_urls(settings.notify_url)]
        self.book = ClassBook()
        self.debounce = notify.Debounce(debounce_s)
        self.routes: notify.Changes[tuple[str, str]] = notify.Changes(debounce_s)
        self.behind: notify.Changes[tuple[str, str]] = notify.Changes(debounce_s, default=False)
        self.known_routes: set[tuple[str, str]] = set()
        self.ticks = 0  # watch passes done
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_warning = 0.0

    async def start(self) -> None:
        """Read the class book (a class is new only if the store does not know it), then
        watch; with --notify-url, start sending."""
        if self._task is not None:
            return
        await self.refresh_classes()
        for stream in self.keys.event_streams:
            metrics.STREAM_MAX_LENGTH.labels(stream).set(self.settings.stream_maxlen)
            metrics.STREAM_MAX_BYTES.labels(stream).set(self.settings.stream_max_bytes)
            metrics.STREAM_MAX_AGE.labels(stream).set(self.settings.stream_max_age_s)
        if self.destinations:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            for d in self.destinations:
                d.start(self._session)
            log.info("notifications go to %s (%s format)",
                     ", ".join(d.shown for d in self.destinations), self.format)
        self._task = asyncio.create_task(self._run(), name="shadow-notifier-watch")

    async def stop(self) -> None:
        """Idempotent. Notices still queued are not sent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for d in self.destinations:
            await d.stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------ from the comparer's batches

    def recorded(self, new: Iterable[tuple[Exchange, Comparison]]) -> None:
        """Comparisons just recorded (never re-deliveries): the classes they open or reopen.
        Never raises, never waits."""
        try:
            for x, c in new:
                if c.outcome != MISMATCH or not c.signature:
                    continue
                event = self.book.seen(c.signature)
                if event is None:
                    continue
                reopened = event == notify.REOPENED_CLASS
                (metrics.CLASSES_REOPENED if reopened else metrics.CLASSES_NEW).inc()
                self.tell_class(notify.class_notice(
                    c.signature, x.method or "?", x.route or "?",
                    dict.fromkeys(d.path for d in c.diff), x.v1.status if x.v1 else None,
                    x.v2.status if x.v2 else None, x.id, x.ts or time.time(), reopened=reopened))
        except Exception:
            self._failed("classes not tracked for this batch")

    def tell_class(self, notice: Notice) -> None:
        """At most one notice per class per debounce window."""
        if not self.destinations:
            return
        if not self.debounce.allow(notice.key, time.monotonic()):
            metrics.NOTIFICATIONS.labels("debounced").inc()
            return
        self.send(notice)

    def send(self, notice: Notice) -> None:
        if not self.destinations:
            return
        body = notify.payload(notice, self.format)
        for d in self.destinations:
            d.offer(body)

    # ------------------------------------------------------------ every interval_s

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()
            await self.run_once()
            await asyncio.sleep(self.interval_s)

    async def run_once(self) -> None:
        """One watch pass; each part fails alone (logged) and is tried again next time."""
        for part in (self.watch_verdict, self.watch_streams, self.refresh_classes):
            try:
                await part()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self._failed(f"{part.__name__}: Redis or the store unavailable "
                             f"({type(e).__name__})", exc_info=False)
            except Exception:
                self._failed(f"{part.__name__} failed")
        self.ticks += 1

    async def watch_verdict(self) -> None:
        """The verdict per route into shadow_route_ready (routes gone from its window: 0), and
        its changes to the webhooks."""
        result = verdict(await self.store.route_evidence((await default_verdict_window(self.store))[0]),
                         **self.verdict_options)
        routes: list[dict[str, Any]] = result["routes"]  # type: ignore[assignment]
        states = {(r["method"], r["route"]): bool(r["ready"]) for r in routes}
        reasons = {(r["method"], r["route"]): str(r["reason"]) for r in routes}
        self.known_routes |= set(states)
        states = {key: states.get(key, False) for key in self.known_routes}
        for (method, route), ready in states.items():
            metrics.ROUTE_READY.labels(method, route).set(int(ready))
        metrics.VERDICT_READY.set(int(bool(result["ready"])))
        now = time.time()
        for (method, route), ready in self.routes.update(states, time.monotonic()):
            reason = reasons.get((method, route), "no exchanges in the verdict's window (it "
                                                  "starts at the latest V2 deploy)")
            self.send(notify.verdict_notice(method, route, ready, reason, now))

    async def watch_streams(self) -> None:
        """Each stream's use of its limits into the gauges; consumer groups falling more than
        --notify-behind-s behind (or catching up) to the webhooks."""
        behind: dict[tuple[str, str], bool] = {}
        seconds: dict[tuple[str, str], float] = {}
        seconds_now, micros = await self.redis.time()  # type: ignore[misc]
        now_ms = int(seconds_now) * 1000 + int(micros) // 1000
        for stream in self.keys.event_streams:
            health = await stream_health(self.redis, stream)
            for group, g in health["groups"].items():
                seconds[(stream, group)] = g["behind_s"]
                behind[(stream, group)] = g["behind_s"] > self.behind_s
            first: Any = await self.redis.xrange(stream, count=1)
            oldest_ms = parse_id(first[0][0])[0] if first else now_ms
            metrics.STREAM_OLDEST_AGE.labels(stream).set(max(0.0, (now_ms - oldest_ms) / 1000))
            try:
                memory = await self.redis.memory_usage(stream, samples=5)
            except ResponseError:  # a Redis or proxy without MEMORY
                memory = None
            metrics.STREAM_MEMORY.labels(stream).set(memory or 0)
        now = time.time()
        for (stream, group), is_behind in self.behind.update(behind, time.monotonic()):
            self.send(notify.behind_notice(stream, group, seconds[(stream, group)], self.behind_s,
                                           now, behind=is_behind))

    async def refresh_classes(self) -> None:
        """Merge the store's class book (classes marked fixed since); a class marked fixed here
        that another comparer saw again is told as reopened."""
        token = self.book.begin_refresh()
        rows = [(c["signature"], c["status"], bool(c.get("reopened")))
                for c in await self.store.classes()]
        for signature in self.book.refresh(token, rows):
            metrics.CLASSES_REOPENED.inc()
            found = next((c for c in await self.store.classes(signature=signature)), None)
            if found is not None:
                self.tell_class(notify.class_notice(
                    signature, found["method"], found["route"],
                    [p["path"] for p in found["paths"]], None, None,
                    (found["examples"] or ["-"])[-1], found["last_seen"] or time.time(),
                    reopened=True))

    def _failed(self, what: str, *, exc_info: bool = True) -> None:
        now = time.monotonic()
        if now >= self._next_warning:  # one warning a minute at most
            self._next_warning = now + _WARN_EVERY_S
            log.warning("comparer watch: %s; tried again in %.0f s", what, self.interval_s,
                        exc_info=exc_info)
