"""The keep policy (shadow/keep.py): which exchange documents stay as evidence."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from shadow.keep import (
    EVERYTHING,
    HOUR_S,
    Decided,
    KeepPolicy,
    choose,
    group_key,
    groups,
    openers,
    unit,
)

HOUR = 1_796_209_200  # 2026-12-02T11:00:00Z
assert HOUR % HOUR_S == 0


def mismatch(i: int, sig: str = "s1", ts: float = HOUR + 1.0, *, route: str = "/a",
             opens: bool = False) -> Decided:
    return Decided(f"X{i:09d}", ts, "GET", route, "mismatch", sig, opens)


def match(i: int, route: str = "/a", ts: float = HOUR + 1.0) -> Decided:
    return Decided(f"X{i:09d}", ts, "GET", route, "match")


def kept_in_batches(policy: KeepPolicy, decided: Sequence[Decided],
                    cuts: Sequence[int]) -> set[str]:
    """The policy applied batch by batch (cut at `cuts`), the counters carried between."""
    seen: Counter[tuple[int, str]] = Counter()
    out: set[str] = set()
    bounds = [0, *sorted(set(cuts)), len(decided)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        choice = choose(policy, decided[a:b], seen)
        seen += choice.seen
        out |= choice.kept
    return out


def test_a_class_keeps_its_first_n_each_hour_then_k_th_with_probability_n_over_k():
    policy = KeepPolicy(per_class_hour=20)
    hour1 = [mismatch(i) for i in range(500)]
    hour2 = [mismatch(1000 + i, ts=HOUR + HOUR_S + 5) for i in range(30)]
    kept = choose(policy, hour1 + hour2, {}).kept
    for k, d in enumerate(hour1, 1):
        assert (d.id in kept) == (k <= 20 or unit(d.id) < 20 / k), k
    assert {d.id for d in hour2[:20]} <= kept  # a new hour: 20 again
    # a reservoir's expected size: 20 * (1 + ln(500 / 20)) ~ 84
    assert 60 < sum(1 for d in hour1 if d.id in kept) < 110


def test_the_counters_from_the_store_continue_the_hour():
    policy = KeepPolicy(per_class_hour=3)
    key = group_key(mismatch(0))
    assert key is not None
    later = [mismatch(i) for i in range(10)]
    kept = choose(policy, later, {key: 100}).kept  # 100 seen already this hour
    assert kept == {d.id for k, d in enumerate(later, 101) if unit(d.id) < 3 / k}
    assert choose(policy, later, {key: 100}).seen == {key: 10}


def test_classes_groups_and_hours_count_apart():
    policy = KeepPolicy(per_class_hour=2)
    batch = [mismatch(i, sig="a") for i in range(5)] + [mismatch(10 + i, sig="b") for i in range(5)]
    choice = choose(policy, batch, {})
    assert {"X000000000", "X000000001", "X000000010", "X000000011"} <= choice.kept
    assert choice.seen == {(HOUR, "class a"): 5, (HOUR, "class b"): 5}
    errors = [Decided(f"E{i}", HOUR + i, "GET", r, o) for i, (r, o) in enumerate(
        [("/a", "v2_error"), ("/a", "v2_error"), ("/b", "v2_error"), ("/a", "compare_error"),
         ("/a", "v1_only"), ("/a", "skipped"), ("/a", "v1_missing")])]
    assert set(groups(errors)) == {(HOUR, "v2_error GET /a"), (HOUR, "v2_error GET /b"),
                                   (HOUR, "compare_error GET /a"), (HOUR, "v1_only GET /a"),
                                   (HOUR, "skipped GET /a"), (HOUR, "v1_missing GET /a")}


def test_errors_are_capped_like_classes_per_route_outcome_and_hour():
    policy = KeepPolicy(per_class_hour=5)
    errors = [Decided(f"E{i:05d}", HOUR + 1, "GET", "/a", "v2_error") for i in range(300)]
    kept = choose(policy, errors, {}).kept
    assert {d.id for d in errors[:5]} <= kept
    assert kept == {d.id for k, d in enumerate(errors, 1) if k <= 5 or unit(d.id) < 5 / k}
    assert len(kept) < 40


def test_matches_keep_the_first_of_each_route_each_hour_and_a_fraction():
    policy = KeepPolicy(matches=0.01)
    batch = [match(i, route="/a" if i % 2 else "/b") for i in range(4000)]
    kept = choose(policy, batch, {}).kept
    assert {"X000000000", "X000000001"} <= kept  # the first of /b and of /a
    assert kept - {"X000000000", "X000000001"} == \
        {d.id for d in batch[2:] if unit(d.id) < 0.01}
    assert 20 < len(kept) < 70  # ~1% of 4000
    assert not {d.id for d in batch[2:]} & choose(KeepPolicy(matches=0.0), batch, {}).kept
    key = group_key(batch[1])
    assert key is not None  # a route with a match this hour already: no first one
    assert "X000000001" not in choose(KeepPolicy(matches=0.0), batch[1:2], {key: 1}).kept


def test_new_and_reopened_classes_and_exchanges_without_a_request_are_always_kept():
    none = KeepPolicy(per_class_hour=0, matches=0.0)
    batch = [mismatch(i) for i in range(5)] + [mismatch(9, opens=True)]
    assert choose(none, batch, {}).kept == {"X000000009"}
    requestless = Decided("R1", HOUR, None, None, "match")
    choice = choose(none, [requestless], {})
    assert choice.kept == {"R1"} and not choice.seen  # kept, not counted: a late request names it


def test_openers_are_the_first_mismatch_of_a_class_new_or_fixed():
    hits = [("x1", "new-sig"), ("x2", "new-sig"), ("x3", "fixed-sig"), ("x4", "bug-sig"),
            ("x5", "fixed-sig")]
    book = {"fixed-sig": "fixed", "bug-sig": "bug"}
    assert openers(hits, book) == {"x1", "x3"}


def test_keep_all_keeps_everything_and_counts_nothing():
    batch = [match(i) for i in range(50)] + [mismatch(100 + i) for i in range(50)]
    choice = choose(EVERYTHING, batch, {})
    assert choice.kept == {d.id for d in batch} and not choice.seen


def test_unit_is_a_stable_fraction():
    assert unit("01JD0000000000000000000000") == unit("01JD0000000000000000000000")
    values = [unit(f"id-{i}") for i in range(10_000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.02
    assert 0 <= unit(b"caf\xe9".decode("utf-8", "surrogateescape")) < 1  # any str


def test_hours_are_the_exchange_s_own():
    assert group_key(mismatch(1, ts=HOUR + HOUR_S - 0.001)) == (HOUR, "class s1")
    assert group_key(mismatch(1, ts=HOUR + HOUR_S)) == (HOUR + HOUR_S, "class s1")


decided_strategy = st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(["match", "mismatch", "v2_error"]),
              st.sampled_from(["s1", "s2"]), st.sampled_from(["/a", "/b"]),
              st.integers(0, 3), st.booleans()),
    max_size=120, unique_by=lambda t: t[0],
).map(lambda rows: sorted(
    (Decided(f"X{i:09d}", HOUR + hour * HOUR_S + i / 100, "GET", route, outcome,
             sig if outcome == "mismatch" else None, opens and outcome == "mismatch")
     for i, outcome, sig, route, hour, opens in rows), key=lambda d: d.id))


@settings(max_examples=200, deadline=None)
@given(decided_strategy, st.lists(st.integers(0, 120), max_size=5), st.integers(0, 5),
       st.sampled_from([0.0, 0.1, 1.0]))
def test_batches_decide_as_one_run_does(decided: list[Decided], cuts: list[int],
                                        per_hour: int, matches: float):
    """Every replica and every batching decides the same: a run of exchanges (in id order)
    cut into batches anywhere, the counters carried, keeps what one batch keeps."""
    policy = KeepPolicy(per_class_hour=per_hour, matches=matches)
    whole = choose(policy, decided, {})
    assert kept_in_batches(policy, decided, cuts) == whole.kept
    assert sum(whole.seen.values()) == len(decided) == sum(groups(decided).values())


@settings(max_examples=200, deadline=None)
@given(decided_strategy, st.integers(0, 5), st.sampled_from([0.0, 0.1]))
def test_what_must_be_kept_is_kept(decided: list[Decided], per_hour: int, matches: float):
    policy = KeepPolicy(per_class_hour=per_hour, matches=matches)
    kept = choose(policy, decided, {}).kept
    firsts: dict[tuple[int, str], int] = {}
    for d in decided:  # in id order
        key = group_key(d)
        assert key is not None
        firsts[key] = firsts.get(key, 0) + 1
        if d.opens or (d.outcome == "match" and firsts[key] == 1) or \
                (d.outcome != "match" and firsts[key] <= per_hour):
            assert d.id in kept, d
    assert kept <= {d.id for d in decided}
    if per_hour == 0 and matches == 0.0:
        assert all(d.opens or d.outcome == "match" for d in decided if d.id in kept)


def test_the_sample_grows_like_a_logarithm():
    """An hour of K exchanges of one class keeps about n * (1 + ln(K / n)) documents."""
    n = 20
    for total in (1_000, 20_000):
        kept = choose(KeepPolicy(per_class_hour=n), [mismatch(i) for i in range(total)], {}).kept
        expected = n * (1 + math.log(total / n))
        assert 0.75 * expected < len(kept) < 1.25 * expected, (total, len(kept), expected)
