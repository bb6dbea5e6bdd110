"""Key names and the shard function (shadow.keys): an exchange's events meet in one shard, a
shard's keys share one cluster slot, shards are balanced and spread over a cluster's masters."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from shadow import ids
from shadow.keys import CLUSTER_SLOTS, Keys, cluster_slot, shard_of, shard_tag
from shadow.model import Answer, CandidateEvent, Request, RequestEvent, ResponseEvent

exchange_ids = st.one_of(st.text(min_size=1, max_size=40), st.builds(lambda _: ids.new_id(),
                                                                     st.integers()))
shard_counts = st.integers(min_value=1, max_value=256)
SETTINGS = settings(deadline=None)  # no timing: the suite runs beside hogs (and tags are cached)


@SETTINGS
@given(exchange_ids, shard_counts, st.booleans())
def test_all_events_of_an_exchange_land_on_one_shard(exchange_id: str, shards: int,
                                                     cluster: bool) -> None:
    keys = Keys.for_redis("p", shards, cluster)
    request = RequestEvent(id=exchange_id, request_id="r", ts=1.0,
                           request=Request(method="GET", url="/x", headers=[]))
    response = ResponseEvent(id=exchange_id, ts=2.0, answer=Answer(status=200))
    # the proxy publishes the request and the response by the exchange's id
    shard = keys.of(request.id)
    assert keys.of(response.id) == shard
    # the subscriber reads the request from that shard's stream and publishes the candidate
    # to the v2 stream of the shard it read it from (shadow.subscriber: keys.owner(entry.stream))
    candidate = CandidateEvent(id=exchange_id, ts=3.0, answer=Answer(status=200))
    assert keys.owner(shard.v1).v2 == keys.of(candidate.id).v2 == shard.v2
    assert 0 <= shard.index < shards


@SETTINGS
@given(shard_counts, st.data())
def test_a_shards_keys_share_one_cluster_slot_and_tags_spread_over_the_slot_space(
        shards: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=shards - 1))
    shard = Keys.for_redis("shadow", shards, True).shard(index)
    slots = {key_slot(k.encode()) for k in (shard.v1, shard.v2, shard.dead, shard.stats)}
    assert len(slots) == 1  # scripts and transactions over them stay in one slot
    slot = slots.pop()
    assert slot == cluster_slot(shard_tag(index, shards))
    # shard k's slot is in the k-th `shards`-th of the slot space
    assert index * CLUSTER_SLOTS // shards <= slot < (index + 1) * CLUSTER_SLOTS // shards


@pytest.mark.parametrize("masters", [2, 3, 4, 6])
def test_on_an_evenly_split_cluster_every_master_gets_its_share_of_shards(masters: int) -> None:
    """redis-cli --cluster create splits the slots evenly: with as many shards as masters (or
    a multiple), every master holds the same number of shards."""
    def master_of(slot: int) -> int:
        return min(masters - 1, slot * masters // CLUSTER_SLOTS)

    for shards in (masters, 2 * masters):
        keys = Keys.for_redis("shadow", shards, True)
        owners = Counter(master_of(key_slot(s.v1.encode())) for s in keys.all)
        assert sorted(owners.values()) == [shards // masters] * masters, owners


@pytest.fixture
def seeded_ids():
    """Exchange ids as the proxy makes them (shadow.ids.new_id), from a seeded generator: the
    balance test sees the same 100k ids on every run."""
    state = ids._random.getstate()
    ids._random.seed(20240601)
    yield
    ids._random.setstate(state)


@pytest.mark.parametrize("shards", [2, 3, 4, 5, 8, 16])
def test_shards_are_balanced_within_5_percent_over_100k_ids(seeded_ids, shards: int) -> None:
    counts = Counter(shard_of(ids.new_id(), shards) for _ in range(100_000))
    mean = 100_000 / shards
    assert len(counts) == shards
    assert all(abs(n - mean) <= 0.05 * mean for n in counts.values()), counts


def test_shards_are_balanced_for_arbitrary_ids_too() -> None:
    """Not only ULIDs: ids of any shape (a replay's, a test's) spread as well."""
    rng = random.Random(7)
    counts = Counter(shard_of(f"req-{rng.getrandbits(64)}", 3) for _ in range(100_000))
    assert all(abs(n - 100_000 / 3) <= 0.05 * 100_000 / 3 for n in counts.values()), counts


@SETTINGS
@given(exchange_ids, shard_counts)
def test_the_shard_is_the_same_in_every_process(exchange_id: str, shards: int) -> None:
    """A pure function of the id (no per-process hash seed): CRC-32 of its UTF-8 bytes."""
    import zlib
    expected = 0 if shards == 1 else \
        zlib.crc32(exchange_id.encode("utf-8", "surrogatepass")) % shards
    assert shard_of(exchange_id, shards) == expected


def test_one_untagged_shard_keeps_the_historical_names() -> None:
    keys = Keys("shadow")
    assert (keys.v1, keys.v2, keys.stats, keys.dead) == \
        ("shadow:v1", "shadow:v2", "shadow:stats", "shadow:dead")
    assert keys.streams == {"v1": "shadow:v1", "v2": "shadow:v2"}
    assert keys.v1_streams == ["shadow:v1"] and keys.event_streams == ["shadow:v1", "shadow:v2"]
    assert keys.of("anything") == keys.shard(0)
    assert (keys.firehose, keys.meta, keys.rate) == \
        ("shadow:firehose", "shadow:meta", "shadow:rate")


def test_sharded_and_cluster_names_carry_a_hash_tag() -> None:
    one = Keys.for_redis("shadow", 1, True)  # a cluster: the script needs v1 and stats together
    assert one.v1 == "shadow:{0}:v1" and one.stats == "shadow:{0}:stats"
    three = Keys("shadow", 3)
    assert [s.v1 for s in three.all] == [f"shadow:{{{shard_tag(k, 3)}}}:v1" for k in range(3)]
    assert three.owner(three.shard(2).v2).index == 2
    with pytest.raises(ValueError, match="name the shard"):
        _ = three.v1  # sharded code must say which shard
    with pytest.raises(KeyError):
        three.owner("shadow:v1")
    with pytest.raises(ValueError):
        Keys("shadow", 0)
