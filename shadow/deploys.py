"""Deploy markers (pure): a release of V2 (or V1) marked at a time, with its version and a
note. They split the evidence into before and after a release: the verdict's default window
starts at the latest V2 deploy, so a bug fixed in that release stops counting against its
route once the fix is live, while the all-time figures still show it."""

from __future__ import annotations

import hashlib
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


AUTO_PREFIX = "auto-v2-"  # the id of a marker recorded from --v2-version-header


def version_of(headers: list[tuple[str, str]], name: str) -> str | None:
    """The version V2's answer carries in header `name` (--v2-version-header): its first
    value, trimmed, as text any store takes, at most MAX_TEXT characters; None without one."""
    lname = name.lower()
    value = next((v for k, v in headers if k.lower() == lname), None)
    if value is None or not value.strip():
        return None
    return value.strip().encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_TEXT]


def detected(version: str, ts: float, header: str) -> Deploy:
    """The V2 deploy marker recorded the first time V2's answers carry `version` in `header`,
    at `ts` (when V2 gave that answer). Its id is the version's own, so every comparer
    replica records the same marker, once."""
    digest = hashlib.sha256(version.encode("utf-8", "backslashreplace")).hexdigest()[:24]
    return deploy(AUTO_PREFIX + digest, ts, "v2", version,
                  f"detected: V2 answered with {header}: {version}"[:MAX_TEXT])


class FixedIn(TypedDict):
    """The V2 deploy a class marked fixed expects its fix in: a marker (id, version, ts),
    or only a version not marked yet (id and ts None: the marker, when it comes, says when)."""

    id: str | None
    version: str | None
    ts: float | None


def fixed_in(d: Deploy | None, version: str | None = None) -> FixedIn | None:
    """What a class marked fixed records: the deploy `d` (the latest V2 deploy at marking
    time, or the one of `version`), else `version` alone (no such marker yet), else None
    (no deploy known: the class reopens at its next mismatch, whenever it happened)."""
    if d is not None:
        return {"id": d["id"], "version": d.get("version"), "ts": d["ts"]}
    if version:
        return {"id": None, "version": version, "ts": None}
    return None


def reopens(fixed: FixedIn | None, due_ts: float | None, ts: float | None) -> bool:
    """Whether a mismatch received at `ts` reopens a class marked fixed that expects its fix
    in `fixed`, live from `due_ts` (None: that deploy is not marked yet): only one received
    after that deploy does (without a deploy, every mismatch does, as before)."""
    if fixed is None:
        return True
    if due_ts is None:
        return False  # the fix is not live yet: its mismatches are expected
    return ts is None or ts >= due_ts


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
