"""When a dropped exchange's tombstone may go (pure): the streams' horizon.

The keep policy leaves a tombstone (id, time of its latest part) for each exchange whose
document it dropped, so that a part of it arriving later (re-delivered, or late) is never
stored or counted again. Parts arrive only through the streams, and an entry stays in its
stream until every consumer group has processed it (shadow.drain). So a tombstone is needed
only while a part of its exchange can still arrive:

- the request and V1's answer come from the proxy's stream (v1): once the oldest entry left
  there is newer than the tombstone's time (plus `margin_s`: how late the proxy may publish
  an event, and how far the clocks of the proxy, subscriber and Redis hosts may disagree),
  every v1 entry of the exchange has been processed by every group;
- V2's answer (the candidate) comes from the candidates' stream (v2), published by the
  subscriber in the same MULTI as its acknowledgement of the request: so every candidate of
  those requests was published before the moment the v1 stream was seen so (`checked_at`,
  the Redis server's clock); once the oldest v2 entry is newer than that (or v2 is empty),
  every such candidate has been processed too.

Hence two phases: a look at the streams records a mark (cut = oldest v1 entry - margin,
checked_at = the server's time after that read); a look that finds every v2 stream empty or
beginning after the mark's checked_at (the same look or a later one) lets the tombstones of
exchanges whose latest part is before the cut go. With sharded streams, per shard: the cut is
the lowest over the shards, and every shard's v2 must have passed its own checked_at (its own
node's clock).

A tombstone of an exchange decided without V1's answer (expired: v1_missing, or a skip without
it) is not covered: V1's answer may still be on its way (the proxy publishes it when V1
finishes answering, however long that takes). Those go with the documents' age limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

MARGIN_S = 60.0  # default: --tombstone-margin-s
MAX_MARKS = 64  # marks waiting for their second phase (a newer one replaces the newest)


@dataclass(frozen=True, slots=True)
class Look:
    """One shard's streams as one look saw them, in the Redis server's milliseconds (stream
    ids are its clock at XADD). Read in this order: `before_ms`, the v1 stream, `after_ms`,
    the v2 stream."""

    before_ms: int  # the server's time before reading the v1 stream
    v1_oldest_ms: int | None  # the oldest entry of the v1 stream (None: empty)
    after_ms: int  # the server's time after reading it
    v2_oldest_ms: int | None  # the oldest entry of the v2 stream (None: empty)


@dataclass(frozen=True, slots=True)
class Mark:
    """Phase one: tombstones of parts before `cut_ms` may go once every shard's v2 stream
    starts after its `checked_ms`."""

    cut_ms: int
    checked_ms: tuple[int, ...]  # per shard


def mark(looks: Sequence[Look], margin_s: float) -> Mark:
    """The mark of one look at every shard."""
    oldest = min(look.before_ms if look.v1_oldest_ms is None else look.v1_oldest_ms
                 for look in looks)
    return Mark(oldest - int(margin_s * 1000), tuple(look.after_ms for look in looks))


def passed(m: Mark, looks: Sequence[Look]) -> bool:
    """Whether every candidate published before the mark was taken has been processed: each
    shard's v2 stream empty, or beginning after the mark's time there."""
    return len(m.checked_ms) == len(looks) and all(
        look.v2_oldest_ms is None or look.v2_oldest_ms > checked
        for look, checked in zip(looks, m.checked_ms, strict=True))


@dataclass(slots=True)
class Horizon:
    """The marks between looks (one Horizon per process: the housekeeping's)."""

    margin_s: float = MARGIN_S
    max_marks: int = MAX_MARKS
    marks: list[Mark] = field(default_factory=list)  # oldest first

    def step(self, looks: Sequence[Look]) -> float | None:
        """Record this look (one per shard, in shard order) and return the cut it proves, in
        unix seconds: tombstones of exchanges whose latest part came before it may go (None:
        none proven yet)."""
        if not looks:
            return None
        if self.marks and len(self.marks[0].checked_ms) != len(looks):
            self.marks.clear()  # another shard count: start over
        if len(self.marks) >= self.max_marks:
            self.marks.pop()  # the newest waiting one gives way to this one
        self.marks.append(mark(looks, self.margin_s))
        done = [i for i, m in enumerate(self.marks) if passed(m, looks)]
        if not done:
            return None
        cut = max(self.marks[i].cut_ms for i in done)
        del self.marks[:done[-1] + 1]  # what an older mark proves, a newer one proves too
        return cut / 1000


def latest(*times: float | None) -> float:
    """A tombstone's time: the latest of its exchange's parts (the request's arrival, V1's and
    V2's answers' events), which the horizon's cut is compared with."""
    return max((t for t in times if t is not None), default=0.0)
