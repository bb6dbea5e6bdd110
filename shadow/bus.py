"""The Redis bus: connections, consumer-group reading, acknowledging, dead letters, draining.

Delivery is at-least-once: a consumer first re-reads its own pending entries,
takes over entries left idle by consumers that died (XAUTOCLAIM), then reads new
ones; an entry is acknowledged only after its effect is durable elsewhere. Entries
every group has processed are deleted by the drain (StreamDrain; what goes is
decided by shadow.drain).

Streams may be sharded (shadow.keys): readers read every shard, the drain and the
summaries go over every shard. One Redis, a Redis Cluster (redis-py's cluster client
follows MOVED/ASK; every multi-key command shadow sends stays in one shard's slot) or a
Sentinel-watched master (failover followed) answer the same calls; the few commands that
need a node of their own on a cluster (TIME, WAIT, PUBSUB NUMSUB, reads over several
slots) are routed here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from shadow import metrics
from shadow.aio import Backoff, cancel_and_wait, raise_if_cancelling
from shadow.drain import GroupPosition, Limits, StreamId, format_id, parse_id, plan
from shadow.errors import BusError, ConfigError
from shadow.keys import (
    EVENT_FIELD,
    SHARDS_FIELD,
    TRIMMED_UNPROCESSED,
    TRIMMED_UNREAD,
    Keys,
    ShardKeys,
)
from shadow.redisurl import parse_redis_url
from shadow.settings import Settings

log = logging.getLogger("shadow.bus")


class _SentinelMaster(aioredis.Redis):
    """The master a Sentinel names. redis-py's Sentinel pool asks the sentinels only when it
    opens a connection: after a failover, connections to the old master keep working until the
    sentinels turn it into a replica (their next look at it, up to 10 s), and what is written
    there meanwhile is lost. So at most once a second (when the client is used) the sentinels
    are asked again; a new master makes the pool drop the old one's connections. Closing the
    client also closes the connections to the sentinels."""

    sentinel_manager: Sentinel | None = None
    check_every_s = 1.0
    _next_check = 0.0
    _checking: asyncio.Task[None] | None = None
    _master: tuple[str, int] | None = None  # as the last check found it

    @property
    def followed_master(self) -> tuple[str, int] | None:
        """The master address the last check found (every connection goes there since)."""
        return self._master

    def _follow(self) -> None:
        now = time.monotonic()
        if now < self._next_check or (self._checking is not None and not self._checking.done()):
            return
        self._next_check = now + self.check_every_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._checking = loop.create_task(self._check(), name="shadow-sentinel-master")

    async def _check(self) -> None:
        pool: Any = self.connection_pool
        try:
            now = await pool.get_master_address()
        except (RedisError, OSError):
            return  # sentinels unreachable: go on with what the pool has
        before, self._master = self._master, now
        if before is not None and now != before:
            # (the pool may have seen the new address already, opening a connection: it then
            # closed only the idle ones) every connection to the old master goes: the idle ones
            # now, the busy ones when released
            await pool.disconnect(inuse_connections=False)
            await pool.update_active_connections_for_reconnect()
            log.warning("Redis Sentinel: %s's master is now %s:%s (was %s:%s)", pool.service_name,
                        *now, *before)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self._follow()
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self._follow()
        return super().pipeline(transaction, shard_hint)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await cancel_and_wait(self._checking)
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """One client (with its pool) per component, never per message: for redis://, rediss://
    and unix:// a plain client, for redis+cluster:// redis-py's cluster client, for
    redis+sentinel:// a client of the master the sentinels name. The cluster client is typed
    as the plain one: shadow sends it only commands both answer (see is_cluster)."""
    target = parse_redis_url(url)
    timeouts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if target.kind == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            decode_responses=False, **timeouts, **target.client_options())
        return cast(aioredis.Redis, cluster)
    if target.kind == "sentinel":
        assert target.service is not None
        sentinel_auth = {"password": target.options["sentinel_password"]} \
            if target.options.get("sentinel_password") else {}
        tls = {k: v for k, v in target.client_options().items() if k.startswith("ssl")}
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs={**timeouts, **sentinel_auth,
                                                                 **tls},
                            **timeouts, retry_on_timeout=False, decode_responses=False,
                            **target.client_options())
        master = sentinel.master_for(target.service, redis_class=_SentinelMaster)
        master.sentinel_manager = sentinel
        return master
    return aioredis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        decode_responses=False, retry_on_timeout=False,
    )


def is_cluster(redis: Any) -> bool:
    """Whether `redis` is a Redis Cluster client (commands over several slots must be split,
    keyless ones sent to the node that matters)."""
    return isinstance(redis, RedisCluster)


def keys_for(settings: Settings) -> Keys:
    """The key names of the setup `settings` describe: its prefix and shard count, hash-tagged
    on a Redis Cluster."""
    return Keys.for_redis(settings.stream_prefix, settings.stream_shards,
                          parse_redis_url(settings.redis).kind == "cluster"
                          if settings.redis else False)


def node_of(redis: Any, key: str) -> Any:
    """The cluster node that holds `key` (from the client's slot map, no round trip)."""
    return redis.get_node_from_key(key)


async def server_time_ms(redis: aioredis.Redis, key: str) -> int:
    """The clock of the Redis server that holds `key` (it stamps the key's stream ids)."""
    if is_cluster(redis):
        seconds, micros = await redis.time(target_nodes=node_of(redis, key))  # type: ignore[call-arg]
    else:
        seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def listeners(redis: aioredis.Redis, channel: str) -> int:
    """Subscribers of a pub/sub channel. On a cluster, every node counts only its own clients
    (a PUBLISH reaches all of them): the counts of every node are added up."""
    if is_cluster(redis):
        counts: Any = await redis.pubsub_numsub(  # type: ignore[call-arg]
            channel, target_nodes=RedisCluster.ALL_NODES)
    else:
        counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0


async def publish(redis: aioredis.Redis, channel: str, messages: list[bytes]) -> None:
    """Publish `messages` on `channel` in one pipeline. A cluster client refuses pipelined
    PUBLISH (any node relays a message to every node): they are sent as plain commands to the
    node of the channel's slot, one round trip still."""
    async with redis.pipeline(transaction=False) as pipe:
        if is_cluster(redis):
            node = node_of(redis, channel)
            for message in messages:
                pipe.execute_command("PUBLISH", channel, message, target_nodes=node)
        else:
            for message in messages:
                pipe.publish(channel, message)
        await pipe.execute()


async def wait_replicas(redis: aioredis.Redis, pipe: Any, key: str, replicas: int,
                        timeout_ms: int) -> None:
    """Queue a WAIT on `pipe` behind the writes to `key` (the same connection: WAIT waits for
    that connection's writes), on the node that holds `key`."""
    if is_cluster(redis):
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node_of(redis, key))
    else:
        pipe.wait(replicas, timeout_ms)


