"""Report windows (pure): `since`/`until` as people write them, and the minute buckets the
rollups count in.

Every exchange is counted in the bucket of its `ts` (when the proxy received the request),
floored to the minute. A window is exact to the bucket: `since` rounds DOWN to the start
of its minute and `until` rounds UP to the end of its minute, so a window holds every
minute it touches, whole, and [since, until) never cuts a minute in two. Bounds on a
minute boundary stay as they are: `since=11:00:00Z` starts with the 11:00 minute and
`until=11:00:00Z` ends before it, like the listings' `ts >= since` and `ts < until`.

Older buckets are compacted (FOLDS), so that any window reads a few dozen buckets: minutes
older than 30 minutes are folded into their 10 minutes, those older than 2 hours into their
hour, hours older than a day into their day (UTC). A bucket's row then counts its whole 10
minutes, hour or day, so a window edge that falls in a compacted stretch rounds to that
bucket instead (`coarsen`): still exact to the bucket, and the report's window says the
rounding it got (a 1h window is exact to 10 minutes, 24h to the hour, 7d to the day).
Whatever has been folded, a sum over whole buckets is the same, so compaction changes no
report for windows aligned to the coarser bucket, nor for all time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from shadow.errors import ShadowError

BUCKET_S = 60  # the rollups' bucket: one minute
TEN_MIN_S = 600
HOUR_S = 3600
DAY_S = 86400
# Compaction levels, finest first: (span of the coarser bucket, how long the finer buckets
# are kept before they are folded into it).
FOLDS: tuple[tuple[int, float], ...] = (
    (TEN_MIN_S, 30 * 60.0), (HOUR_S, 2 * 3600.0), (DAY_S, 86400.0))

Marks = Mapping[int, int]
"""Per coarser span (HOUR_S, DAY_S), a boundary: the buckets before it are (or count as)
that coarse. Boundaries are multiples of their span."""

ACCEPTED = ("unix seconds, an ISO 8601 time in UTC (2026-12-02T11:00:00Z, "
            "2026-12-02T11:00:00+00:00 or the date 2026-12-02) or a duration ago (90s, 15m, 24h, "
            "7d, 2w)")
ROUNDING = ("since rounds down and until rounds up to the rollups' bucket: the minute for the "
            "last 30 minutes, then 10 minutes for the last 2 hours, then the hour for the last "
            "day, then the day (UTC), as older buckets are compacted (since_bucket_s, "
            "until_bucket_s)")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class WindowError(ShadowError, ValueError):
    """A bad `since`/`until`: the message names the value and the accepted forms."""


# The times a window edge may be: from 1970 on, and far enough before the year 10000 that
# rounding up to a day still gives a date (1e300 or 99999999w would overflow every report).
MIN_TS = 0.0
MAX_TS = 253_402_128_000.0  # 9999-12-30T00:00:00Z


def parse_instant(text: str, now: float, name: str = "since") -> float:
    """Unix seconds from an ISO 8601 time (a naive one is UTC; an explicit offset is
    honoured), a date (its midnight UTC), a duration ago (`15m` is `now` - 900 s: units s, m,
    h, d, w) or unix seconds, between MIN_TS and MAX_TS. Raises WindowError naming `name`
    and the accepted forms."""
    value = _instant(text.strip(), now, name)
    if not MIN_TS <= value < MAX_TS:
        raise WindowError(f"{name}: expected a time from 1970 to 9999 ({ACCEPTED}), got "
                          f"{text.strip()!r}")
    return value


def _instant(text: str, now: float, name: str) -> float:
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise WindowError(f"{name}: expected {ACCEPTED}, got {text!r}")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(f"{name}: expected {ACCEPTED}, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def bucket_of(ts: float) -> int:
    """The start (unix seconds) of the minute `ts` falls in."""
    return math.floor(ts / BUCKET_S) * BUCKET_S


def bucket_ceil(ts: float) -> int:
    """The first bucket boundary at or after `ts`."""
    return math.ceil(ts / BUCKET_S) * BUCKET_S


def floor_to(ts: float, span: int) -> int:
    return math.floor(ts / span) * span


def span_at(ts: float, marks: Marks) -> int:
    """The bucket span at `ts`: the coarsest span whose boundary is after it, else a minute."""
    return max((span for span, below in marks.items() if ts < below), default=BUCKET_S)


def bucket_in(ts: float, marks: Marks) -> int:
    """The start of the bucket `ts` is counted in, buckets before `marks` being coarser."""
    return floor_to(ts, span_at(ts, marks))


def fold_marks(now: float) -> dict[int, int]:
    """The boundaries compaction moves to at `now` (FOLDS): per span, the start of the span
    that holds now minus what is kept finer (30 minutes of minutes, 2 hours of 10 minutes,
    a day of hours)."""
    return {span: floor_to(now - kept, span) for span, kept in FOLDS}


def coarsen(w: Window, marks: Marks) -> Window:
    """`w` with each edge rounded to the bucket of the stretch it falls in (since down, until
    up): what the rollups can answer exactly once the buckets before `marks` are compacted."""
    since, until, lo, hi = w.since, w.until, BUCKET_S, BUCKET_S
    if since is not None:
        lo = span_at(since, marks)
        since = floor_to(since, lo)
    if until is not None:
        hi = span_at(until - BUCKET_S, marks)  # the stretch of the window's last minute
        until = math.ceil(until / hi) * hi
    return Window(since, until, lo, hi)


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (`2026-12-02T11:00:00Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class WindowDoc(TypedDict):
    """What a report says about the window it covers (None: open on that side)."""

    since: str | None
    until: str | None
    since_ts: int | None
    until_ts: int | None
    bucket_s: int
    since_bucket_s: int
    until_bucket_s: int
    rounding: str


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) in unix seconds, both on bucket boundaries; None: open on that side.
    Build it with `window()` or `parse_window()`, which round the bounds."""

    since: int | None = None
    until: int | None = None
    since_bucket_s: int = BUCKET_S  # the bucket `since` was rounded to (coarsen)
    until_bucket_s: int = BUCKET_S

    @property
    def all_time(self) -> bool:
        return self.since is None and self.until is None

    def holds(self, ts: float) -> bool:
        """Whether an exchange received at `ts` is counted in this window."""
        b = bucket_of(ts)
        return (self.since is None or b >= self.since) and (self.until is None or b < self.until)

    def doc(self) -> WindowDoc:
        return {"since": iso(self.since), "until": iso(self.until), "since_ts": self.since,
                "until_ts": self.until,
                "bucket_s": max(self.since_bucket_s, self.until_bucket_s),
                "since_bucket_s": self.since_bucket_s, "until_bucket_s": self.until_bucket_s,
                "rounding": ROUNDING}


ALL_TIME = Window()


def window(since: float | None = None, until: float | None = None) -> Window:
    """The window from unix-second bounds: `since` rounded down, `until` rounded up to the
    bucket."""
    lo = None if since is None else bucket_of(since)
    hi = None if until is None else bucket_ceil(until)
    if lo is not None and hi is not None and lo > hi:
        raise WindowError("since is after until")
    return Window(lo, hi)


def parse_window(since: str | None, until: str | None, now: float) -> Window:
    """The window a report was asked for (`since`/`until` as given, None or empty: open)."""
    lo = parse_instant(since, now, "since") if since else None
    hi = parse_instant(until, now, "until") if until else None
    if lo is not None and hi is not None and lo > hi:
        raise WindowError("since is after until")
    return window(lo, hi)
