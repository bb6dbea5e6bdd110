"""Deploy markers (#13 item 3): kept by both stores (the store contract's fixture), marked and
listed through the real reports API, and the verdict's default window starting at the latest
V2 deploy."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from comparer.store import Store
from shadow.deploys import DeployError, deploy, round_up, since_deploy
from shadow.windows import Window, bucket_ceil
from tests.test_store_contract import answer, exchange_events, ingest, store  # noqa: F401

T0 = 1_800_000_000.0


async def test_both_stores_keep_deploys_latest_first(store: Store) -> None:  # noqa: F811
    assert await store.deploys() == []
    first = deploy("D1", T0, "v2", "2.4.0", "first")
    await store.add_deploy(first)
    await store.add_deploy(deploy("D2", T0 + 600, "v1", None, None))
    await store.add_deploy(deploy("D3", T0 + 300, "v2", "2.4.1", None))  # marked late, went live before D2
    await store.add_deploy(first)  # the same marker twice: once
    assert [d["id"] for d in await store.deploys()] == ["D2", "D3", "D1"]
    assert await store.deploys("v2", limit=1) == [deploy("D3", T0 + 300, "v2", "2.4.1")]
    [d1] = [d for d in await store.deploys("v2") if d["id"] == "D1"]
    assert d1 == first and d1["at"] == "2027-01-15T08:00:00Z"


def test_a_deploy_window_starts_at_the_first_whole_minute_after_it() -> None:
    w = since_deploy(deploy("D", T0 + 30, "v2"))
    assert (w.since, w.until) == (bucket_ceil(T0 + 30), None) == (T0 + 60, None)
    # where the store compacted minutes into hours, the window starts at the next whole hour
    hour = Window(int(T0), None, since_bucket_s=3600)  # T0 + 60, as the store resolved it
    assert round_up(hour, int(T0) + 60) == Window(int(T0) + 3600, None, since_bucket_s=3600)
    assert round_up(w, int(T0) + 60) == w
    for bad in ({"target": "v3"}, {"version": "x" * 501}, {"note": 5}):
        with pytest.raises(DeployError):
            deploy("D", T0, **{"target": "v2", **bad})


async def test_the_api_marks_and_lists_deploys_and_the_verdict_starts_at_the_latest(reports_api):
    from comparer.api import STORE_KEY

    api = await reports_api()
    url = f"http://127.0.0.1:{api.port}/api"
    now = time.time()
    # an hour ago V2 had a bug; it was fixed by a release marked half an hour ago
    for i in range(3):
        await ingest(api.app[STORE_KEY], exchange_events(i, ts=now - 3600,
                                                         v2=answer({"id": str(i)})))
    for i in range(3, 8):
        await ingest(api.app[STORE_KEY], exchange_events(i, ts=now - 60))

    async with aiohttp.ClientSession() as s:
        async def verdict(query: str = "") -> dict[str, Any]:
            async with s.get(f"{url}/verdict?min_samples=1&min_match=50{query}") as r:
                assert r.status == 200
                return await r.json()  # type: ignore[no-any-return]

        before = await verdict()
        assert before["window"]["since"] is None and before["window"]["from_deploy"] is None
        assert before["routes"][0]["samples"] == 8 and before["ready"] is False

        async with s.post(f"{url}/deploys", json={"version": "2.4.1", "note": "fixes ids",
                                                  "at": "30m"}) as r:
            assert r.status == 201
            marked = await r.json()
        assert (marked["target"], marked["version"], marked["note"]) == ("v2", "2.4.1", "fixes ids")
        assert abs(marked["ts"] - (now - 1800)) < 60
        async with s.get(f"{url}/deploys") as r:
            assert (await r.json())["deploys"] == [marked]

        after = await verdict()
        assert after["window"]["from_deploy"] == marked
        assert after["window"]["since_ts"] == bucket_ceil(marked["ts"])
        [route] = after["routes"]
        assert (route["samples"], route["ready"]) == (5, True)
        everything = await verdict("&all_time=true")
        assert everything["routes"][0]["samples"] == 8 and everything["ready"] is False
        assert everything["window"]["from_deploy"] is None
        explicit = await verdict("&since=2h")  # --since overrides the deploy
        assert explicit["routes"][0]["samples"] == 8

        for body, status, text in (
                ({"target": "v3"}, 400, "deploy target must be one of v2, v1"),
                ({"at": "tomorrow"}, 400, "at"),
                ({"at": str(now + 3600)}, 400, "cannot be in the future"),
                ([1], 400, "expected a JSON body")):
            async with s.post(f"{url}/deploys", json=body) as r:
                assert r.status == status and text in (await r.json())["error"], body
        async with s.post(f"{url}/deploys", data="target=v2",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 415  # never from a cross-site form
        async with s.get(f"{url}/deploys?target=v9") as r:
            assert r.status == 400
