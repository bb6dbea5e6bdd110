"""The streams' horizon (shadow.horizon, comparer.housekeeping.StreamHorizon) on a real Redis
and a real store: a dropped exchange's tombstone stays while an entry of its exchange is still
in a stream (a re-delivered part is then ignored, never counted twice), and goes once the
streams hold nothing of it."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from comparer import Comparer, open_store
from comparer.housekeeping import Housekeeper, Limits, StreamHorizon
from shadow.bus import StreamDrain
from shadow.codec import decode_event, encode_event
from shadow.compare import compare
from shadow.drain import Limits as StreamLimits
from shadow.keep import KeepPolicy
from shadow.keys import COMPARERS, EVENT_FIELD, REPLAYERS, Keys
from shadow.model import CandidateEvent, RequestEvent
from tests.conftest import wait_for
from tests.test_store_contract import exchange_events, tombstones, xid


async def unacked(redis: aioredis.Redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


async def test_a_tombstone_stays_while_a_part_of_its_exchange_is_in_a_stream(
        redis: aioredis.Redis, keys: Keys, settings_factory: Any) -> None:
    settings = settings_factory(keep="sampled", keep_matches=0.0, claim_idle_s=0.5,
                                v2_connect_timeout_s=0.1, v2_read_timeout_s=0.1)
    shard = keys.shard(0)
    for stream, groups in shard.required_groups.items():
        for group in groups:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
    store = open_store(settings.store)
    await store.open()
    comparer: Comparer | None = None
    try:
        # the proxy: 20 matches a second apart an hour ago, and one more 1000 s later, each
        # event published when it happened (its entry's id: its time)
        start = (int(time.time()) - 3600) // 3600 * 3600 + 100  # early in its hour
        last = 20
        plan = {i: exchange_events(i, ts=start + (1000 if i == last else i))
                for i in range(last + 1)}
        for events in plan.values():
            for e in events[:2]:
                await redis.xadd(shard.v1, {EVENT_FIELD: encode_event(e)},
                                 id=f"{int(e.ts * 1000)}-0")
        # the subscriber: each request's candidate published with its acknowledgement
        replies: Any = await redis.xreadgroup(REPLAYERS, "replayer", {shard.v1: ">"})
        [(_, entries)] = replies
        for entry_id, fields in entries:
            event = decode_event(fields[EVENT_FIELD])
            async with redis.pipeline(transaction=True) as pipe:
                if isinstance(event, RequestEvent):
                    cand = plan[int(event.id[1:])][2]
                    assert isinstance(cand, CandidateEvent)
                    pipe.xadd(shard.v2, {EVENT_FIELD: encode_event(cand)})
                pipe.xack(shard.v1, REPLAYERS, entry_id)
                await pipe.execute()
        # a comparer stores and decides everything (the keep policy drops all documents but
        # the first match of the hour), then dies before acknowledging the last exchange's
        read: Any = await redis.xreadgroup(COMPARERS, "dead", {shard.v1: ">", shard.v2: ">"})
        got = [(stream, entry_id, decode_event(fields[EVENT_FIELD]))
               for stream, entries in read for entry_id, fields in entries]
        assert len(got) == 3 * (last + 1)
        ready = await store.apply([e for _, _, e in got])
        await store.complete([(x.id, compare(x.request, x.v1, x.v2, x.route)) for x in ready
                              if x.v1 is not None and x.v2 is not None],
                             keep=KeepPolicy.from_settings(settings))
        assert await tombstones(store) == {xid(i) for i in range(1, last + 1)}
        for stream, entry_id, event in got:
            if event.id != xid(last):
                await redis.xack(stream, COMPARERS, entry_id)
        drain = StreamDrain(redis, keys, StreamLimits())
        housekeeper = Housekeeper(store, Limits(), horizon=StreamHorizon(redis, keys))

        # its candidate is still in v2, published before any look: no tombstone goes
        await drain.run_once()
        assert await housekeeper.forget_tombstones() == 0
        assert len(await tombstones(store)) == last

        # its candidate processed: the other exchanges have nothing left in the streams
        [candidate] = [i for s, i, e in got if e.id == xid(last) and s == shard.v2.encode()]
        await redis.xack(shard.v2, COMPARERS, candidate)
        await drain.run_once()
        assert await redis.xlen(shard.v2) == 0
        assert await housekeeper.forget_tombstones() == last - 1
        assert await tombstones(store) == {xid(last)}  # its request and V1's answer are pending
        assert await housekeeper.forget_tombstones() == 0
        counted = await store.outcomes()
        assert counted == {"match": last + 1}

        # another comparer takes the dead one's entries over: the re-delivered parts of the
        # dropped exchange are ignored; once they are processed, its tombstone goes too
        comparer = Comparer(settings, redis, store, keys=keys)
        comparer.housekeeper.interval_s = 0.05
        await comparer.start()

        async def gone() -> bool:
            return not await unacked(redis, shard.v1, COMPARERS) and \
                not await tombstones(store)

        await wait_for(gone, 60, "the last exchange's entries processed and its tombstone gone")
        assert await store.outcomes() == counted and await store.count() == last + 1
        assert await store.get(xid(last)) is None  # never stored again
        assert comparer.completed == 0
    finally:
        if comparer is not None:
            await comparer.stop()
        await store.close()
