"""The bus on the real (6.2, no group lag) embedded Redis: how far behind each consumer group is,
and the drain that deletes what every group has processed."""

from __future__ import annotations

import asyncio
from dataclasses import astuple

import aiohttp
from prometheus_client import REGISTRY

from shadow.bus import StreamDrain, Trimmed, behind_seconds, stream_health
from shadow.cli.views import behind, totals_line
from shadow.drain import Limits
from tests.conftest import wait_for


def test_behind_seconds_from_entry_ids() -> None:
    assert behind_seconds("1000-0", "9000-0", "9000-0") == 0.0  # has everything
    assert behind_seconds("1000-0", "9000-3", "9000-1") == 0.0  # same millisecond
    assert behind_seconds("1000-0", "9000-0", "5000-0") == 4.0
    # nothing delivered yet: measured from the oldest entry still in the stream, not from 0
    assert behind_seconds("1000-0", "9000-0", "0-0") == 8.0
    assert behind_seconds(b"1000-0", b"9000-0", b"0-0") == 8.0


async def test_stream_health_and_the_summary_say_how_far_behind_each_group_is(
        redis, keys, reports_api):
    assert await stream_health(redis, keys.v1) == {"length": 0, "groups": {}}
    for ms in (1000, 5000, 9000):
        await redis.xadd(keys.v1, {"e": b"{}"}, id=f"{ms}-0")
    await redis.xgroup_create(keys.v1, "replayers", id="0")
    await redis.xgroup_create(keys.v1, "comparers", id="0")
    await redis.xreadgroup("replayers", "r1", {keys.v1: ">"}, count=2)
    health = await stream_health(redis, keys.v1)
    assert health["length"] == 3
    assert health["groups"]["replayers"]["pending"] == 2
    assert health["groups"]["replayers"]["behind_s"] == 4.0
    assert health["groups"]["comparers"]["behind_s"] == 8.0

    api = await reports_api()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{api.port}/api/summary") as r:
            streams = (await r.json())["streams"]
        assert streams["v1"]["groups"]["replayers"]["behind_s"] == 4.0
        async with s.get(f"http://127.0.0.1:{api.port}/metrics") as r:
            text = await r.text()
        assert f'shadow_stream_behind_seconds{{group="comparers",stream="{keys.v1}"}} 8.0' in text


def test_report_says_how_far_behind_replay_and_compare_are() -> None:
    streams = {"v1": {"length": 3, "groups": {"replayers": {"behind_s": 4.0},
                                               "comparers": {"behind_s": 1.5}}},
               "v2": {"length": 1, "groups": {"comparers": {"behind_s": 2.5}}}}
    assert behind(streams) == (4.0, 2.5)
    assert behind(None) is None
    summary = {"total": 1, "compared": 1, "matched": 1, "mismatched": 0, "skipped": 0,
               "v2_errors": 0, "pending": 0, "dropped_events": 0, "streams": streams}
    assert totals_line(summary).endswith("replay 4.0 s behind, compare 2.5 s behind")


# ---------------------------------------------------------------- the stream drain (StreamDrain)

async def _stream(redis, stream: str, n: int, start_ms: int = 1000) -> list[bytes]:
    """n entries with ids start_ms-0, start_ms+1000-0, ... (no consumer groups yet)."""
    return [await redis.xadd(stream, {"e": b"{}"}, id=f"{start_ms + 1000 * i}-0")
            for i in range(n)]


async def _consume(redis, stream: str, group: str, count: int, *, ack: bool = True,
                   create: bool = True) -> list[bytes]:
    """`group` (created from the start of the stream) reads `count` entries, and acks them."""
    if create:
        await redis.xgroup_create(stream, group, id="0")
    reply = await redis.xreadgroup(group, f"{group}-1", {stream: ">"}, count=count)
    ids = [entry_id for _, items in reply for entry_id, _ in items]
    if ack and ids:
        await redis.xack(stream, group, *ids)
    return ids


async def _ids(redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in await redis.xrange(stream)]


def _unread_metric(stream: str) -> float:
    return REGISTRY.get_sample_value("shadow_events_trimmed_unread_total",
                                     {"stream": stream}) or 0.0


