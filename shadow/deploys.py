"""Deploy markers (pure): a release of V2 (or V1) marked at a time, with its version and a
note. They split the evidence into before and after a release: the verdict's default window
starts at the latest V2 deploy, so a bug fixed in that release stops counting against its
route once the fix is live, while the all-time figures still show it."""

from __future__ import annotations

from typing import TypedDict

from shadow.errors import ShadowError
from shadow.windows import Window, bucket_ceil, iso

TARGETS = ("v2", "v1")
MAX_TEXT = 500  # characters of a version or a note


class DeployError(ShadowError, ValueError):
    """A deploy marker that cannot be recorded: the message says what to change."""


class Deploy(TypedDict):
    id: str  # time-ordered (shadow.ids.new_id)
    ts: float  # when it went live (unix seconds)
    at: str | None  # the same, ISO 8601 UTC
    target: str  # one of TARGETS
    version: str | None
    note: str | None


def deploy(ident: str, ts: float, target: str, version: str | None = None,
           note: str | None = None) -> Deploy:
    """A checked deploy marker: a known target, a version and a note of at most MAX_TEXT
    characters each (empty: none)."""
    if target not in TARGETS:
        raise DeployError(f"deploy target must be one of {', '.join(TARGETS)}, not {target!r}")
    for name, text in (("version", version), ("note", note)):
        if text is not None and not isinstance(text, str):
            raise DeployError(f"deploy {name} must be text")
        if text is not None and len(text) > MAX_TEXT:
            raise DeployError(f"deploy {name} is longer than {MAX_TEXT} characters")
    if not ts == ts or ts <= 0:  # NaN or before the epoch
        raise DeployError("deploy time must be a time after 1970")
    return {"id": ident, "ts": float(ts), "at": iso(ts), "target": target,
            "version": version or None, "note": note or None}


def since_deploy(d: Deploy) -> Window:
    """The window after a deploy: from the first whole minute after it went live (a window
    is exact to the minute; the minute it went live in holds answers from before it)."""
    return Window(bucket_ceil(d["ts"]), None)


def round_up(w: Window, start: int) -> Window:
    """`w` as the store resolved it (an edge in a compacted stretch rounded down to its hour
    or day) with `since` moved up to the first of its buckets that starts at or after
    `start`: a window after a deploy never holds answers from before it."""
    if w.since is None or w.since >= start:
        return w
    span = w.since_bucket_s
    return Window(-(-start // span) * span, w.until, span, w.until_bucket_s)


def describe(d: Deploy) -> str:
    """For people: 'V2 deploy 2.4.1 at 2026-12-02T11:00:00Z (note)'."""
    text = f"{d['target'].upper()} deploy"
    if d.get("version"):
        text += f" {d['version']}"
    text += f" at {d['at']}"
    if d.get("note"):
        text += f" ({d['note']})"
    return text
