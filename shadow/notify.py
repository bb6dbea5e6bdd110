"""Notifications, the pure part: what is worth telling a team's chat (or any webhook receiver),
when, and in which shape. comparer/notifier.py sends them.

Four events, each a `Notice`:

- `new_class`: a mismatch class nobody has seen before (its first exchange was just recorded);
- `reopened_class`: a class marked fixed is seen again;
- `verdict_changed`: a route became ready for cutover, or stopped being ready;
- `pipeline_behind` / `pipeline_caught_up`: a consumer group fell more than --notify-behind-s
  behind its stream, and later caught up again.

Debounced: at most one notice per class (and per route, per stream and group) per `DEBOUNCE_S`.
For states (a route's readiness, a group being behind) a change that is undone within the
window is never told, and the state in force when the window ends is (`Changes`): the last
message about a route always tells its current state.

Two body formats (`--notify-format`): `slack`, an incoming-webhook message `{"text": ...}`
that Slack, Mattermost, Rocket.Chat, Discord's /slack endpoints and Teams' workflows take;
`json`, one object for generic receivers: `{"event", "text", "time", ...}` with the event's
fields (`payload`).
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import orjson

from shadow.errors import ConfigError
from shadow.model import CLASS_FIXED, CLASS_NEW

NEW_CLASS = "new_class"
REOPENED_CLASS = "reopened_class"
VERDICT_CHANGED = "verdict_changed"
PIPELINE_BEHIND = "pipeline_behind"
PIPELINE_CAUGHT_UP = "pipeline_caught_up"
EVENTS = (NEW_CLASS, REOPENED_CLASS, VERDICT_CHANGED, PIPELINE_BEHIND, PIPELINE_CAUGHT_UP)

SLACK = "slack"
JSON = "json"
FORMATS = (SLACK, JSON)

DEBOUNCE_S = 600.0  # at most one notice per class, route or stream and group per 10 minutes


# ---------------------------------------------------------------- settings' checks

def endpoint(url: str) -> str:
    """A webhook URL as logs and errors show it: scheme and host only (the path of a Slack
    incoming webhook is its token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if _port(url) is not None else ""
    return f"{parts.scheme}://{host}{port}/***"


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def parse_urls(value: str | None) -> list[str]:
    """--notify-url: comma-separated http(s) URLs -> the list, or a ConfigError that never
    quotes a URL's path or credentials."""
    urls = [item.strip() for item in (value or "").split(",") if item.strip()]
    for i, url in enumerate(urls, 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = f"{parts.scheme}://..." if parts.scheme else "a value without http(s)://"
            raise ConfigError(f"--notify-url: URL #{i} must be an http:// or https:// URL with a "
                              f"host (got {shown}); separate several URLs with commas")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ConfigError(f"--notify-url: URL #{i} ({endpoint(url)}) has a bad port") from None
    return urls


def check_urls(value: str, flag: str) -> None:
    parse_urls(value)


def check_format(value: str, flag: str) -> None:
    if value not in FORMATS:
        raise ConfigError(f"{flag}: expected slack (incoming-webhook JSON {{\"text\": ...}}) or "
                          f"json (one object per event, for generic receivers), got {value!r}")


# ---------------------------------------------------------------- notices

@dataclass(frozen=True, slots=True)
class Notice:
    event: str  # one of EVENTS
    key: str  # what the debounce counts by: class:SIG, route:METHOD ROUTE, behind:STREAM GROUP
    text: str  # one line for people
    ts: float  # unix seconds
    fields: dict[str, Any] = field(default_factory=dict)  # the json format's event fields


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def class_notice(signature: str, method: str, route: str, paths: Iterable[str],
                 v1_status: int | None, v2_status: int | None, example: str, ts: float, *,
                 reopened: bool) -> Notice:
    """A mismatch class just opened (`reopened`: it was marked fixed)."""
    shown = list(paths)
    where = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    status = f" (V1 {v1_status}, V2 {v2_status})" if v1_status != v2_status else ""
    text = (f"shadow: {'mismatch class marked fixed is back' if reopened else 'new mismatch class'}"
            f" {signature} on {method} {route}{status}: {where or 'no differing path'}; "
            f"example exchange {example}")
    return Notice(REOPENED_CLASS if reopened else NEW_CLASS, f"class:{signature}", text, ts,
                  {"signature": signature, "method": method, "route": route, "paths": shown,
                   "v1_status": v1_status, "v2_status": v2_status, "example": example,
                   "class_status": CLASS_NEW})


def verdict_notice(method: str, route: str, ready: bool, reason: str, ts: float) -> Notice:
    text = (f"shadow: {method} {route} is now ready for cutover" if ready else
            f"shadow: {method} {route} is no longer ready for cutover: {reason}")
    return Notice(VERDICT_CHANGED, f"route:{method} {route}", text, ts,
                  {"method": method, "route": route, "ready": ready, "was_ready": not ready,
                   "reason": reason})


def behind_notice(stream: str, group: str, behind_s: float, threshold_s: float, ts: float, *,
                  behind: bool) -> Notice:
    if behind:
        text = (f"shadow: the {group} are {behind_s:.0f} s behind on {stream} (more than "
                f"{threshold_s:g} s): add replicas, or check V2 and the store")
    else:
        text = f"shadow: the {group} caught up on {stream} ({behind_s:.0f} s behind)"
    return Notice(PIPELINE_BEHIND if behind else PIPELINE_CAUGHT_UP, f"behind:{stream} {group}",
                  text, ts, {"stream": stream, "group": group, "behind_s": round(behind_s, 3),
                             "threshold_s": threshold_s})


def _slack_escape(text: str) -> str:
    """Slack's three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notice: Notice, fmt: str) -> bytes:
    """The request body for a receiver: `slack` -> {"text": ...}; `json` -> {"event", "text",
    "time" (ISO 8601 UTC), "ts" (unix seconds), and the event's fields}:

    - new_class, reopened_class: signature, method, route, paths, v1_status, v2_status,
      example (an exchange id), class_status;
    - verdict_changed: method, route, ready, was_ready, reason;
    - pipeline_behind, pipeline_caught_up: stream, group, behind_s, threshold_s."""
    if fmt == SLACK:
        return orjson.dumps({"text": _slack_escape(notice.text)})
    return orjson.dumps({"event": notice.event, "text": notice.text, "time": _iso(notice.ts),
                         "ts": notice.ts, **notice.fields})


# ---------------------------------------------------------------- when to tell

class Debounce:
    """At most one notice per key per `every_s` (times: any clock, e.g. monotonic)."""

    def __init__(self, every_s: float = DEBOUNCE_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        self._last[key] = now
        if len(self._last) > 10_000:  # forget what can no longer hold anything back
            self._last = {k: t for k, t in self._last.items() if now - t < self.every_s}
        return True


K = TypeVar("K", bound=Hashable)


class Changes(Generic[K]):
    """Per key, the state last told; `update` returns the keys whose state differs from it,
    once the debounce allows (a change undone within the window is never told; the state in
    force when it ends is). Keys never told count as `default` (None: the first update is a
    baseline, told nothing, and keys that show up later count as `later_default`)."""

    def __init__(self, every_s: float = DEBOUNCE_S, *, default: bool | None = None,
                 later_default: bool = False) -> None:
        self._told: dict[K, bool] = {}
        self._at: dict[K, float] = {}
        self._every_s = every_s
        self._default = default
        self._later_default = later_default
        self._started = default is not None

    def update(self, states: Mapping[K, bool], now: float) -> list[tuple[K, bool]]:
        if not self._started:
            self._started = True
            self._told.update(states)
            return []
        out: list[tuple[K, bool]] = []
        fallback = self._later_default if self._default is None else self._default
        for key, state in states.items():
            told = self._told.setdefault(key, fallback)
            if state == told:
                continue
            at = self._at.get(key)
            if at is not None and now - at < self._every_s:
                continue
            self._told[key], self._at[key] = state, now
            out.append((key, state))
        return out


class ClassBook:
    """Which mismatch classes exist and which are marked fixed, as the comparer knows them: a
    sighting of an unknown class makes it new, of a fixed one reopens it. Loaded from the store
    at start and refreshed from it (`begin_refresh`/`refresh`), without losing what was seen
    while the store was being read."""

    def __init__(self) -> None:
        self._status: dict[str, str] = {}
        self._seen_at: dict[str, int] = {}  # signature -> generation it last changed here
        self._generation = 0

    def __len__(self) -> int:
        return len(self._status)

    def seen(self, signature: str) -> str | None:
        """A recorded mismatch of this class: NEW_CLASS, REOPENED_CLASS or None."""
        status = self._status.get(signature)
        if status is not None and status != CLASS_FIXED:
            return None
        self._status[signature] = CLASS_NEW
        self._seen_at[signature] = self._generation
        return NEW_CLASS if status is None else REOPENED_CLASS

    def begin_refresh(self) -> int:
        """Call before reading the store; pass what it returns to `refresh`."""
        self._generation += 1
        return self._generation

    def refresh(self, token: int, rows: Iterable[tuple[str, str, bool]]) -> list[str]:
        """Merge the store's classes (signature, status, reopened) as read after
        `begin_refresh` returned `token`; classes seen here since are left as they are. Returns
        the classes marked fixed here that the store says were reopened (by another comparer,
        or before the mark reached this book)."""
        reopened = []
        for signature, status, was_reopened in rows:
            if self._seen_at.get(signature, -1) >= token:
                continue  # seen here while the store was being read: newer than the row
            before = self._status.get(signature)
            if before == CLASS_FIXED and status == CLASS_NEW and was_reopened:
                reopened.append(signature)
            self._status[signature] = status
        return reopened
