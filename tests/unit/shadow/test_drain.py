"""What the stream drain deletes (shadow/drain.py): pure, from the groups' positions."""

from __future__ import annotations

from shadow.drain import (
    ZERO,
    GroupPosition,
    Limits,
    backstop_maxlen,
    entry_cap,
    format_id,
    oldest_needed,
    parse_id,
    plan,
    unread_from,
)

BOTH = ("replayers", "comparers")
DAY_MS = 86_400_000
NOW = 10 * DAY_MS


def g(name: str, last: str, pending: str | None = None) -> GroupPosition:
    return GroupPosition(name, parse_id(last), parse_id(pending) if pending else None)


def test_ids_parse_and_format() -> None:
    assert parse_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_id("5") == (5, 0)
    assert format_id((12, 0)) == "12-0"


def test_a_group_needs_its_oldest_pending_entry_or_the_one_after_its_last_delivered() -> None:
    assert g("a", "9-0").needs_from == (9, 1)
    assert g("a", "9-0", pending="3-2").needs_from == (3, 2)
    assert g("a", "0-0").needs_from == (0, 1)  # nothing read: needs everything


def test_processed_entries_are_those_before_what_the_slowest_group_needs() -> None:
    groups = [g("replayers", "900-0", pending="500-0"), g("comparers", "700-0")]
    assert oldest_needed(groups, BOTH) == (500, 0)
    assert oldest_needed([g("replayers", "900-0"), g("comparers", "700-0")], BOTH) == (700, 1)
    # a group besides the required ones protects its entries too
    assert oldest_needed([*groups, g("audit", "100-0")], BOTH) == (100, 1)


def test_nothing_is_drained_while_a_required_group_does_not_exist() -> None:
    assert oldest_needed([g("replayers", "900-0")], BOTH) is None
    assert oldest_needed([], ()) is None
    assert unread_from([g("replayers", "900-0")], BOTH) == ZERO
    p = plan([g("replayers", "900-0")], BOTH, Limits(), length=10, now_ms=NOW)
    assert p.processed is None and p.keep is None


def test_unread_starts_after_the_group_that_was_given_the_least() -> None:
    groups = [g("replayers", "900-0", pending="500-0"), g("comparers", "700-0")]
    assert unread_from(groups, BOTH) == (700, 1)


def test_plan_without_limits_only_drains_what_is_processed() -> None:
    groups = [g("replayers", "900-0"), g("comparers", "900-0")]
    p = plan(groups, BOTH, Limits(), length=5, now_ms=NOW)
    assert p.processed == (900, 1)
    assert (p.aged_delivered, p.aged_unread, p.delivered, p.keep) == (None, None, None, None)


def test_age_limit_trims_delivered_entries_first_then_counts_the_unread_ones() -> None:
    limits = Limits(max_age_s=86_400)
    cut = (NOW - DAY_MS, 0)
    # the comparers lag: everything older than a day goes, what they never got is counted
    groups = [g("replayers", f"{NOW}-0"), g("comparers", "1000-0", pending="800-0")]
    p = plan(groups, BOTH, limits, length=100, now_ms=NOW)
    assert p.processed == (800, 0)
    assert p.aged_delivered == (1000, 1)  # delivered to both (800-0 is pending: not unread)
    assert p.aged_unread == cut
    # every group is past the cut: the age limit removes nothing the drain does not
    fresh = [g("replayers", f"{NOW}-0"), g("comparers", f"{NOW - 5}-0")]
    p = plan(fresh, BOTH, limits, length=100, now_ms=NOW)
    assert p.processed == (NOW - 5, 1)
    assert p.aged_unread is None
    assert p.aged_delivered is None  # the cut is below what the drain removes anyway
    # a pending entry older than the cut: it goes (delivered), nothing counted as unread
    stuck = [g("replayers", f"{NOW}-0", pending="5-0"), g("comparers", f"{NOW}-0")]
    p = plan(stuck, BOTH, limits, length=100, now_ms=NOW)
    assert p.processed == (5, 0) and p.aged_delivered == cut and p.aged_unread is None


def test_age_limit_counts_everything_as_unread_while_a_required_group_is_missing() -> None:
    p = plan([g("replayers", f"{NOW}-0")], BOTH, Limits(max_age_s=1), length=3, now_ms=NOW)
    assert p.processed is None and p.aged_delivered is None
    assert p.aged_unread == (NOW - 1000, 0)


def test_entry_cap_from_maxlen_and_from_sampled_memory() -> None:
    assert entry_cap(Limits(), 100, None) is None
    assert entry_cap(Limits(max_entries=50), 100, None) == 50
    # 100 entries in 10,000 bytes, 4,000 allowed: 40 entries fit
    assert entry_cap(Limits(max_bytes=4000), 100, 10_000) == 40
    assert entry_cap(Limits(max_entries=30, max_bytes=4000), 100, 10_000) == 30
    assert entry_cap(Limits(max_bytes=20_000), 100, 10_000) is None  # under the budget
    assert entry_cap(Limits(max_bytes=4000), 0, None) is None


def test_over_the_entry_cap_delivered_entries_go_first() -> None:
    groups = [g("replayers", "900-0"), g("comparers", "700-0", pending="600-0")]
    p = plan(groups, BOTH, Limits(max_entries=10), length=50, now_ms=NOW)
    assert p.processed == (600, 0) and p.delivered == (700, 1) and p.keep == 10
    under = plan(groups, BOTH, Limits(max_entries=100), length=50, now_ms=NOW)
    assert under.keep is None and under.delivered is None


def test_the_producers_cap_is_a_backstop_above_the_drains() -> None:
    assert backstop_maxlen(1000) > 1000
