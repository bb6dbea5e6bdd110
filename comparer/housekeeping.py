"""Housekeeping, off the comparer's ingest path: rollup compaction and retention.

One named task, every `interval_s`: `Store.compact` folds old minute buckets into hours and
days, then `Store.retain` deletes what is past the limits (documents by age, count and disk
budget; rollup buckets by age), each in short transactions that yield to the comparer's
writes between them. A failure is logged and retried at the next round; it never stops the
comparer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from comparer.store import Store
from shadow.aio import cancel_and_wait
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


class Housekeeper:
    def __init__(self, store: Store, limits: Limits, *, interval_s: float = 10.0) -> None:
        self.store = store
        self.limits = limits
        self.interval_s = interval_s
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
        return folded, deleted
