"""shadow.horizon: when the streams prove no part of a dropped exchange can still arrive."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shadow.horizon import Horizon, Look, Mark, latest, mark, passed

T = 1_700_000_000_000  # a Redis server's clock, ms


def look(at: int, v1: int | None = None, v2: int | None = None) -> Look:
    """A look at `at` ms: the v1 stream read between at and at + 1."""
    return Look(at, v1, at + 1, v2)


def test_empty_streams_prove_everything_before_now_minus_the_margin_at_once():
    h = Horizon(margin_s=60)
    assert h.step([look(T)]) == (T - 60_000) / 1000
    assert h.marks == []


def test_the_oldest_entry_left_in_the_proxy_stream_holds_the_cut_back():
    h = Horizon(margin_s=60)
    assert h.step([look(T, v1=T - 500_000)]) == (T - 560_000) / 1000


def test_a_candidate_published_before_the_mark_must_be_processed_first():
    h = Horizon(margin_s=60)
    # a candidate from before the look is still in v2: nothing proven yet
    assert h.step([look(T, v1=T - 5_000, v2=T - 2_000)]) is None
    # the next look: v2 still starts before the first mark's time
    assert h.step([look(T + 10_000, v2=T - 1_000)]) is None
    # v2 now starts after the first mark (not the second): the first mark's cut is proven
    assert h.step([look(T + 20_000, v2=T + 5_000)]) == (T - 65_000) / 1000
    assert [m.cut_ms for m in h.marks] == [T + 10_000 - 60_000, T + 20_000 - 60_000]
    # v2 empty: every mark passes, the newest cut wins
    assert h.step([look(T + 30_000)]) == (T + 30_000 - 60_000) / 1000
    assert h.marks == []


def test_a_v2_entry_at_the_very_millisecond_of_the_mark_does_not_pass_it():
    m = Mark(T - 60_000, (T + 1,))
    assert not passed(m, [look(T + 5, v2=T + 1)])
    assert passed(m, [look(T + 5, v2=T + 2)])


def test_every_shard_must_pass_and_the_cut_is_the_lowest_over_the_shards():
    h = Horizon(margin_s=1)
    first = [look(T, v1=T - 9_000, v2=T - 1), look(T + 2, v1=T - 3_000)]
    assert h.step(first) is None  # shard 0's candidate stream has an older entry
    assert h.step([look(T + 50, v2=T + 100), look(T + 52, v2=T - 1)]) is None  # shard 1's now
    # both shards past the first mark (not the later ones): its cut, shard 0's oldest entry's
    assert h.step([look(T + 90, v2=T + 2), look(T + 92)]) == (T - 10_000) / 1000
    assert len(h.marks) == 2


def test_another_shard_count_starts_over_and_waiting_marks_are_bounded():
    h = Horizon(margin_s=0, max_marks=3)
    for k in range(5):
        assert h.step([look(T + k, v2=T - 1)]) is None
    assert len(h.marks) == 3 and h.marks[0].cut_ms == T  # the oldest kept
    assert h.step([look(T + 9, v2=T - 1), look(T + 9, v2=T - 1)]) is None
    assert len(h.marks) == 1 and len(h.marks[0].checked_ms) == 2
    assert h.step([]) is None


@given(st.lists(st.tuples(st.integers(0, 10**6), st.none() | st.integers(0, 10**6),
                          st.none() | st.integers(0, 10**6)), min_size=1, max_size=30))
def test_a_proven_cut_is_never_after_what_some_passing_mark_recorded(steps):
    """Whatever the looks, a cut is a mark's (oldest v1 entry or clock - margin) whose
    checked time every shard's v2 has since passed."""
    h = Horizon(margin_s=2)
    at = T
    seen: list[Mark] = []
    for dt, v1, v2 in steps:
        at += dt
        current = [look(at, None if v1 is None else at - v1, None if v2 is None else at - v2)]
        seen.append(mark(current, 2))
        cut = h.step(current)
        if cut is not None:
            assert any(m.cut_ms == cut * 1000 and passed(m, current) for m in seen)


def test_a_tombstone_s_time_is_its_exchange_s_latest_part():
    assert latest(10.0, 12.5, 11.0) == 12.5
    assert latest(10.0, None, 11.0) == 11.0
    assert latest(None, None, None) == 0.0