async def test_the_request_stream_is_drained_once_both_groups_acknowledged_everything(
        redis, keys):
    await _stream(redis, keys.v1, 6)
    await _consume(redis, keys.v1, "replayers", 6)
    await _consume(redis, keys.v1, "comparers", 6)
    drained = await StreamDrain(redis, keys, Limits()).run_once()
    assert drained["v1"] == Trimmed(drained=6)
    assert await redis.xlen(keys.v1) == 0
    # the groups go on from where they were: a new entry is delivered as usual
    new = await redis.xadd(keys.v1, {"e": b"{}"})
    assert await _consume(redis, keys.v1, "comparers", 10, create=False) == [new]


async def test_an_entry_read_but_not_acknowledged_by_one_group_is_kept(redis, keys):
    ids = await _stream(redis, keys.v1, 5)
    await _consume(redis, keys.v1, "replayers", 5)
    read = await _consume(redis, keys.v1, "comparers", 5, ack=False)
    await redis.xack(keys.v1, "comparers", *(i for i in read if i != ids[2]))  # 3rd pending
    await StreamDrain(redis, keys, Limits()).run_once()
    assert await _ids(redis, keys.v1) == ids[2:]  # processed before it: gone; from it: kept
    # once acknowledged, it goes too
    await redis.xack(keys.v1, "comparers", ids[2])
    await StreamDrain(redis, keys, Limits()).run_once()
    assert await redis.xlen(keys.v1) == 0


async def test_a_lagging_group_keeps_the_entries_it_has_not_read(redis, keys):
    ids = await _stream(redis, keys.v1, 5)
    await _consume(redis, keys.v1, "replayers", 5)
    await _consume(redis, keys.v1, "comparers", 2)
    await StreamDrain(redis, keys, Limits()).run_once()
    assert await _ids(redis, keys.v1) == ids[2:]
    assert await _consume(redis, keys.v1, "comparers", 10, create=False) == ids[2:]


async def test_nothing_is_drained_before_every_required_group_exists(redis, keys):
    """The subscriber alone (no comparer started yet) must not drain the proxy's stream, nor
    the comparer alone; once both groups have processed it, it goes."""
    ids = await _stream(redis, keys.v1, 3)
    await _consume(redis, keys.v1, "replayers", 3)
    drain = StreamDrain(redis, keys, Limits())
    await drain.run_once()
    assert await _ids(redis, keys.v1) == ids
    await _consume(redis, keys.v1, "comparers", 3)
    await drain.run_once()
    assert await redis.xlen(keys.v1) == 0


async def test_the_candidate_stream_needs_only_the_comparers(redis, keys):
    await _stream(redis, keys.v2, 3)
    await _consume(redis, keys.v2, "comparers", 3)
    assert (await StreamDrain(redis, keys, Limits()).run_once())["v2"].drained == 3
    assert await redis.xlen(keys.v2) == 0


async def test_the_age_limit_deletes_old_entries_and_counts_the_unread_ones(redis, keys,
                                                                           reports_api):
    old = await _stream(redis, keys.v1, 5)  # ids from 1970: far past any age limit
    await _consume(redis, keys.v1, "replayers", 5)
    await _consume(redis, keys.v1, "comparers", 1)  # read 1 of them, acked
    await _consume(redis, keys.v1, "comparers", 1, ack=False, create=False)  # 1 pending
    recent = await redis.xadd(keys.v1, {"e": b"{}"})  # now: within the age limit
    before = _unread_metric(keys.v1)
    # two drains at once (replicas): each entry is deleted once, and counted once
    first, second = await asyncio.gather(
        StreamDrain(redis, keys, Limits(max_age_s=3600)).run_once(),
        StreamDrain(redis, keys, Limits(max_age_s=3600)).run_once())
    total = Trimmed(*(a + b for a, b in zip(astuple(first["v1"]), astuple(second["v1"]),
                                            strict=True)))
    assert total == Trimmed(drained=1, delivered=1, aged=3)
    assert await _ids(redis, keys.v1) == [recent]
    assert old[2] not in await _ids(redis, keys.v1)
    assert await redis.hget(keys.stats, "trimmed_unread:v1") == b"3"
    assert _unread_metric(keys.v1) - before == 3

    api = await reports_api()
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{api.port}/api/summary") as r:
        assert (await r.json())["trimmed_unread"] == {"v1": 3, "v2": 0}


