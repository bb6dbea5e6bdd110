"""Deploy markers, the pure part (shadow/deploys.py): a version read from V2's answers makes
one marker per version whoever records it, and a class marked fixed reopens only for a
mismatch received after the deploy it expects its fix in."""

from __future__ import annotations

from shadow.deploys import MAX_TEXT, deploy, detected, fixed_in, reopens, version_of

T0 = 1_800_000_000.0


def test_the_version_of_an_answer() -> None:
    headers = [("Content-Type", "application/json"), ("x-version", " 2.4.1 "), ("X-Version", "9")]
    assert version_of(headers, "X-Version") == "2.4.1"  # the first, any case, trimmed
    assert version_of(headers, "X-Build") is None
    assert version_of([("X-Version", "  ")], "X-Version") is None
    assert version_of([("X-Version", "v" * 900)], "X-Version") == "v" * MAX_TEXT
    odd = version_of([("X-Version", b"\xff1".decode("utf-8", "surrogateescape"))], "X-Version")
    assert odd == "\\udcff1"


def test_a_detected_deploy_has_its_version_s_own_id() -> None:
    first = detected("2.4.1", T0, "X-Version")
    again = detected("2.4.1", T0 + 30, "X-Version")  # another replica, a moment later
    other = detected("2.4.2", T0, "X-Version")
    assert first["id"] == again["id"] != other["id"]
    assert first["id"].startswith("auto-v2-")
    assert (first["target"], first["version"], first["ts"]) == ("v2", "2.4.1", T0)
    assert first["note"] == "detected: V2 answered with X-Version: 2.4.1"


def test_a_class_marked_fixed_reopens_only_after_the_deploy_of_its_fix() -> None:
    d = deploy("D", T0, "v2", "2.5")
    assert fixed_in(d) == {"id": "D", "version": "2.5", "ts": T0}
    assert fixed_in(None, "2.6") == {"id": None, "version": "2.6", "ts": None}
    assert fixed_in(None) is None
    assert reopens(fixed_in(d), T0, T0 + 1) is True
    assert reopens(fixed_in(d), T0, T0) is True
    assert reopens(fixed_in(d), T0, T0 - 1) is False  # received before the fix went live
    assert reopens(fixed_in(None, "2.6"), None, T0 + 10**6) is False  # 2.6 not deployed yet
    assert reopens(fixed_in(None, "2.6"), T0 + 50, T0 + 60) is True  # now it is
    assert reopens(None, None, T0) is True  # no deploy known: as before, any mismatch
