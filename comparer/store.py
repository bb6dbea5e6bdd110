"""The store contract: one document per exchange id, every write idempotent."""

from __future__ import annotations

from typing import Any, Protocol

from shadow.errors import ConfigError
from shadow.model import Comparison, Event, Exchange


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, events: list[Event]) -> list[Exchange]:
        """Upsert each event's part (idempotent). Returns the touched exchanges that now have
        both V1's answer and V2's candidate and are not decided yet."""

    async def complete(self, results: list[tuple[str, Comparison]]) -> list[str]:
        """Record outcomes of undecided exchanges; an already decided one is left as is.
        Returns the ids recorded now (so a re-delivery is never counted twice)."""

    async def expire(self, older_than_ts: float) -> int:
        """Exchanges whose V2 part never came within the join timeout become v1_only."""

    async def get(self, key: str) -> Exchange | None:
        """By exchange id, or by request id (newest first)."""

    async def count(self) -> int: ...

    async def summary(self) -> dict[str, Any]: ...


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        from comparer.sqlite_store import SQLiteStore

        return SQLiteStore(url)
    raise ConfigError(f"store {url!r} is not supported yet: use sqlite:///path/to/shadow.db")
