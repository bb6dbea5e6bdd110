"""The Redis bus: connections, consumer-group reading, acknowledging, dead letters, draining.

Delivery is at-least-once: a consumer first re-reads its own pending entries,
takes over entries left idle by consumers that died (XAUTOCLAIM), then reads new
ones; an entry is acknowledged only after its effect is durable elsewhere. Entries
every group has processed are deleted by the drain (StreamDrain; what goes is
decided by shadow.drain).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from shadow import metrics
from shadow.aio import Backoff, cancel_and_wait, raise_if_cancelling
from shadow.drain import GroupPosition, Limits, StreamId, format_id, parse_id, plan
from shadow.keys import EVENT_FIELD, TRIMMED_UNPROCESSED, TRIMMED_UNREAD, Keys
from shadow.settings import Settings

log = logging.getLogger("shadow.bus")


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """One client (with its pool) per component, never per message."""
    return aioredis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        decode_responses=False, retry_on_timeout=False,
    )


def default_consumer_name(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class Entry:
    stream: str
    id: bytes
    data: bytes | None  # the event JSON; None when the entry was trimmed or has no `e` field


class GroupReader:
    """Reads `streams` as `consumer` in `group`: own pending first, then claimed, then new."""

    def __init__(self, redis: aioredis.Redis, streams: list[str], group: str, consumer: str, *,
                 count: int = 100, block_ms: int = 1000, claim_idle_s: float = 30.0,
                 dead_stream: str | None = None, max_deliveries: int = 5,
                 maxlen: int = 1_000_000, stats_key: str | None = None) -> None:
        self.redis = redis
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.dead_stream = dead_stream
        self.max_deliveries = max_deliveries
        self.maxlen = maxlen
        self.dead_lettered = 0
        self.stats_key = stats_key
        self.trimmed = 0
        self._cursor = {s: "0" for s in streams}  # "0" = replaying our own pending entries
        self._next_claim = 0.0

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def read(self) -> list[Entry]:
        try:
            entries = await self._claim()
            if entries:
                return await self._count_trimmed(await self._cap(entries))
            replaying = any(c != ">" for c in self._cursor.values())
            entries = await self._read()
            return await self._count_trimmed(await self._cap(entries) if replaying else entries)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # Redis restarted without its data: recreate the groups and go on.
            await self.ensure_groups()
            self._cursor = {s: "0" for s in self.streams}
            return []

    async def _read(self) -> list[Entry]:
        replaying = [s for s, c in self._cursor.items() if c != ">"]
        streams: dict[Any, Any] = dict(self._cursor)
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, streams, count=self.count,
            block=None if replaying else self.block_ms,
        )
        out: list[Entry] = []
        for stream_name, items in reply or []:
            stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
            for entry_id, fields in items:
                out.append(Entry(stream, entry_id, (fields or {}).get(EVENT_FIELD)))
            if stream in replaying and items:
                # our own pending entries come back in order: go on after the last one
                self._cursor[stream] = items[-1][0].decode()
        for stream in replaying:
            if not any(e.stream == stream for e in out):
                self._cursor[stream] = ">"  # our pending backlog is done: new entries now
        if not out and replaying:
            return await self._read()
        return out

    async def _count_trimmed(self, entries: list[Entry]) -> list[Entry]:
        """Pending entries whose data a stream safety limit (age, entries, bytes: StreamDrain, or
        the producers' XADD backstop) deleted before we processed them: lost exchanges, counted
        in the shared stats (`trimmed_unprocessed:<group>`)."""
        lost = sum(1 for e in entries if e.data is None)
        if lost:
            self.trimmed += lost
            log.warning("%d pending entries were trimmed by a stream safety limit before %s "
                        "processed them: raise --stream-max-age-s, --stream-max-bytes or "
                        "--stream-maxlen, or add consumers", lost, self.group)
            if self.stats_key:
                await self.redis.hincrby(self.stats_key, TRIMMED_UNPROCESSED + self.group, lost)
        return entries

    async def _cap(self, entries: list[Entry]) -> list[Entry]:
        """Redelivered entries (own pending at start, claimed from others): one that has been
        delivered more than `max_deliveries` times goes to the dead-letter stream instead of
        failing forever."""
        if self.dead_stream is None or not entries:
            return entries
        delivered: dict[tuple[str, bytes], int] = {}
        for stream in {e.stream for e in entries}:
            ids = sorted(e.id for e in entries if e.stream == stream)
            rows: Any = await self.redis.xpending_range(stream, self.group, min=ids[0], max=ids[-1],
                                                   count=len(ids) + 100)
            for row in rows:
                delivered[(stream, row["message_id"])] = int(row["times_delivered"])
        keep = []
        for e in entries:
            times = delivered.get((e.stream, e.id), 1)
            if times > self.max_deliveries:
                self.dead_lettered += 1
                metrics.DEAD_LETTERED.labels(self.group).inc()
                log.warning("entry %s of %s delivered %d times without being processed: "
                            "dead-lettered to %s", e.id, e.stream, times, self.dead_stream)
                await self.dead_letter(self.dead_stream, e, f"delivered {times} times without "
                                       "being processed", self.maxlen)
            else:
                keep.append(e)
        return keep

    async def _claim(self) -> list[Entry]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + max(self.claim_idle_ms / 2000, 0.05)
        out: list[Entry] = []
        for stream in self.streams:
            reply = await self.redis.xautoclaim(stream, self.group, self.consumer,
                                                min_idle_time=self.claim_idle_ms, start_id="0-0",
                                                count=self.count)
            for entry_id, fields in reply[1]:
                if entry_id is None:
                    # Redis 6.2 answers (nil, nil) for a claimed entry whose data was trimmed:
                    # it is ours now; re-reading our own pending entries shows its id.
                    self._cursor[stream] = "0"
                    continue
                out.append(Entry(stream, entry_id, (fields or {}).get(EVENT_FIELD)))
        return out

    async def ack(self, entries: list[Entry]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        if not by_stream:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def dead_letter(self, dead_stream: str, entry: Entry, reason: str, maxlen: int) -> None:
        """Move an entry that can never be processed aside, with the reason, and ack it."""
        fields: dict[FieldT, EncodableT] = {
            b"stream": entry.stream, b"entry": entry.id, b"reason": reason,
            b"group": self.group, EVENT_FIELD: entry.data or b""}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(dead_stream, fields, maxlen=maxlen, approximate=True)
            pipe.xack(entry.stream, self.group, entry.id)
            await pipe.execute()


def behind_seconds(first_id: Any, last_generated: Any, last_delivered: Any) -> float:
    """How far a group trails its stream, in time: the age gap between the newest entry in
    the stream and the newest one given to the group (ids are `<ms>-<seq>`, stamped by
    Redis on XADD). 0 when the group has everything; works on any Redis version, unlike
    the entry-count lag that XINFO GROUPS reports only from Redis 7."""
    generated, delivered = parse_id(last_generated), parse_id(last_delivered)
    if delivered >= generated:
        return 0.0
    oldest_undelivered_ms = max(delivered[0], parse_id(first_id)[0] if first_id else 0)
    return max(0, generated[0] - oldest_undelivered_ms) / 1000


async def stream_health(redis: aioredis.Redis, stream: str) -> dict[str, Any]:
    """Length, and per group: pending, lag (Redis >= 7, else None) and seconds behind."""
    try:
        info: Any = await redis.xinfo_stream(stream)
    except ResponseError:
        return {"length": 0, "groups": {}}  # no such stream yet
    first = info.get("first-entry")
    first_id = first[0] if first else None
    groups = {}
    for g in await redis.xinfo_groups(stream):
        name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
        groups[name] = {"pending": int(g["pending"]), "lag": g.get("lag"),
                        "behind_s": behind_seconds(first_id, info["last-generated-id"],
                                                   g["last-delivered-id"])}
    return {"length": int(info["length"]), "groups": groups}


# One stream's trims, atomic (the counts and the stats counter cannot disagree). KEYS: the
# stream, the stats hash. ARGV: the plan's MINIDs (processed, aged_delivered, aged_unread,
# delivered; '' = none), keep ('' = no cap), the stats field counting what went unread.
TRIM_SCRIPT = """
local function trim(minid)
    if minid == '' then return 0 end
    return redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
local drained = trim(ARGV[1])
local delivered = trim(ARGV[2])
local aged = trim(ARGV[3])
local capped = 0
if ARGV[5] ~= '' and redis.call('XLEN', KEYS[1]) > tonumber(ARGV[5]) then
    delivered = delivered + trim(ARGV[4])
    capped = redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[5])
