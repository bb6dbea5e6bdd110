"""V2 deploys detected from a version header by several comparer replicas (#13 item 3): two
comparers sharing the work (one consumer group, one store, the session's Redis) both see a
new version's answers, and one marker is recorded for it; a version already marked by hand
gets none. End to end with the verdict: tests/system/test_deploy_detection.py."""

from __future__ import annotations

import asyncio
import time

from comparer import Comparer, open_store
from shadow.codec import encode_event
from shadow.deploys import deploy, detected
from shadow.ids import new_id
from shadow.model import Answer, CandidateEvent
from tests.conftest import wait_for


async def test_replicas_record_one_marker_per_version(redis, keys, settings_factory):
    settings = settings_factory(v2_version_header="X-Version")
    store = open_store(settings.store)
    await store.open()
    await store.add_deploy(deploy("manual", time.time() - 60, "v2", "0.9"))
    replicas = []
    for i in range(2):
        handle = open_store(settings.store)
        await handle.open()
        replicas.append(Comparer(settings_factory(v2_version_header="X-Version",
                                                  consumer=f"c{i}"), redis, handle, keys=keys,
                                 batch=4))
    try:
        now = time.time()
        for i in range(40):
            answer = Answer(200, [("X-Version", "3.1" if i % 4 else "0.9")], b"{}", 2)
            await redis.xadd(keys.v2, {b"e": encode_event(CandidateEvent(new_id(), now + i / 100,
                                                                         answer))})
        for comparer in replicas:
            await comparer.reader.ensure_groups()

        async def stored() -> bool:  # both read at once, a few entries each time
            await asyncio.gather(*(comparer.run_once() for comparer in replicas))
            return await store.count() == 40

        await wait_for(stored, 60, "every candidate stored")
        found = sorted((d["version"], d["id"]) for d in await store.deploys())
        assert found == [("0.9", "manual"), ("3.1", detected("3.1", now, "X-Version")["id"])]
        [auto] = await store.deploys(version="3.1")
        assert now < auto["ts"] < now + 0.4  # when a replica first saw it
        assert all(c._versions == {"0.9", "3.1"} for c in replicas)  # each saw both
    finally:
        for comparer in replicas:
            await comparer.stop()
            await comparer.store.close()
        await store.close()
