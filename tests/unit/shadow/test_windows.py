"""Report windows (shadow/windows.py): how since/until are written, and minute buckets."""

from __future__ import annotations

import pytest

from shadow.windows import (
    ALL_TIME,
    BUCKET_S,
    Window,
    WindowError,
    bucket_of,
    parse_instant,
    parse_window,
    window,
)

NOW = 1_796_210_445.5  # 2026-12-02T11:20:45.5Z
DAY = 1_796_169_600  # 2026-12-02T00:00:00Z


@pytest.mark.parametrize("text, expected", [
    ("2026-12-02T11:00:00Z", DAY + 11 * 3600),
    ("2026-12-02T11:00:00+00:00", DAY + 11 * 3600),
    ("2026-12-02T11:00:00", DAY + 11 * 3600),  # naive: UTC
    ("2026-12-02T12:00:00+01:00", DAY + 11 * 3600),  # an explicit offset is honoured
    ("2026-12-02", DAY),
    ("90s", NOW - 90), ("15m", NOW - 900), ("24h", NOW - 86400), ("7d", NOW - 7 * 86400),
    ("2w", NOW - 14 * 86400), ("1.5h", NOW - 5400), (" 15m ", NOW - 900),
    ("1796212800", 1_796_212_800),
])
def test_accepted_forms(text: str, expected: float) -> None:
    assert parse_instant(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "15 minutes", "-5m", "2026-13-01", "nan",
                                  "inf", "5y"])
def test_a_bad_value_names_itself_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(WindowError) as e:
        parse_instant(text, NOW, "until")
    message = str(e.value)
    assert message.startswith("until: expected") and repr(text.strip()) in message
    for form in ("2026-12-02T11:00:00Z", "+00:00", "2026-12-02", "15m", "24h", "7d"):
        assert form in message
    assert isinstance(e.value, ValueError)


def test_since_rounds_down_and_until_rounds_up_to_the_minute() -> None:
    assert BUCKET_S == 60
    assert bucket_of(DAY + 59.999) == DAY and bucket_of(DAY + 60) == DAY + 60
    assert window(DAY + 30, DAY + 90) == Window(DAY, DAY + 120)
    assert window(DAY, DAY + 60) == Window(DAY, DAY + 60)  # boundaries stay
    assert window(DAY + 30, DAY + 30) == Window(DAY, DAY + 60)  # one instant: its minute
    w = window(DAY + 60, DAY + 120)
    assert [w.holds(DAY + t) for t in (59.9, 60, 119.9, 120)] == [False, True, True, False]
    assert window() == ALL_TIME and ALL_TIME.all_time and ALL_TIME.holds(0)
    assert window(None, DAY + 1) == Window(None, DAY + 60)


def test_parse_window_and_what_a_report_says_about_it() -> None:
    w = parse_window("2026-12-02T11:00:30Z", "5m", NOW)
    assert w == Window(DAY + 11 * 3600, DAY + 11 * 3600 + 16 * 60)  # until 11:15:45 -> 11:16
    doc = w.doc()
    assert (doc["since"], doc["until"]) == ("2026-12-02T11:00:00Z", "2026-12-02T11:16:00Z")
    assert doc["bucket_s"] == 60 and "since rounds down and until rounds up" in doc["rounding"]
    assert parse_window(None, "", NOW) == ALL_TIME
    assert ALL_TIME.doc()["since"] is None and ALL_TIME.doc()["until"] is None
    with pytest.raises(WindowError, match="since is after until"):
        parse_window("1h", "2h", NOW)


# ---- compaction: older buckets are hours and days ----

def test_compaction_boundaries_follow_the_clock() -> None:
    from shadow.windows import DAY_S, HOUR_S, TEN_MIN_S, fold_marks

    marks = fold_marks(NOW)  # 11:20:45 on DAY
    assert marks == {TEN_MIN_S: DAY + 10 * 3600 + 50 * 60, HOUR_S: DAY + 9 * 3600,
                     DAY_S: DAY - 86400}
    assert fold_marks(NOW + 3600)[HOUR_S] == DAY + 10 * 3600
    assert fold_marks(NOW + 13 * 3600)[DAY_S] == DAY  # past midnight + a day: the day before


def test_buckets_before_the_marks_are_hours_and_days() -> None:
    from shadow.windows import DAY_S, HOUR_S, bucket_in, span_at

    marks = {HOUR_S: DAY + 9 * 3600, DAY_S: DAY - 86400}
    assert span_at(DAY + 9 * 3600, marks) == 60  # on the boundary: minutes from there on
    assert span_at(DAY + 9 * 3600 - 1, marks) == HOUR_S
    assert span_at(DAY - 86400 - 1, marks) == DAY_S
    assert bucket_in(DAY + 9 * 3600 + 75, marks) == DAY + 9 * 3600 + 60
    assert bucket_in(DAY + 8 * 3600 + 75, marks) == DAY + 8 * 3600
    assert bucket_in(DAY - 86400 - 5, marks) == DAY - 2 * 86400
    assert bucket_in(DAY + 75, {}) == DAY + 60


def test_a_window_edge_in_a_compacted_stretch_rounds_to_its_hour_or_day() -> None:
    from shadow.windows import DAY_S, HOUR_S, coarsen

    marks = {HOUR_S: DAY + 9 * 3600, DAY_S: DAY - 86400}
    recent = window(DAY + 10 * 3600 + 90, NOW)
    assert coarsen(recent, marks) == recent  # minutes: as it was
    w = coarsen(window(DAY + 3 * 3600 + 90, DAY + 5 * 3600 + 1), marks)
    assert w == Window(DAY + 3 * 3600, DAY + 6 * 3600, HOUR_S, HOUR_S)
    doc = w.doc()
    assert (doc["since_bucket_s"], doc["until_bucket_s"], doc["bucket_s"]) == (3600, 3600, 3600)
    assert "10 minutes" in doc["rounding"] and "the day (UTC)" in doc["rounding"]
    w = coarsen(window(DAY - 2 * 86400 + 5, NOW), marks)  # 7d-like: the day, then minutes
    assert w == Window(DAY - 2 * 86400, bucket_ceil_minute(NOW), DAY_S, 60)
    assert w.doc()["bucket_s"] == DAY_S
    # until on a boundary stays; until just past the hour mark is in minutes
    assert coarsen(window(None, DAY + 9 * 3600), marks) == Window(None, DAY + 9 * 3600, 60, HOUR_S)
    assert coarsen(window(None, DAY + 9 * 3600 + 1), marks) == Window(None, DAY + 9 * 3600 + 60)
    assert coarsen(window(None, DAY + 8 * 3600 + 1), marks).until == DAY + 9 * 3600
    assert coarsen(ALL_TIME, marks) == ALL_TIME
    assert coarsen(w, marks) == w  # once is enough
    three = {600: DAY + 10 * 3600 + 50 * 60, **marks}  # and 10 minutes before 10:50
    assert coarsen(window(DAY + 10 * 3600 + 125, NOW), three).since == DAY + 10 * 3600
    assert coarsen(window(DAY + 10 * 3600 + 125, NOW), three).since_bucket_s == 600


def bucket_ceil_minute(ts: float) -> int:
    return -int(-ts // 60) * 60
