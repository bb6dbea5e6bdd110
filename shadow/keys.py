"""Every Redis key name shadow uses, in one place (pure: names and the shard function).

A prefix (setting `stream_prefix`, default "shadow") lets several shadow setups,
or several tests, share one Redis without seeing each other's data.

Streams may be split into shards (`--stream-shards N`). An exchange's shard is a function of
its id (`shard_of`), so its request, response and candidate events meet in one shard. Each
shard's keys (its proxy stream, candidate stream, dead letters and stats hash) share one
Redis Cluster hash tag, so every multi-key script or transaction stays in one slot; the tags
are chosen so that shard k's slot lies in the k-th N-th of the slot space, spreading the
shards evenly over a cluster whose masters split the slots evenly. One untagged shard keeps
the historical names (`shadow:v1`, `shadow:v2`, `shadow:stats`, `shadow:dead`).
"""

from __future__ import annotations

import binascii
import functools
import itertools
import zlib
from dataclasses import dataclass

REPLAYERS = "replayers"
COMPARERS = "comparers"
EVENT_FIELD = b"e"
# Fields of each shard's stats hash (ShardKeys.stats); summaries add them up over the shards
DROPPED_EVENTS = "dropped_events"  # events the proxy could not hand to Redis
UNCONFIRMED_EVENTS = "unconfirmed_events"  # published, but not confirmed by the replicas
# --publish-wait-replicas asked for: a failover may have lost them
TRIMMED_UNPROCESSED = "trimmed_unprocessed:"  # + group: pending entries trimmed before it processed them
TRIMMED_UNREAD = "trimmed_unread:"  # + stream label (v1, v2): entries a safety limit deleted before
# some group was given them
# Field of the meta hash (Keys.meta): the shard count the streams were written with
SHARDS_FIELD = "stream_shards"

CLUSTER_SLOTS = 16384
MAX_SHARDS = 256


def shard_of(exchange_id: str, shards: int) -> int:
    """The shard of an exchange: a stable function of its id (CRC-32, the same in every process
    and on every host; unrelated to the sampling hash, so sampled requests spread too)."""
    if shards == 1:
        return 0
    return zlib.crc32(exchange_id.encode("utf-8", "surrogatepass")) % shards


def cluster_slot(tag: str) -> int:
    """The Redis Cluster slot of a key whose hash tag is `tag` (CRC16-XMODEM mod 16384)."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


@functools.lru_cache(maxsize=1024)
def shard_tag(index: int, shards: int) -> str:
    """The hash tag of shard `index` of `shards`: the first of "k", "k.1", "k.2", ... whose slot
    lies in the k-th `shards`-th of the slot space (a few dozen tries at most)."""
    low, high = index * CLUSTER_SLOTS // shards, (index + 1) * CLUSTER_SLOTS // shards
    for j in itertools.count():
        tag = str(index) if j == 0 else f"{index}.{j}"
        if low <= cluster_slot(tag) < high:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """One shard's keys: they share `base`, which carries the shard's hash tag when tagged."""

    index: int
    base: str  # "shadow" (one untagged shard) or "shadow:{2.4}"

    @property
    def v1(self) -> str:
        """Requests and V1's responses, written by the proxy."""
        return f"{self.base}:v1"

    @property
    def v2(self) -> str:
        """Candidates (V2's answers), written by the subscriber."""
        return f"{self.base}:v2"

    @property
    def dead(self) -> str:
        """Entries of this shard that could not be processed, with the reason."""
        return f"{self.base}:dead"

    @property
    def stats(self) -> str:
        """Hash of counters the services share (dropped events, trimmed entries, ...)."""
        return f"{self.base}:stats"

    @property
    def streams(self) -> dict[str, str]:
        """The event streams the drain empties, by label (the /api/summary names)."""
        return {"v1": self.v1, "v2": self.v2}

    @property
    def required_groups(self) -> dict[str, tuple[str, ...]]:
        """Per event stream, the consumer groups that must exist (and have processed an entry)
        before the drain deletes anything: the subscriber's and the comparer's on the proxy's
        stream, the comparer's on the candidates'."""
        return {self.v1: (REPLAYERS, COMPARERS), self.v2: (COMPARERS,)}