async def test_the_age_limit_counts_everything_while_a_required_group_is_missing(redis, keys):
    await _stream(redis, keys.v1, 4)
    await _consume(redis, keys.v1, "replayers", 4)  # the comparer never started
    trimmed = (await StreamDrain(redis, keys, Limits(max_age_s=3600)).run_once())["v1"]
    assert trimmed == Trimmed(aged=4)
    assert await redis.hget(keys.stats, "trimmed_unread:v1") == b"4"


async def test_the_entry_cap_deletes_the_oldest_delivered_ones_first_and_counts_unread(
        redis, keys):
    ids = await _stream(redis, keys.v1, 10)
    await _consume(redis, keys.v1, "replayers", 10)
    await _consume(redis, keys.v1, "comparers", 3, ack=False)  # delivered, pending
    trimmed = (await StreamDrain(redis, keys, Limits(max_entries=4)).run_once())["v1"]
    assert trimmed == Trimmed(delivered=3, capped=3)
    assert await _ids(redis, keys.v1) == ids[6:]
    assert await redis.hget(keys.stats, "trimmed_unread:v1") == b"3"


async def test_the_memory_limit_trims_to_what_fits(redis, keys):
    for _ in range(200):
        await redis.xadd(keys.v2, {"e": b"x" * 1000})
    await _consume(redis, keys.v2, "comparers", 10)
    size = int(await redis.memory_usage(keys.v2))
    trimmed = (await StreamDrain(redis, keys, Limits(max_bytes=size // 4)).run_once())["v2"]
    assert trimmed.drained == 10 and trimmed.capped > 0
    assert int(await redis.memory_usage(keys.v2)) <= size // 3
    assert await redis.hget(keys.stats, "trimmed_unread:v2") == str(trimmed.capped).encode()


async def test_the_drain_runs_in_the_background_until_stopped(redis, keys):
    await _stream(redis, keys.v1, 3)
    drain = StreamDrain(redis, keys, Limits(), interval_s=0.05)
    await drain.start()
    try:
        await _consume(redis, keys.v1, "replayers", 3)
        await _consume(redis, keys.v1, "comparers", 3)

        async def drained() -> bool:
            return await redis.xlen(keys.v1) == 0

        await wait_for(drained, 30, "the background drain to empty the stream")
    finally:
        await drain.stop()
        await drain.stop()  # idempotent


async def test_a_plan_made_from_another_servers_view_never_deletes_what_a_group_needs_here(
        redis, keys):
    """During a failover the pool's connections go to the old and the new master for a moment:
    the groups' positions may be read on one and the trims run on the other. The trim script
    bounds what it deletes by the positions of the server it runs on."""
    from shadow.bus import TRIM_SCRIPT
    from shadow.keys import TRIMMED_UNREAD

    ids = await _stream(redis, keys.v1, 6)
    await _consume(redis, keys.v1, "replayers", 6)
    read = await _consume(redis, keys.v1, "comparers", 4, ack=False)  # 4 pending, 2 unread
    await redis.xack(keys.v1, "comparers", read[0])
    script = redis.register_script(TRIM_SCRIPT)
    everything = ids[-1].decode().replace("-0", "-1")  # "processed by all", says the other view
    result = await script(keys=[keys.v1, keys.stats],
                          args=[everything, "", "", "", "", TRIMMED_UNREAD + "v1", "replayers",
                                "comparers"])
    assert result == [1, 0, 0, 0]  # only what every group acknowledged here
    assert await _ids(redis, keys.v1) == ids[1:]
    # over the entry cap, what some group was never given here is deleted by the cap (counted),
    # never as "delivered to every group"
    result = await script(keys=[keys.v1, keys.stats],
                          args=["", "", "", everything, 1, TRIMMED_UNREAD + "v1", "replayers",
                                "comparers"])
    assert result == [0, 3, 0, 1]  # ids[1:4] were given to both groups; ids[4] went unread
    assert await _ids(redis, keys.v1) == ids[5:]
    assert await redis.hget(keys.stats, TRIMMED_UNREAD + "v1") == b"1"
    # a required group missing here: nothing drained
    ids = await _stream(redis, f"{keys.v1}c", 2)
    await _consume(redis, f"{keys.v1}c", "replayers", 2)
    last = ids[-1].decode().replace("-0", "-1")
    result = await script(keys=[f"{keys.v1}c", keys.stats],
                          args=[last, "", "", "", "", "x", "replayers", "comparers"])
    assert result == [0, 0, 0, 0] and await redis.xlen(f"{keys.v1}c") == 2
