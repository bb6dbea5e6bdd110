"""The dashboard's time series: comparer.timeline's steps and axis, Store.timeline on every
store (counts per step, overall, per route and per class), GET /api/timeline, and the
listings' URL filter the dashboard's search uses."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from comparer.api import STORE_KEY
from comparer.store import Store
from comparer.timeline import MAX_POINTS, TimelineError, frame, parse_step, view
from shadow.filters import FilterError, Filters, parse_filters
from shadow.model import Request, RequestEvent
from shadow.windows import ALL_TIME, DAY_S, window
from tests.test_store_contract import answer, exchange_events, ingest, xid
from tests.test_store_contract import store as store  # the fixture: every store

T0 = 1_700_000_000 - 1_700_000_000 % 3600  # an hour's start


# ---- pure ----

def test_steps_parse_as_seconds_or_durations_rounded_up_to_the_minute() -> None:
    assert parse_step(None) is None and parse_step(" ") is None
    assert parse_step("300") == 300 and parse_step("5m") == 300 and parse_step("1h") == 3600
    assert parse_step("1d") == 86400 and parse_step("1w") == 604800
    assert parse_step("90s") == 120 and parse_step("1") == 60  # whole minutes: the buckets
    for bad in ("0", "-5", "5x", "1.5h", "soon"):
        with pytest.raises(TimelineError, match="step: expected seconds"):
            parse_step(bad)


def test_the_axis_and_the_default_step() -> None:
    w = window(T0, T0 + 3600)
    assert frame(w, None, None, None, now=T0 + 7200) == (T0, T0 + 3600, 60)  # 60 points
    assert frame(window(T0, T0 + 86400), None, None, None, now=0) == (T0, T0 + 86400, 900)
    # open edges: from the first bucket counted to now
    lo, hi, step = frame(ALL_TIME, T0 + 125, T0 + 3000, None, now=T0 + 3590)
    assert (lo, hi, step) == (T0 + 120, T0 + 3600, 60)
    assert frame(ALL_TIME, None, None, None, now=T0) == (None, None, 60)  # nothing counted
    # a step that would give too many points is raised, and says so by its value
    lo, hi, step = frame(window(T0, T0 + 7 * 86400), None, None, 60, now=0)
    assert step == 600 and lo == T0 and hi == T0 + 7 * 86400 and 7 * 86400 / step <= MAX_POINTS


# ---- every store ----

def mismatching(i: int, ts: float, path: str = "/items/1") -> list[Any]:
    return exchange_events(i, ts=ts, path=path, v2=answer({"id": str(i)}))


async def seed(store: Store) -> None:
    await ingest(store, exchange_events(1, ts=T0 + 5))
    await ingest(store, exchange_events(2, ts=T0 + 10))
    await ingest(store, mismatching(3, T0 + 20))
    await ingest(store, exchange_events(4, ts=T0 + 180, path="/users/7"))
    await ingest(store, mismatching(5, T0 + 7 * 60 + 1))
    await ingest(store, exchange_events(6, ts=T0 + 3 * 3600))  # outside the window below


async def test_timeline_counts_each_step_overall_per_route_and_per_class(store: Store):
    await seed(store)
    t = await store.timeline(window(T0, T0 + 600), 300)
    assert (t["step_s"], t["from_ts"], t["until_ts"]) == (300, T0, T0 + 600)
    assert t["window"]["since_ts"] == T0 and t["window"]["until_ts"] == T0 + 600
    assert [(p["ts"], p["span_s"], p["total"], p["compared"], p["matched"], p["mismatched"],
             p["match_rate"]) for p in t["points"]] == [(T0, 300, 4, 4, 3, 1, 0.75),
                                                        (T0 + 300, 300, 1, 1, 0, 1, 0.0)]
    assert [(r["method"], r["route"], r["total"], r["mismatched"],
             [(p["ts"], p["total"]) for p in r["points"]]) for r in t["routes"]] == [
        ("GET", "/items/{id}", 4, 2, [(T0, 3), (T0 + 300, 1)]),
        ("GET", "/users/{id}", 1, 0, [(T0, 1)])]
    [book] = await store.classes()
    [c] = t["classes"]
    assert c["signature"] == book["signature"] and c["route"] == "/items/{id}"
    assert c["points"] == [(T0, 1), (T0 + 300, 1)] and c["count"] == 2
    # when it appeared and when it was last seen: the class's own sightings
    assert (c["first_seen"], c["last_seen"]) == (book["first_seen"], book["last_seen"])
    assert c["first_seen"] is not None and c["last_seen"] is not None
    assert c["first_seen"] < c["last_seen"]
    assert c["paths"] == book["paths"] and c["status"] == "new"
    # a window elsewhere: nothing of it
    later = await store.timeline(window(T0 + 3600, T0 + 7200), 300)
    assert later["points"] == [] and later["classes"] == [] and later["from_ts"] == T0 + 3600


async def test_a_compacted_bucket_longer_than_the_step_is_one_point_never_cut_up(store: Store):
    await seed(store)
    day = T0 - T0 % DAY_S
    await store.compact(T0 + 3 * DAY_S, settle_s=0)  # that day folded into one bucket
    t = await store.timeline(window(day, day + DAY_S), 3600)
    assert (t["step_s"], t["from_ts"], t["until_ts"]) == (3600, day, day + DAY_S)
    assert [(p["ts"], p["span_s"], p["total"], p["mismatched"]) for p in t["points"]] == \
        [(day, DAY_S, 5, 2)]
    assert [c["points"] for c in t["classes"]] == [[(day, 2)]]
    # a step longer than the bucket: the bucket in its step
    week = await store.timeline(window(day, day + DAY_S), 7 * DAY_S)
    assert [(p["ts"], p["span_s"], p["total"]) for p in week["points"]] == \
        [(day - day % (7 * DAY_S), 7 * DAY_S, 5)]


async def test_all_time_spans_from_the_first_count_to_now_with_the_default_step(store: Store):
    await seed(store)
    t = await store.timeline(ALL_TIME, None, now=T0 + 4 * 3600)
    assert t["step_s"] == 120  # 4 hours in at most 120 points
    assert (t["from_ts"], t["until_ts"]) == (T0, T0 + 4 * 3600)
    assert sum(p["total"] for p in t["points"]) == 6
    assert t["points"][-1]["ts"] == T0 + 3 * 3600


async def test_the_url_filter_finds_a_substring_of_the_stored_url(store: Store):
    for i, url in enumerate(["/items/1?q=red", "/items/2?q=blue", "/orders/3?q=red"]):
        events = exchange_events(i, path=url.split("?")[0])
        request = events[0]
        assert isinstance(request, RequestEvent)
        events[0] = RequestEvent(request.id, request.request_id, request.ts,
                                 Request("GET", url, [("Host", "x")]))
        await ingest(store, events)

    async def ids(text: str) -> list[str]:
        items, _ = await store.list_exchanges(Filters(url=text, limit=10))
        return [x["id"] for x in items]

    assert await ids("q=red") == [xid(2), xid(0)]
    assert await ids("/items/") == [xid(1), xid(0)]
    assert await ids("?q=b") == [xid(1)]
    assert await ids(".*") == []  # text, not a pattern


def test_the_url_filter_is_parsed_like_the_others() -> None:
    assert parse_filters({"url": "/items/1?q"}, 0).url == "/items/1?q"
    assert parse_filters({"url": ""}, 0).url is None
    with pytest.raises(FilterError, match="url: expected at most"):
        parse_filters({"url": "x" * 5000}, 0)


# ---- the API ----

async def test_api_timeline_takes_the_window_step_and_route(reports_api):
    api = await reports_api()
    await seed(api.app[STORE_KEY])
    base = f"http://127.0.0.1:{api.port}/api/timeline"
    since, until = "2023-11-14T22:00:00Z", "2023-11-14T22:10:00Z"
    assert T0 == 1699999200  # the instants above, as ISO 8601
    async with aiohttp.ClientSession() as client:
        async with client.get(base, params={"since": since, "until": until, "step": "5m"}) as r:
            assert r.status == 200
            t = await r.json()
        assert [p["total"] for p in t["points"]] == [4, 1] and t["step_s"] == 300
        assert len(t["routes"]) == 2 and len(t["classes"]) == 1
        async with client.get(base, params={"since": since, "until": until, "step": "5m",
                                            "route": "GET /users/{id}"}) as r:
            one = await r.json()
        assert [r["route"] for r in one["routes"]] == ["/users/{id}"] and one["classes"] == []
        assert one["points"] == t["points"]  # the overall series stays
        async with client.get(base, params={"route": "/items/{id}"}) as r:
            assert [c["route"] for c in (await r.json())["classes"]] == ["/items/{id}"]
        async with client.get(base, params={"step": "soon"}) as r:
            assert r.status == 400 and "step: expected" in (await r.json())["error"]
        async with client.get(base, params={"since": "yesterday-ish"}) as r:
            assert r.status == 400 and "since" in (await r.json())["error"]
        # the listings' URL filter, through the API
        async with client.get(f"http://127.0.0.1:{api.port}/api/exchanges",
                              params={"url": "/users/"}) as r:
            assert [x["id"] for x in (await r.json())["items"]] == [xid(4)]


def test_view_keeps_at_most_max_classes_and_says_how_many_it_left_out() -> None:
    base: Any = {"routes": [], "classes_left_out": 0,
                 "classes": [{"method": "GET", "route": f"/r{i % 2}", "signature": str(i)}
                             for i in range(5)]}
    assert view(base, None, max_classes=2)["classes_left_out"] == 3
    only = view(base, "/r1", max_classes=10)
    assert [c["signature"] for c in only["classes"]] == ["1", "3"]
    assert view(base, "POST /r1")["classes"] == []