@functools.lru_cache(maxsize=256)
def _shards(prefix: str, shards: int, tagged: bool) -> tuple[ShardKeys, ...]:
    if not tagged:
        return (ShardKeys(0, prefix),)
    return tuple(ShardKeys(k, f"{prefix}:{{{shard_tag(k, shards)}}}") for k in range(shards))


@functools.lru_cache(maxsize=256)
def _owners(prefix: str, shards: int, tagged: bool) -> dict[str, ShardKeys]:
    return {key: s for s in _shards(prefix, shards, tagged)
            for key in (s.v1, s.v2, s.dead, s.stats)}


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one shadow setup: `shards` shards of streams under `prefix`. `tagged`:
    hash-tagged names even for one shard (a Redis Cluster needs them: a script over the
    stream and the stats hash must stay in one slot); more than one shard is always tagged."""

    prefix: str = "shadow"
    shards: int = 1
    tagged: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 1-{MAX_SHARDS}, got {self.shards}")

    @classmethod
    def for_redis(cls, prefix: str, shards: int, cluster: bool) -> Keys:
        """The keys for `shards` shards on a Redis Cluster (`cluster`) or a single master."""
        return cls(prefix, shards, tagged=cluster)

    def with_shards(self, shards: int) -> Keys:
        return Keys(self.prefix, shards, self.tagged)

    @property
    def all(self) -> tuple[ShardKeys, ...]:
        """Every shard, by index."""
        return _shards(self.prefix, self.shards, self.tagged or self.shards > 1)

    def shard(self, index: int) -> ShardKeys:
        return self.all[index]

    def of(self, exchange_id: str) -> ShardKeys:
        """The shard where the events of exchange `exchange_id` go."""
        return self.all[shard_of(exchange_id, self.shards)]

    def owner(self, key: str) -> ShardKeys:
        """The shard a stream, dead-letter stream or stats key belongs to (KeyError if none)."""
        return _owners(self.prefix, self.shards, self.tagged or self.shards > 1)[key]

    @property
    def v1_streams(self) -> list[str]:
        """Every shard's proxy stream (what the subscribers read)."""
        return [s.v1 for s in self.all]

    @property
    def event_streams(self) -> list[str]:
        """Every shard's proxy and candidate streams (what the comparers read)."""
        return [key for s in self.all for key in (s.v1, s.v2)]

    def _one(self) -> ShardKeys:
        if self.shards != 1:
            raise ValueError(f"{self.shards} stream shards: name the shard (keys.shard(k), "
                             "keys.of(exchange_id))")
        return self.all[0]

    # With one shard, its keys by their plain names (sharded code names the shard).
    @property
    def v1(self) -> str:
        return self._one().v1

    @property
    def v2(self) -> str:
        return self._one().v2

    @property
    def dead(self) -> str:
        return self._one().dead

    @property
    def stats(self) -> str:
        return self._one().stats

    @property
    def streams(self) -> dict[str, str]:
        return self._one().streams

    @property
    def required_groups(self) -> dict[str, tuple[str, ...]]:
        return self._one().required_groups

    @property
    def firehose(self) -> str:
        """Pub/sub channel of redacted exchanges (a channel: any cluster node relays it)."""
        return f"{self.prefix}:firehose"

    @property
    def meta(self) -> str:
        """Hash recording how the streams are laid out (SHARDS_FIELD: the shard count)."""
        return f"{self.prefix}:meta"

    @property
    def rate(self) -> str:
        """The cluster-wide replay token bucket (--max-replay-rate-global)."""
        return f"{self.prefix}:rate"
