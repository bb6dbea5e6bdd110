"""How far behind each consumer group is, on the real (6.2, no group lag) embedded Redis."""

from __future__ import annotations

import aiohttp

from shadow.bus import behind_seconds, stream_health
from shadow.cli.views import behind, totals_line


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
