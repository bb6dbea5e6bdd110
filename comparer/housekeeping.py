"""Housekeeping, off the comparer's ingest path: rollup compaction, retention, tombstones.

One named task, every `interval_s`: `Store.compact` folds old minute buckets into hours and
days, then `Store.retain` deletes what is past the limits (documents by age, count and disk
budget; rollup buckets by age), then the tombstones of dropped exchanges none of whose parts
can still arrive go (`StreamHorizon`, shadow.horizon: the streams hold nothing of them any
more), each in short transactions that yield to the comparer's writes between them. A failure
is logged and retried at the next round; it never stops the comparer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from comparer.store import Store
from shadow.aio import cancel_and_wait, raise_if_cancelling
from shadow.bus import server_time_ms
from shadow.drain import parse_id
from shadow.horizon import MARGIN_S, Horizon, Look
from shadow.keys import Keys
from shadow.settings import Settings

log = logging.getLogger("shadow.housekeeping")


@dataclass(frozen=True, slots=True)
class Limits:
    """What retention keeps (None: no limit)."""

    max_age_s: float | None = None
    max_docs: int | None = None
    max_bytes: int | None = None
    rollup_max_age_s: float | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(max_age_s=s.retention_max_age_s or None, max_docs=s.retention_max_docs,
                   max_bytes=s.store_max_bytes or None,
                   rollup_max_age_s=s.rollup_max_age_s or None)


class StreamHorizon:
    """The streams' horizon (shadow.horizon) read from Redis: each `cut()` looks at every
    shard's streams (the oldest entry of v1, then of v2, between readings of the server's
    clock) and returns the time before which no part of an exchange can still arrive, once
    proven (None before)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, margin_s: float = MARGIN_S) -> None:
        self.redis = redis
        self.keys = keys
        self.horizon = Horizon(margin_s)

    async def _oldest_ms(self, stream: str) -> int | None:
        entries: Any = await self.redis.xrange(stream, count=1)
        return parse_id(entries[0][0])[0] if entries else None

    async def look(self) -> list[Look]:
        looks = []
        for shard in self.keys.all:
            before = await server_time_ms(self.redis, shard.v1)
            v1 = await self._oldest_ms(shard.v1)
            after = await server_time_ms(self.redis, shard.v1)
            looks.append(Look(before, v1, after, await self._oldest_ms(shard.v2)))
        return looks

    async def cut(self) -> float | None:
        return self.horizon.step(await self.look())


class Housekeeper:
    def __init__(self, store: Store, limits: Limits, *, interval_s: float = 10.0,
                 horizon: StreamHorizon | None = None) -> None:
        self.store = store
        self.limits = limits
        self.interval_s = interval_s
        self.horizon = horizon  # None: tombstones go with the documents' age limit only
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shadow-housekeeping")

    async def stop(self) -> None:
        """Cancel the round under way (each of its transactions commits or rolls back
        whole). Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()  # a cancellation redis-py swallowed (the horizon reads Redis)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed; retrying in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def run_once(self) -> tuple[int, int]:
        """One round: (rollup rows folded, documents deleted)."""
        folded = await self.store.compact()
        lim = self.limits
        deleted = await self.store.retain(max_age_s=lim.max_age_s, max_docs=lim.max_docs,
                                          max_bytes=lim.max_bytes,
                                          rollup_max_age_s=lim.rollup_max_age_s)
        if deleted:
            log.info("retention: deleted %d exchange documents (their counts stay)", deleted)
        await self.forget_tombstones()
        return folded, deleted

    async def forget_tombstones(self) -> int:
        """Delete the tombstones the streams' horizon shows no part can still come for.
        Returns how many (0 while Redis cannot be read: they wait for the next round)."""
        if self.horizon is None:
            return 0
        try:
            cut = await self.horizon.cut()
        except (RedisError, OSError) as e:
            log.warning("tombstones: the streams cannot be read (%s); they stay this round", e)
            return 0
        return 0 if cut is None else await self.store.forget_tombstones(cut)
