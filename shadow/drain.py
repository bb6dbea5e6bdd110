"""Which stream entries may be deleted: the pure half of the stream drain (shadow.bus.StreamDrain
reads the groups' positions from Redis and runs the plan).

Redis memory follows the backlog: an entry is deleted as soon as every consumer group has
processed it (acknowledged it, or never needs it again). A group needs everything from the
smallest of its oldest pending entry and the entry after its last-delivered one; entries older
than what every group needs are drained (`XTRIM MINID`, exact). A stream is drained only once
each of its required groups exists, so the proxy's stream is never emptied before both the
subscriber and the comparer have read it.

Safety limits (age, entries, bytes) bound a backlog whatever the groups: past them the oldest
entries go, first those every group was given (pending somewhere, counted by the reader as
`trimmed_unprocessed` if it reads them again), then those some group was never given: these
are counted as trimmed unread.

Stream ids are `<ms>-<seq>`, the milliseconds being the Redis server's clock at XADD: an age
limit is a MINID computed from the server's time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

StreamId = tuple[int, int]  # (milliseconds, sequence)
ZERO: StreamId = (0, 0)


def parse_id(value: bytes | str) -> StreamId:
    """b'1700000000000-3' -> (1700000000000, 3); '5' -> (5, 0)."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


def successor(value: StreamId) -> StreamId:
    """The smallest id after `value` (entries before it are `value` and older)."""
    return value[0], value[1] + 1


def backstop_maxlen(maxlen: int) -> int:
    """The cap the producers pass to XADD (MAXLEN ~): twice --stream-maxlen, so the drain (which
    counts what it trims unread) enforces the entry cap, and memory stays bounded even when no
    drain runs (no subscriber or comparer alive)."""
    return 2 * maxlen


@dataclass(frozen=True, slots=True)
class GroupPosition:
    """Where a consumer group is on a stream (XINFO GROUPS + XPENDING's summary)."""

    name: str
    last_delivered: StreamId
    oldest_pending: StreamId | None = None  # None: nothing delivered and unacknowledged

    @property
    def needs_from(self) -> StreamId:
        """The oldest entry this group may still read: everything before it is processed."""
        after = successor(self.last_delivered)
        return after if self.oldest_pending is None else min(self.oldest_pending, after)


@dataclass(frozen=True, slots=True)
class Limits:
    """Safety limits of one stream; None: no such limit."""

    max_age_s: float | None = None
    max_entries: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class TrimPlan:
    """What to delete from one stream, in this order (each a MINID: entries older go; None:
    nothing to do for that step)."""

    processed: StreamId | None  # every group has processed what is older: drained, uncounted
    aged_delivered: StreamId | None  # past the age limit, given to every group already
    aged_unread: StreamId | None  # past the age limit, some group never got them: counted
    delivered: StreamId | None  # given to every group: dropped first when over the entry cap
    keep: int | None  # the entry cap (MAXLEN =): what it removes beyond `delivered` is counted


def oldest_needed(groups: Sequence[GroupPosition], required: Collection[str]) -> StreamId | None:
    """The oldest id any group still needs: entries before it are processed by every group.
    None (drain nothing) while a required group does not exist yet, or no group exists."""
    names = {g.name for g in groups}
    if not groups or not set(required) <= names:
        return None
    return min(g.needs_from for g in groups)


def unread_from(groups: Sequence[GroupPosition], required: Collection[str]) -> StreamId:
    """The oldest id some group has never been given: entries from there on are unread by at
    least one group (everything, ZERO, while a required group does not exist)."""
    names = {g.name for g in groups}
    if not groups or not set(required) <= names:
        return ZERO
    return min(successor(g.last_delivered) for g in groups)


def entry_cap(limits: Limits, length: int, memory_bytes: int | None) -> int | None:
    """How many entries the stream may keep: --stream-maxlen, and the share of the entries that
    fits in --stream-max-bytes given the stream's (sampled) memory usage. None: no cap."""
    caps = []
    if limits.max_entries is not None:
        caps.append(limits.max_entries)
    if limits.max_bytes is not None and memory_bytes and length and memory_bytes > limits.max_bytes:
        caps.append(length * limits.max_bytes // memory_bytes)
    return min(caps) if caps else None


def plan(groups: Sequence[GroupPosition], required: Collection[str], limits: Limits, *,
         length: int, now_ms: int, memory_bytes: int | None = None) -> TrimPlan:
    """The trims for one stream, given its groups' positions, its length, its memory usage (when
    a bytes limit is set) and the Redis server's clock."""
    processed = oldest_needed(groups, required)
    unread = unread_from(groups, required)
    floor = processed or ZERO  # what the drain step already removes
    aged_delivered = aged_unread = None
    if limits.max_age_s is not None:
        cut: StreamId = (max(0, now_ms - int(limits.max_age_s * 1000)), 0)
        if min(cut, unread) > floor:
            aged_delivered = min(cut, unread)
        if cut > unread:
            aged_unread = cut
    keep = entry_cap(limits, length, memory_bytes)
    if keep is not None and length <= keep:
        keep = None  # under the cap now; what arrives meanwhile is the next pass's business
    delivered = unread if keep is not None and unread > floor else None
    return TrimPlan(processed, aged_delivered, aged_unread, delivered, keep)