end
if aged + capped > 0 then
    redis.call('HINCRBY', KEYS[2], ARGV[6], aged + capped)
end
return {drained, delivered, aged, capped}
"""
_WARN_EVERY_S = 60.0


@dataclass(slots=True)
class Trimmed:
    """What one pass deleted from one stream."""

    drained: int = 0  # processed by every group
    delivered: int = 0  # past a safety limit, given to every group (maybe pending somewhere)
    aged: int = 0  # past --stream-max-age-s, never given to some group
    capped: int = 0  # past --stream-maxlen / --stream-max-bytes, never given to some group

    @property
    def unread(self) -> int:
        return self.aged + self.capped


class StreamDrain:
    """Every `interval_s`, deletes from each event stream the entries every consumer group has
    processed, and enforces the safety limits (counting what they delete unread in the stats
    hash and in shadow_events_trimmed_unread_total). The subscriber and the comparer each run
    one: any number of them may run at once (each pass is idempotent)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, limits: Limits, *,
                 interval_s: float = 1.0, memory_samples: int = 5) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.interval_s = interval_s
        self.memory_samples = memory_samples
        self._script = redis.register_script(TRIM_SCRIPT)
        self._task: asyncio.Task[None] | None = None
        self._unlogged = {label: Trimmed() for label in keys.streams}
        self._next_warning = 0.0

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, keys: Keys, settings: Settings) -> StreamDrain:
        return cls(redis, keys, Limits(max_age_s=settings.stream_max_age_s,
                                       max_entries=settings.stream_maxlen,
                                       max_bytes=settings.stream_max_bytes))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shadow-stream-drain")

    async def stop(self) -> None:
        """Idempotent; a pass in progress is cut (each stream's trims are one atomic script)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        backoff = Backoff(self.interval_s, 30.0)
        healthy = True
        while True:
            raise_if_cancelling()
            try:
                await self.run_once()
            except (RedisError, OSError) as e:
                if healthy:  # the consumers say it too: once per outage is enough
                    log.warning("stream drain: Redis unavailable (%s); retrying", e)
                    healthy = False
                await backoff.wait()
                continue
            except Exception:
                log.exception("stream drain: pass failed; retrying")
                await backoff.wait()
                continue
            healthy = True
            backoff.reset()
            raise_if_cancelling()
            await asyncio.sleep(self.interval_s)

    async def run_once(self) -> dict[str, Trimmed]:
        """One pass over every event stream; what it deleted, by stream label."""
        out = {}
        for label, stream in self.keys.streams.items():
            out[label] = trimmed = await self._drain(label, stream)
            if trimmed.drained:
                metrics.STREAM_DRAINED.labels(stream).inc(trimmed.drained)
            if trimmed.unread:
                metrics.EVENTS_TRIMMED_UNREAD.labels(stream).inc(trimmed.unread)
        self._warn(out)
        return out

    async def _drain(self, label: str, stream: str) -> Trimmed:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.time()
            if self.limits.max_bytes is not None:
                pipe.memory_usage(stream, samples=self.memory_samples)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in (replies[0], *replies[2:]):
            if isinstance(reply, Exception):
                raise reply
        length = int(replies[0])
        if not length:
            return Trimmed()
        if isinstance(replies[1], ResponseError):
            if "no such key" in str(replies[1]).lower():
                return Trimmed()  # deleted meanwhile
            raise replies[1]
        groups = await self._positions(stream, replies[1])
        seconds, micros = replies[2]
        memory = int(replies[3]) if len(replies) > 3 and replies[3] is not None else None
        todo = plan(groups, self.keys.required_groups[stream], self.limits, length=length,
                    now_ms=int(seconds) * 1000 + int(micros) // 1000, memory_bytes=memory)
        result: Any = await self._script(
            keys=[stream, self.keys.stats],
            args=[_minid(todo.processed), _minid(todo.aged_delivered), _minid(todo.aged_unread),
                  _minid(todo.delivered), "" if todo.keep is None else todo.keep,
                  TRIMMED_UNREAD + label])
        return Trimmed(*(int(n) for n in result))

    async def _positions(self, stream: str, info: list[dict[str, Any]]) -> list[GroupPosition]:
        """Each group's last-delivered id (XINFO GROUPS) and oldest pending id (XPENDING's
        summary, asked only of groups with pending entries)."""
        names = [g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
                 for g in info]
        pending = [name for name, g in zip(names, info, strict=True) if int(g["pending"])]
        oldest: dict[str, StreamId | None] = {}
        if pending:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in pending:
                    pipe.xpending(stream, name)
                summaries: list[Any] = await pipe.execute()
            for name, summary in zip(pending, summaries, strict=True):
                oldest[name] = parse_id(summary["min"]) if summary.get("min") else None
        return [GroupPosition(name, parse_id(g["last-delivered-id"]), oldest.get(name))
                for name, g in zip(names, info, strict=True)]

    def _warn(self, passed: dict[str, Trimmed]) -> None:
        """Unread entries deleted: one warning a minute at most, with the totals since the last."""
        for label, t in passed.items():
            seen = self._unlogged[label]
            seen.aged += t.aged
            seen.capped += t.capped
        now = time.monotonic()
        if now < self._next_warning or not any(t.unread for t in self._unlogged.values()):
            return
        self._next_warning = now + _WARN_EVERY_S
        limits = self.limits
        for label, t in self._unlogged.items():
            if not t.unread:
                continue
            why = []
            if t.aged:
                why.append(f"{t.aged} older than --stream-max-age-s {limits.max_age_s:g}")
            if t.capped:
                why.append(f"{t.capped} past --stream-maxlen {limits.max_entries} or "
                           f"--stream-max-bytes {limits.max_bytes}")
            log.warning("%d entries of %s were deleted before every consumer group read them "
                        "(%s): their exchanges stay incomplete. Add subscribers or comparers, "
                        "or raise these limits", t.unread, self.keys.streams[label],
                        "; ".join(why))
        self._unlogged = {label: Trimmed() for label in self.keys.streams}


def _minid(value: StreamId | None) -> str:
    return "" if value is None else format_id(value)
