"""Which exchange documents are kept as evidence (pure).

Every exchange is counted in the rollups, whatever happens to its document. The document
(request, both answers, diff) is what an engineer opens to understand a class, and what
`shadow replay` re-sends; most of them say nothing the counts and a few examples do not.
When an exchange is decided, the keep policy says whether its document stays:

- a mismatch, by its class (signature): every one while the class has fewer than
  `per_class_hour` in that hour, then a reservoir-style sample: the k-th of the hour is kept
  with probability per_class_hour / k (a reservoir's inclusion probability), so an hour of K
  keeps about per_class_hour * (1 + ln(K / per_class_hour)): 20 of 20, ~66 of 200, ~250 of
  1,000,000. Kept documents are never evicted by the sample;
- errors (v2_error, compare_error), skipped, v1_only and v1_missing the same way, by
  (method, route, outcome);
- matches: the first of each (method, route) in each hour, then a fraction `matches`;
- always: the exchange that makes a class new or reopens it, and one whose request part has
  not arrived yet (a late request still has to name its route);
- mode "all" keeps every document.

"Random" is a hash of the exchange id: every replica and every re-delivery decides the
same. The hour is the exchange's own (its ts), like its rollup bucket. The counters of
exchanges seen per (hour, group) live in the store, updated in the decision's transaction.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shadow.model import CLASS_FIXED, MATCH, MISMATCH

KEEP_SAMPLED = "sampled"
KEEP_ALL = "all"
KEEP_MODES = (KEEP_SAMPLED, KEEP_ALL)
HOUR_S = 3600

GroupKey = tuple[int, str]  # the hour (unix seconds of its start), the group


@dataclass(frozen=True, slots=True)
class KeepPolicy:
    mode: str = KEEP_SAMPLED
    per_class_hour: int = 20  # documents kept per group and hour before sampling
    matches: float = 0.001  # fraction of matches kept (after the first of each route-hour)

    @property
    def keeps_all(self) -> bool:
        return self.mode == KEEP_ALL

    @classmethod
    def from_settings(cls, s: Any) -> KeepPolicy:
        """From the settings `keep`, `keep_per_class_hour` and `keep_matches`."""
        return cls(s.keep, s.keep_per_class_hour, s.keep_matches)


EVERYTHING = KeepPolicy(KEEP_ALL)


@dataclass(frozen=True, slots=True)
class Decided:
    """An exchange just given an outcome, as the policy sees it."""

    id: str
    ts: float | None
    method: str | None  # None: its request part has not arrived
    route: str | None
    outcome: str
    signature: str | None = None
    opens: bool = False  # it makes its class new, or reopens it


def hour_of(ts: float | None) -> int:
    return int(math.floor(ts / HOUR_S) * HOUR_S) if ts is not None else 0


def group_key(d: Decided) -> GroupKey | None:
    """The counter an exchange counts in; None: kept without counting (no request yet)."""
    if d.method is None:
        return None
    if d.outcome == MISMATCH and d.signature:
        return hour_of(d.ts), f"class {d.signature}"
    return hour_of(d.ts), f"{d.outcome} {d.method} {d.route or '?'}"


def unit(ident: str) -> float:
    """A uniform number in [0, 1) from an exchange id: the same everywhere, every time."""
    return int.from_bytes(hashlib.blake2b(ident.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big") / 2.0**64


def groups(decided: Iterable[Decided]) -> Counter[GroupKey]:
    """How many of `decided` count in each group (what the store adds to its counters)."""
    return Counter(key for d in decided if (key := group_key(d)) is not None)


@dataclass(slots=True)
class Choice:
    kept: set[str] = field(default_factory=set)  # exchange ids whose documents stay
    seen: Counter[GroupKey] = field(default_factory=Counter)  # to add to the counters


def choose(policy: KeepPolicy, decided: Sequence[Decided],
           seen: Mapping[GroupKey, int]) -> Choice:
    """Which of `decided` keep their documents, given the exchanges each group had counted
    in its hour before them (`seen`, from the store). Taken in id order (time order), so the
    same batch decides the same wherever it is decided."""
    out = Choice()
    if policy.keeps_all:
        out.kept = {d.id for d in decided}
        return out
    for d in sorted(decided, key=lambda d: d.id):
        key = group_key(d)
        if key is None:
            out.kept.add(d.id)
            continue
        out.seen[key] += 1
        k = seen.get(key, 0) + out.seen[key]  # this one is the k-th of its group this hour
        if d.opens or _keeps(policy, d, k):
            out.kept.add(d.id)
    return out


def _keeps(policy: KeepPolicy, d: Decided, k: int) -> bool:
    if d.outcome == MATCH:
        return k == 1 or unit(d.id) < policy.matches
    n = policy.per_class_hour
    return k <= n or unit(d.id) < n / k


def openers(hits: Iterable[tuple[str, str]], book: Mapping[str, str]) -> set[str]:
    """Of the mismatches (exchange id, signature) decided now, in order, the ones that make
    their class new (not in the class book) or reopen it (its status there is fixed): the
    first of each such signature."""
    out: set[str] = set()
    opened: set[str] = set()
    for ident, signature in hits:
        if signature in opened:
            continue
        if signature not in book or book[signature] == CLASS_FIXED:
            opened.add(signature)
            out.add(ident)
    return out

