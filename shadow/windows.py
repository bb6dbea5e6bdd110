"""Report windows (pure): `since`/`until` as people write them, and the minute buckets the
rollups count in.

Every exchange is counted in the bucket of its `ts` (when the proxy received the request),
floored to the minute. A window is exact to the bucket: `since` rounds DOWN to the start
of its minute and `until` rounds UP to the end of its minute, so a window holds every
minute it touches, whole, and [since, until) never cuts a minute in two. Bounds on a
minute boundary stay as they are: `since=11:00:00Z` starts with the 11:00 minute and
`until=11:00:00Z` ends before it, like the listings' `ts >= since` and `ts < until`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from shadow.errors import ShadowError

BUCKET_S = 60  # the rollups' bucket: one minute

ACCEPTED = ("unix seconds, an ISO 8601 time in UTC (2026-12-02T11:00:00Z, "
            "2026-12-02T11:00:00+00:00 or the date 2026-12-02) or a duration ago (90s, 15m, 24h, "
            "7d, 2w)")
ROUNDING = "since rounds down and until rounds up to the minute (the rollups' bucket)"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class WindowError(ShadowError, ValueError):
    """A bad `since`/`until`: the message names the value and the accepted forms."""


def parse_instant(text: str, now: float, name: str = "since") -> float:
    """Unix seconds from an ISO 8601 time (a naive one is UTC; an explicit offset is
    honoured), a date (its midnight UTC), a duration ago (`15m` is `now` - 900 s: units s, m,
    h, d, w) or unix seconds. Raises WindowError naming `name` and the accepted forms."""
    text = text.strip()
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
    rounding: str


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) in unix seconds, both on bucket boundaries; None: open on that side.
    Build it with `window()` or `parse_window()`, which round the bounds."""

    since: int | None = None
    until: int | None = None

    @property
    def all_time(self) -> bool:
        return self.since is None and self.until is None

    def holds(self, ts: float) -> bool:
        """Whether an exchange received at `ts` is counted in this window."""
        b = bucket_of(ts)
        return (self.since is None or b >= self.since) and (self.until is None or b < self.until)

    def doc(self) -> WindowDoc:
        return {"since": iso(self.since), "until": iso(self.until), "since_ts": self.since,
                "until_ts": self.until, "bucket_s": BUCKET_S, "rounding": ROUNDING}


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
