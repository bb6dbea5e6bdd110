"""Window edges out of any report's range are a clear WindowError, never an overflow deep in
a report (found by the reports API's contract test: since=1e300 was a 500)."""

from __future__ import annotations

import pytest

from shadow.windows import MAX_TS, WindowError, coarsen, iso, parse_instant, parse_window

NOW = 1_796_212_800.0
DAY_S = 86_400


@pytest.mark.parametrize("text", ["1e300", "-1e300", "1e18", "-1", "99999999999999w",
                                  "0001-01-01", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59",
                                  "9999-12-30"])
def test_times_out_of_range_are_refused_by_name(text: str) -> None:
    with pytest.raises(WindowError, match=r"^since: expected a time from 1970 to 9999 .*15m"):
        parse_instant(text, NOW)


@pytest.mark.parametrize("text", ["0", "1970-01-01", "9999-12-29T23:59:59Z", "1w"])
def test_the_range_ends_are_accepted_and_every_report_can_show_them(text: str) -> None:
    ts = parse_instant(text, NOW)
    assert 0 <= ts < MAX_TS
    w = parse_window(text, text, NOW)
    widest = coarsen(w, {DAY_S: int(MAX_TS)})  # compacted to the day: until rounds up a day
    assert iso(widest.since) and iso(widest.until) and widest.doc()["until"]
