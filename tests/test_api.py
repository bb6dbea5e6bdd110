"""The reports API on a real comparer: access control and figures that add up."""

from __future__ import annotations

import socket
import time
from typing import Any

import aiohttp
import pytest

from comparer import ReportsApi, open_store
from shadow.bus import connect
from shadow.errors import ConfigError


async def test_token_is_required_when_configured(reports_api) -> None:
    api = await reports_api(api_token="s3cret")
    async with aiohttp.ClientSession() as client:
        url = f"http://127.0.0.1:{api.port}/api/summary"
        async with client.get(url) as r:
            assert r.status == 401 and "Bearer" in (await r.json())["error"]
        async with client.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with client.get(url, headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200 and (await r.json())["total"] == 0
        async with client.get(f"http://127.0.0.1:{api.port}/metrics") as r:
            assert r.status == 401  # closed unless --metrics-open
        async with client.get(f"http://127.0.0.1:{api.port}/api/firehose") as r:
            assert r.status == 401
        async with client.get(f"http://127.0.0.1:{api.port}/") as r:  # static: asks for it
            page = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            assert "/api/firehose" in page and "API token" in page


async def test_metrics_can_be_left_open(reports_api) -> None:
    api = await reports_api(api_token="s3cret", metrics_open=True)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{api.port}/metrics") as r:
            assert r.status == 200 and "shadow_" in await r.text()
        async with client.get(f"http://127.0.0.1:{api.port}/api/summary") as r:
            assert r.status == 401


def test_off_loopback_without_token_is_refused_before_binding(settings_factory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_factory(api=f"0.0.0.0:{port}")
    with pytest.raises(ConfigError, match="SHADOW_API_TOKEN"):
        ReportsApi(settings, open_store(settings.store), connect("redis://127.0.0.1:1", 1.0))
    with socket.socket() as again:  # nothing was bound: the port is still free
        again.bind(("127.0.0.1", port))


def test_dashboard_puts_traffic_data_on_the_page_only_as_text() -> None:
    """URLs, headers and diff values come from clients: never parsed as HTML (no XSS)."""
    from comparer.api import DASHBOARD
    page = DASHBOARD.decode()
    assert "textContent" in page
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in page


async def test_without_a_token_web_pages_cannot_reach_the_api(reports_api) -> None:
    """The tokenless API is loopback-only; these are the two ways a web page in the
    engineer's browser could still reach it, and both are refused."""
    api = await reports_api()
    base = f"http://127.0.0.1:{api.port}"
    async with aiohttp.ClientSession() as client:
        # DNS rebinding: evil.example resolves to 127.0.0.1, so the browser sends its name
        async with client.get(f"{base}/api/summary", headers={"Host": "evil.example"}) as r:
            assert r.status == 403 and "loopback" in (await r.json())["error"]
        for host in (f"localhost:{api.port}", f"127.0.0.1:{api.port}", f"[::1]:{api.port}"):
            async with client.get(f"{base}/api/summary", headers={"Host": host}) as r:
                assert r.status == 200, host
        # a cross-site "simple" POST (no preflight) must not triage a class
        async with client.post(f"{base}/api/classes/abc", data='{"status": "accepted"}',
                               headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415 and "application/json" in (await r.json())["error"]
        async with client.post(f"{base}/api/classes/abc", json={"status": "accepted"}) as r:
            assert r.status == 404  # JSON is accepted: there is just no such class


async def _seed_two_phases(store, now: float) -> None:
    """An hour ago: two matches and a mismatch; a minute ago: a match and a mismatch."""
    from tests.test_store_contract import answer, exchange_events, ingest

    for i, (age_s, v2) in enumerate([(3600, None), (3600, None), (3600, answer({"id": "2"})),
                                     (60, None), (60, answer({"id": 4, "more": 1}))]):
        await ingest(store, exchange_events(i, ts=now - age_s, v2=v2))


async def test_reports_count_the_window_asked_for_and_say_which(reports_api) -> None:
    from comparer.api import STORE_KEY
    from shadow.windows import bucket_of, iso

    api = await reports_api()
    now = time.time()
    await _seed_two_phases(api.app[STORE_KEY], now)
    base = f"http://127.0.0.1:{api.port}/api"
    recent = iso(bucket_of(now - 60))
    async with aiohttp.ClientSession() as client:
        async def get(path: str) -> Any:
            async with client.get(base + path) as r:
                assert r.status == 200, (path, await r.text())
                return await r.json()

        everything = await get("/summary")
        assert (everything["total"], everything["mismatched"]) == (5, 2)
        assert everything["window"]["since"] is None and everything["window"]["until"] is None
        half_hour_ago = bucket_of(time.time() - 1800)  # the API's own clock is a little later
        for since, shown in (("30m", (iso(half_hour_ago), iso(half_hour_ago + 60))),
                             (recent, (recent,)), (str(bucket_of(now - 60) + 59), (recent,))):
            s = await get(f"/summary?since={since}")
            assert (s["total"], s["matched"], s["mismatched"]) == (2, 1, 1), since
            assert s["window"]["since"] in shown and s["window"]["bucket_s"] == 60
        old = await get(f"/summary?until={recent}")
        assert (old["total"], old["matched"], old["mismatched"]) == (3, 2, 1)
        assert old["window"]["until"] == recent and old["window"]["since"] is None
        [route] = (await get("/routes?since=30m"))["routes"]
        assert route["total"] == 2
        classes = await get("/classes?since=30m")
        assert [c["count"] for c in classes["classes"]] == [1]
        assert classes["window"]["since"] < recent
        assert len((await get("/classes"))["classes"]) == 2
        verdict = await get("/verdict?since=30m&min_samples=1")
        assert [(r["compared"], r["matched"]) for r in verdict["routes"]] == [(2, 1)]
        assert verdict["window"]["since"] < recent
        assert [(r["compared"], r["matched"]) for r in
                (await get("/verdict?min_samples=1"))["routes"]] == [(5, 3)]
        listed = await get("/mismatches?since=30m")
        assert [x["id"] for x in listed["items"]] == ["X000000004"]
        assert len((await get("/mismatches"))["items"]) == 2


async def test_a_bad_window_is_a_400_that_says_what_is_accepted(reports_api) -> None:
    api = await reports_api()
    base = f"http://127.0.0.1:{api.port}/api"
    async with aiohttp.ClientSession() as client:
        for path in ("summary", "routes", "classes", "verdict", "mismatches"):
            for query, name in (("since=yesterday", "since"), ("until=2026-13-01", "until"),
                                ("since=5y", "since")):
                async with client.get(f"{base}/{path}?{query}") as r:
                    error = (await r.json())["error"]
                    assert r.status == 400, (path, query)
                    assert error.startswith(f"{name}: expected"), error
                    for form in ("2026-12-02T11:00:00Z", "15m", "24h", "7d"):
                        assert form in error, (path, error)
            async with client.get(f"{base}/{path}?since=1h&until=2h") as r:
                assert r.status == 400 and "since is after until" in (await r.json())["error"]


async def test_the_summary_names_the_paths_whose_bodies_are_stored_raw(reports_api) -> None:
    for overrides, raw in (({}, []),
                           ({"capture_bodies": "/login*=none,/pay/*=raw,/x=raw",
                             "allow_raw_bodies": True}, ["/pay/*", "/x"])):
        api = await reports_api(**overrides)
        async with aiohttp.ClientSession() as s, \
                s.get(f"http://127.0.0.1:{api.port}/api/summary") as r:
            assert (await r.json())["raw_bodies"] == raw