def default_consumer_name(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class Entry:
    stream: str
    id: bytes
    data: bytes | None  # the event JSON; None when the entry was trimmed or has no `e` field


class GroupReader:
    """Reads `streams` (of any shards of `keys`) as `consumer` in `group`: own pending first,
    then claimed, then new. An entry's dead letters and lost-entry counts go to its own shard.
    On a Redis Cluster each shard is read by a command of its own (one slot per command)."""

    def __init__(self, redis: aioredis.Redis, streams: list[str], group: str, consumer: str, *,
                 keys: Keys, count: int = 100, block_ms: int = 1000, claim_idle_s: float = 30.0,
                 dead_letters: bool = True, max_deliveries: int = 5,
                 maxlen: int = 1_000_000) -> None:
        self.redis = redis
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.keys = keys
        self.count = count
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.dead_letters = dead_letters
        self.max_deliveries = max_deliveries
        self.maxlen = maxlen
        self.dead_lettered = 0
        self.trimmed = 0
        self._cursor = {s: "0" for s in streams}  # "0" = replaying our own pending entries
        self._next_claim = 0.0
        self._cluster = is_cluster(redis)
        by_shard: dict[int, list[str]] = {}
        for stream in streams:
            by_shard.setdefault(keys.owner(stream).index, []).append(stream)
        self._slots = list(by_shard.values())  # streams that one command may read together
        self._turn = 0  # cluster: the shard whose read blocks when every shard is idle

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
        reply: Any
        if self._cluster:
            reply = await self._read_slots(block=not replaying)
        else:
            streams: dict[Any, Any] = dict(self._cursor)
            reply = await self.redis.xreadgroup(
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

    async def _read_slots(self, *, block: bool) -> list[Any]:
        """Cluster: every shard's streams at once, one command per shard (each goes to its
        node); when none has anything, one shard's read blocks (a short while, in turn), so
        an idle reader costs little and new entries wait at most about `block_ms`."""
        replies = await asyncio.gather(*(self._xreadgroup(group, None) for group in self._slots))
        out = [item for reply in replies for item in (reply or [])]
        if out or not block:
            return out
        self._turn = (self._turn + 1) % len(self._slots)
        wait_ms = max(10, self.block_ms // len(self._slots))
        return list(await self._xreadgroup(self._slots[self._turn], wait_ms) or [])

    async def _xreadgroup(self, streams: list[str], block_ms: int | None) -> Any:
        """XREADGROUP over streams of one slot, sent to the node that holds it (redis-py would
        first ask a node for the keys of this command, whose key positions move)."""
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", *streams, *(self._cursor[s] for s in streams)]
        return await self.redis.execute_command(  # type: ignore[no-untyped-call]
            *args, target_nodes=node_of(self.redis, streams[0]))

    async def _count_trimmed(self, entries: list[Entry]) -> list[Entry]:
        """Pending entries whose data a stream safety limit (age, entries, bytes: StreamDrain, or
        the producers' XADD backstop) deleted before we processed them: lost exchanges, counted
        in their shard's stats (`trimmed_unprocessed:<group>`)."""
        lost: dict[str, int] = {}
        for e in entries:
            if e.data is None:
                stats = self.keys.owner(e.stream).stats
                lost[stats] = lost.get(stats, 0) + 1
        if lost:
            n = sum(lost.values())
            self.trimmed += n
            log.warning("%d pending entries were trimmed by a stream safety limit before %s "
                        "processed them: raise --stream-max-age-s, --stream-max-bytes or "
                        "--stream-maxlen, or add consumers", n, self.group)
            for stats, count in lost.items():
                await self.redis.hincrby(stats, TRIMMED_UNPROCESSED + self.group, count)
        return entries

    async def _cap(self, entries: list[Entry]) -> list[Entry]:
        """Redelivered entries (own pending at start, claimed from others): one that has been
        delivered more than `max_deliveries` times goes to the dead-letter stream instead of
        failing forever."""
        if not self.dead_letters or not entries:
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
                            "dead-lettered to %s", e.id, e.stream, times,
                            self.keys.owner(e.stream).dead)
                await self.dead_letter(e, f"delivered {times} times without being processed")
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

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move an entry that can never be processed aside (to its shard's dead-letter
        stream), with the reason, and ack it: one transaction, in one slot."""
        fields: dict[FieldT, EncodableT] = {
            b"stream": entry.stream, b"entry": entry.id, b"reason": reason,
            b"group": self.group, EVENT_FIELD: entry.data or b""}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.owner(entry.stream).dead, fields, maxlen=self.maxlen,
                      approximate=True)
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


def merge_health(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One stream label's health over every shard: lengths, pending and lag added up (lag None
    when a shard's Redis does not report it), the furthest behind."""
    groups: dict[str, dict[str, Any]] = {}
    for part in parts:
        for name, g in part["groups"].items():
            into = groups.setdefault(name, {"pending": 0, "lag": 0, "behind_s": 0.0})
            into["pending"] += g["pending"]
            into["lag"] = None if into["lag"] is None or g["lag"] is None \
                else into["lag"] + int(g["lag"])
            into["behind_s"] = max(into["behind_s"], g["behind_s"])
    return {"length": sum(p["length"] for p in parts), "groups": groups}


async def streams_health(redis: aioredis.Redis, keys: Keys,
                         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every shard's stream health, by label (v1, v2): over all shards, and each shard's."""
    shards = []
    for shard in keys.all:
        health: dict[str, Any] = {"shard": shard.index}
        for label, stream in shard.streams.items():
            health[label] = await stream_health(redis, stream)
        shards.append(health)
    total = {label: merge_health([h[label] for h in shards]) for label in ("v1", "v2")}
    return total, shards


async def stats_totals(redis: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """The stats hashes of every shard, added up field by field."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in keys.all:
            pipe.hgetall(shard.stats)
        replies: list[Any] = await pipe.execute()
    out: dict[str, int] = {}
    for reply in replies:
        for k, v in (reply or {}).items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            out[name] = out.get(name, 0) + int(v)
    return out


async def backlog(redis: aioredis.Redis, keys: Keys) -> tuple[int, int]:
    """(entries, pending) over every shard's event streams: what consumers have still to do."""
    entries = pending = 0
    for stream in keys.event_streams:
        health = await stream_health(redis, stream)
        entries += health["length"]
        pending += sum(g["pending"] for g in health["groups"].values())
    return entries, pending


# Record the shard count only if it is still what the caller saw. KEYS: the meta hash. ARGV: the
# field, the value seen ('' = none), the new value.
_RECORD_SHARDS = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (current or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


async def recorded_shards(redis: aioredis.Redis, keys: Keys) -> int | None:
    raw = await redis.hget(keys.meta, SHARDS_FIELD)
    return int(raw) if raw else None


def _check_spread(redis: aioredis.Redis, keys: Keys) -> None:
    """On a cluster, say when the shards do not reach every master (fewer shards than
    masters, or slots split unevenly): the streams' load stays on fewer masters."""
    if not is_cluster(redis):
        return
    cluster: Any = redis
    masters = {node.name for node in cluster.get_primaries()}
    used = {node_of(redis, shard.v1).name for shard in keys.all}
    if masters - used:
        log.warning("--stream-shards %d: the streams are on %d of the cluster's %d masters; use "
                    "at least as many shards as masters (a multiple spreads them evenly)",
                    keys.shards, len(used & masters), len(masters))


async def ensure_layout(redis: aioredis.Redis, keys: Keys) -> None:
    """Check the shard count against the one recorded in Redis (`<prefix>:meta`), and record it
    when there is none. Another count is refused (ConfigError) unless the streams it wrote are
    drained (no entry left, nothing pending): then the new count is recorded."""
    script = redis.register_script(_RECORD_SHARDS)
    for _ in range(5):
        raw = await redis.hget(keys.meta, SHARDS_FIELD)
        seen = raw.decode() if isinstance(raw, bytes) else (raw or "")
        recorded = int(seen) if seen else None
        if recorded == keys.shards:
            _check_spread(redis, keys)
            return
        old = keys.with_shards(recorded or 1)
        if old.all != keys.all:
            entries, pending = await backlog(redis, old)
            if entries or pending:
                was = recorded or 1
                raise ConfigError(
                    f"--stream-shards {keys.shards}: the streams under prefix {keys.prefix!r} "
                    f"were written with {was} shard{'s' if was > 1 else ''} and still hold "
                    f"{entries} entries ({pending} delivered but not acknowledged). Start "
                    f"every service with --stream-shards {was}; or, to change the count, stop "
                    f"the proxies, let the subscribers and comparers (still with "
                    f"--stream-shards {was}) empty the streams (`shadow report` shows the "
                    f"backlog), then restart everything with --stream-shards {keys.shards}")
        if await script(keys=[keys.meta], args=[SHARDS_FIELD, seen, keys.shards]):
            if recorded is not None:
                log.warning("stream shards changed from %d to %d (the streams were drained)",
                            recorded, keys.shards)
            _check_spread(redis, keys)
            return
    raise BusError("the recorded stream shard count keeps changing: are services with "
                   "different --stream-shards starting at once?")


# One stream's trims, atomic (the counts and the stats counter cannot disagree). KEYS: the
# stream, the stats hash. ARGV: the plan's MINIDs (processed, aged_delivered, aged_unread,
# delivered; '' = none), keep ('' = no cap), the stats field counting what went unread, then
# the groups required. What only the groups' positions allow (drained, and the trims of what
# every group was given) is bounded again by the positions this server holds now: a plan made
# from another server's view (a failover, when the pool's connections go to both the old and
# the new master for a moment) never deletes an entry a group still needs here.
TRIM_SCRIPT = """
local function parse(id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return tonumber(ms), tonumber(seq), ms
end
local function less(a, b)
    local am, as = parse(a)
    local bm, bs = parse(b)
    return am < bm or (am == bm and as < bs)
end
local function after(id)
    local _, seq, ms = parse(id)
    return ms .. '-' .. string.format('%d', seq + 1)
end
local needs, unread = nil, nil
local seen = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    seen[f['name']] = true
    local next_id = after(f['last-delivered-id'])
    local need = next_id
    if tonumber(f['pending']) > 0 then
        local oldest = redis.call('XPENDING', KEYS[1], f['name'])[2]
        if oldest and less(oldest, need) then need = oldest end
    end
    if needs == nil or less(need, needs) then needs = need end
    if unread == nil or less(next_id, unread) then unread = next_id end
end
for i = 7, #ARGV do
    if not seen[ARGV[i]] then needs = nil end
end
if needs == nil then needs, unread = '0-0', '0-0' end
local function bounded(minid, bound)
    if minid == '' then return '' end
    if less(bound, minid) then return bound end
    return minid
end
local function trim(minid)
    if minid == '' then return 0 end
    return redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
local drained = trim(bounded(ARGV[1], needs))
local delivered = trim(bounded(ARGV[2], unread))
local aged = trim(ARGV[3])
local capped = 0
if ARGV[5] ~= '' and redis.call('XLEN', KEYS[1]) > tonumber(ARGV[5]) then
    delivered = delivered + trim(bounded(ARGV[4], unread))
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

    def add(self, other: Trimmed) -> None:
        self.drained += other.drained
        self.delivered += other.delivered
        self.aged += other.aged
        self.capped += other.capped


class StreamDrain:
    """Every `interval_s`, deletes from each event stream of every shard the entries every
    consumer group has processed, and enforces the safety limits (per stream; counting what
    they delete unread in the shard's stats hash and in shadow_events_trimmed_unread_total).
    The subscriber and the comparer each run one: any number of them may run at once (each
    pass is idempotent). Each pass also checks the recorded shard count, and says so loudly
    when another process changed it."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, limits: Limits, *,
                 interval_s: float = 1.0, memory_samples: int = 5) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.interval_s = interval_s
        self.memory_samples = memory_samples
        self._script = redis.register_script(TRIM_SCRIPT)
        self._cluster = is_cluster(redis)
        self._task: asyncio.Task[None] | None = None
        self._unlogged = {label: Trimmed() for label in ("v1", "v2")}
        self._next_warning = 0.0
        self._next_layout_warning = 0.0

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
        """One pass over every event stream of every shard; what it deleted, by stream label
        (v1, v2), added up over the shards."""
        out = {label: Trimmed() for label in ("v1", "v2")}
        for shard in self.keys.all:
            for label, stream in shard.streams.items():
                trimmed = await self._drain(shard, label, stream)
                out[label].add(trimmed)
                if trimmed.drained:
                    metrics.STREAM_DRAINED.labels(stream).inc(trimmed.drained)
                if trimmed.unread:
                    metrics.EVENTS_TRIMMED_UNREAD.labels(stream).inc(trimmed.unread)
        self._warn(out)
        await self._check_layout()
        return out

    async def _drain(self, shard: ShardKeys, label: str, stream: str) -> Trimmed:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            if self.limits.max_bytes is not None:
                pipe.memory_usage(stream, samples=self.memory_samples)
            if not self._cluster:
                pipe.time()
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
        memory = int(replies[2]) if self.limits.max_bytes is not None and \
            replies[2] is not None else None
        if self._cluster:  # the clock of the node that stamps this stream's ids
            now_ms = await server_time_ms(self.redis, stream)
        else:
            seconds, micros = replies[-1]
            now_ms = int(seconds) * 1000 + int(micros) // 1000
        todo = plan(groups, shard.required_groups[stream], self.limits, length=length,
                    now_ms=now_ms, memory_bytes=memory)
        result: Any = await self._script(
            keys=[stream, shard.stats],
            args=[_minid(todo.processed), _minid(todo.aged_delivered), _minid(todo.aged_unread),
                  _minid(todo.delivered), "" if todo.keep is None else todo.keep,
                  TRIMMED_UNREAD + label, *shard.required_groups[stream]])
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

    async def _check_layout(self) -> None:
        """Another process recorded another shard count (after the streams were drained): this
        one reads and writes streams nobody else uses any more. Said once a minute."""
        recorded = await recorded_shards(self.redis, self.keys)
        if recorded is None or recorded == self.keys.shards:
            return
        now = time.monotonic()
        if now >= self._next_layout_warning:
            self._next_layout_warning = now + _WARN_EVERY_S
            log.error("the streams under prefix %r now have %d shards (recorded by another "
                      "process), this process uses %d: restart it with --stream-shards %d",
                      self.keys.prefix, recorded, self.keys.shards, recorded)

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
            where = self.keys.shard(0).streams[label] if self.keys.shards == 1 else \
                f"the {label} streams of {self.keys.shards} shards"
            log.warning("%d entries of %s were deleted before every consumer group read them "
                        "(%s): their exchanges stay incomplete. Add subscribers or comparers, "
                        "or raise these limits", t.unread, where, "; ".join(why))
        self._unlogged = {label: Trimmed() for label in ("v1", "v2")}


def _minid(value: StreamId | None) -> str:
    return "" if value is None else format_id(value)
