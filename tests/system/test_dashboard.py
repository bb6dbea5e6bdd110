"""The dashboard in a real headless Chromium: it shows the summary, follows the live stream,
opens an exchange, and never lets traffic data become markup; on the demo's V1 and V2 it
draws the time series with the deploys, leads from a class to its examples to the exchange
with V1 and V2 side by side and the differing paths highlighted, takes a time window, searches,
shows the verdict's reasons, and fits a 1280x800 window and a 400 px one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from comparer.api import HUB_KEY
from shadow.cli import demo_apps
from shadow.filters import Filters
from tests.browser import Browser, chromium_binary
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.rawhttp import exchange

pytestmark = pytest.mark.skipif(chromium_binary() is None,
                                reason="chromium is not installed (./scripts/test installs it)")

XSS = b"<img/src=x/onerror=window.__pwned=1>"  # no spaces: it goes in the request line


def apps() -> tuple[web.Application, web.Application]:
    def app(version: int) -> web.Application:
        async def thing(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            return web.json_response({"n": n, "name": "a" if version == 1 or n % 2 else "b"})

        a = web.Application()
        a.router.add_get("/things/{n}", thing)
        return a

    return app(1), app(2)


async def test_dashboard_follows_the_stream_and_shows_data_only_as_text(http_server,
                                                                          settings_factory):
    a1, a2 = apps()
    settings = settings_factory(v1=await http_server(a1), v2=await http_server(a2))
    async with Pipeline(settings) as p, Browser() as browser:
        await browser.open(p.api_url + "/")
        hub = p.api.app[HUB_KEY]
        await wait_for(lambda: (bool(hub.listeners) and hub.subscribed.is_set()), 30,
                       "the page to follow the firehose")
        p.comparer.firehose._next_check = 0.0  # see the page now, not within 2 s
        async with aiohttp.ClientSession() as client:
            for i in range(1, 11):
                async with client.get(f"{p.url}/things/{i}") as r:
                    assert r.status == 200
        # a hostile URL, sent raw so that nothing escapes it on the way
        await exchange(p.proxy.port, b"GET /things/11?q=" + XSS + b" HTTP/1.1\r\nHost: x\r\n\r\n")

        async def rows() -> bool:
            return await browser.eval('document.querySelectorAll("#live tbody tr").length') == 11

        await wait_for(rows, 30, "11 live rows")
        texts: list[str] = await browser.eval(
            '[...document.querySelectorAll("#live tbody tr")].map((r) => r.textContent)')
        assert sum("mismatch" in t for t in texts) == 5
        assert any(XSS.decode() in t for t in texts)  # shown, as text
        assert await browser.eval('document.querySelectorAll("#live img").length') == 0
        assert await browser.eval("window.__pwned === undefined")

        async def tiles() -> bool:
            text: Any = await browser.eval('document.getElementById("tiles").textContent')
            return "11total" in text.replace(" ", "")

        await wait_for(tiles, 30, "the summary tiles (refreshed every 5 s)")
        await browser.eval('document.querySelector("#live tbody tr").click()')

        async def detail() -> bool:
            text: Any = await browser.eval('document.getElementById("detail").textContent')
            return '"outcome"' in text and '"request"' in text

        await wait_for(detail, 30, "the clicked exchange")

        # triage from the page: the one mismatch class marked accepted, as `shadow mark` would
        async def class_row() -> bool:
            return await browser.eval('document.querySelectorAll("#classes select").length') == 1

        await wait_for(class_row, 30, "the mismatch class")
        await browser.eval('const s = document.querySelector("#classes select"); '
                           's.value = "accepted"; s.dispatchEvent(new Event("change"))')

        async def accepted() -> bool:
            return [c["status"] for c in await p.store.classes()] == ["accepted"]

        await wait_for(accepted, 30, "the class marked accepted")
        assert browser.errors == []


async def test_dashboard_asks_for_the_token_and_then_shows_the_data(reports_api):
    api = await reports_api(api_token="s3cret")
    async with Browser() as browser:
        await browser.open(f"http://127.0.0.1:{api.port}/")

        async def login_shown() -> bool:
            return await browser.eval(
                'getComputedStyle(document.getElementById("login")).display') == "flex"

        await wait_for(login_shown, 30, "the token form")
        assert await browser.eval('document.getElementById("verdict").textContent') == ""
        await browser.eval('document.getElementById("token").value = "s3cret"; '
                           'document.querySelector("#login button").click()')

        async def loaded() -> bool:
            text: Any = await browser.eval('document.getElementById("verdict").textContent')
            return text == "not ready for cutover"

        await wait_for(loaded, 30, "the data, with the token")
        assert await browser.eval('document.getElementById("login").style.display') == "none"
        assert await browser.eval('sessionStorage.getItem("shadowToken")') == "s3cret"
        assert browser.errors == []


# ---- the demo's V1 and V2 (shadow/cli/demo_apps.py), through the whole pipeline ----

SCREENSHOT_ENV = "SHADOW_DASHBOARD_SCREENSHOT"  # a path: keep the exchange view's PNG there


def js(value: Any) -> str:
    return json.dumps(value)


async def text_of(browser: Browser, selector: str) -> str:
    found: Any = await browser.eval(
        f"[...document.querySelectorAll({js(selector)})].map((e) => e.textContent).join('\\n')")
    return str(found)


async def count(browser: Browser, selector: str) -> int:
    found: Any = await browser.eval(f"document.querySelectorAll({js(selector)}).length")
    return int(found)


async def demo_pipeline(settings_factory: Any, http_server: Any) -> Pipeline:
    v1, v2 = await http_server(demo_apps.build(1)), await http_server(demo_apps.build(2))
    v1b = await http_server(demo_apps.build(1))  # a second V1: /status's server_time is noise
    return Pipeline(settings_factory(v1=v1, v2=v2, v1_secondary=v1b))


async def send_demo_traffic(p: Pipeline) -> int:
    requests: list[tuple[str, str, bytes | None]] = [
        ("GET", path, None) for path in ("/users/3", "/orders/10", "/categories", "/status",
                                         "/products/4")]
    requests += demo_apps.traffic(60)
    async with aiohttp.ClientSession() as client:
        for method, path, body in requests:
            async with client.request(method, p.url + path, data=body) as r:
                await r.read()

    async def settled() -> bool:
        s = await p.summary()
        return s["total"] == len(requests) and s["pending"] == 0

    await wait_for(settled, 60, "every demo exchange decided")
    return len(requests)


async def test_dashboard_from_the_chart_to_a_class_to_an_example_side_by_side(
        http_server, settings_factory, tmp_path: Path):
    async with await demo_pipeline(settings_factory, http_server) as p, Browser() as browser:
        await send_demo_traffic(p)
        await browser.viewport(1280, 800)
        await browser.open(p.api_url + "/")

        # the chart: points of the match rate (all time, the default window)
        async def charted() -> bool:
            return await count(browser, "#chart svg circle.pt") > 0

        await wait_for(charted, 30, "the chart's points")
        assert await count(browser, "#chart svg polyline.rate, #chart svg rect.bar") > 0
        # the verdict panel: every route with its reason
        verdict = await text_of(browser, "#verdict-routes tbody tr")
        for route in ("/users/{id}", "/products/{id}", "/orders/{id}", "/categories"):
            assert route in verdict
        assert "not ready" in verdict and "match rate" in verdict
        # each class as a lane: when it appeared and when it was last seen
        assert await count(browser, "#lanes .lane") >= 4

        # a class -> its examples -> the exchange, V1 and V2 side by side
        await browser.eval('[...document.querySelectorAll("#classes tbody tr")]'
                           '.find((tr) => tr.textContent.includes("/users/{id}")).click()')

        async def examples() -> bool:
            return await count(browser, "#examples tbody tr.pick") > 0

        await wait_for(examples, 30, "the class's examples")
        assert "$.name" in await text_of(browser, "#class-paths")
        await browser.eval('document.querySelector("#examples tbody tr.pick").click()')

        async def sides() -> bool:
            return "full_name" in await text_of(browser, "#side-v2 .body .line.hl")

        await wait_for(sides, 30, "the differing path highlighted in V2's column")
        assert '"name"' in await text_of(browser, "#side-v1 .body .line.hl")
        assert '"full_name"' not in await text_of(browser, "#side-v1 .body")
        # the unchanged lines are not highlighted; the differences are listed
        assert "email" not in await text_of(browser, "#side-v2 .body .line.hl")
        assert "email" in await text_of(browser, "#side-v2 .body")
        listed = await text_of(browser, "#xdiff tbody td.mono")
        assert "$.name" in listed and "$.full_name" in listed
        assert "status 200" in await text_of(browser, "#side-v1 .status")
        assert "content-type" in await text_of(browser, "#side-v2 table.compared")
        # 1280x800: V1 and V2 in two columns, and nothing wider than the window
        columns: Any = await browser.eval('getComputedStyle(document.getElementById("sides"))'
                                          '.gridTemplateColumns.split(" ").length')
        assert columns == 2
        assert await browser.eval("document.documentElement.scrollWidth <= innerWidth")
        await browser.eval("scrollTo(0, 0)")  # the sticky header back at the page's top
        png = await browser.screenshot(tmp_path / "exchange.png", "#exchange")
        assert png.startswith(b"\x89PNG")
        if os.environ.get(SCREENSHOT_ENV):  # for the README: docs/dashboard-exchange.png
            shutil.copyfile(tmp_path / "exchange.png", os.environ[SCREENSHOT_ENV])

        # a header difference, and a status difference, through search
        await browser.eval('document.getElementById("s-url").value = "/orders/10"; '
                           'document.getElementById("s-v2").value = "404"; '
                           'document.querySelector("#search button").click()')

        def results(url: str, n: int | None = None) -> Any:
            async def shown() -> bool:
                rows: Any = await browser.eval('[...document.querySelectorAll("#results tbody '
                                               'tr.pick")].map((tr) => tr.textContent)')
                return bool(rows) and all(url in r for r in rows) and n in (None, len(rows))

            return shown

        await wait_for(results("/orders/10", 1), 30, "the one /orders/10 answered 404 by V2")
        await browser.eval('document.querySelector("#results tbody tr.pick").click()')

        async def status_marked() -> bool:
            return "status 404" in await text_of(browser, "#side-v2 .status.hl")

        await wait_for(status_marked, 30, "V2's status highlighted")
        assert "status 200" in await text_of(browser, "#side-v1 .status.hl")

        # noise: /status's server_time differs between the two V1s, so it is V1's own noise
        await browser.eval('document.getElementById("s-url").value = "/status"; '
                           'document.getElementById("s-v2").value = ""; '
                           'document.querySelector("#search button").click()')
        await wait_for(results("/status"), 30, "the /status exchanges")
        await browser.eval('document.querySelector("#results tbody tr.pick").click()')

        async def noise_marked() -> bool:
            return "server_time" in await text_of(browser, "#side-v2 .body .line.noise")

        await wait_for(noise_marked, 30, "the noise path marked as noise")
        assert "noise" in await text_of(browser, "#xdiff tbody tr.noise")
        assert await count(browser, "#side-v2 .body .line.hl") == 0

        # by request id (the client's X-Request-Id, or the exchange's own id)
        some = (await p.store.list_exchanges(Filters(url="/categories", limit=1)))[0][0]
        await browser.eval(f'document.getElementById("s-url").value = ""; '
                           f'document.getElementById("s-id").value = {js(some["request_id"])}; '
                           'document.querySelector("#search button").click()')

        async def by_id() -> bool:
            return "/categories" in await text_of(browser, "#xhead .url") and \
                "cache-control" in await text_of(browser, "#side-v1 table.compared tr.hl")

        await wait_for(by_id, 30, "the exchange found by its request id, header highlighted")

        # header value search (matched by the page on the listed exchanges)
        await browser.eval('document.getElementById("s-id").value = ""; '
                           'document.getElementById("s-header").value = "cache-control: public"; '
                           'document.getElementById("s-url").value = "/categories"; '
                           'document.querySelector("#search button").click()')
        await wait_for(results("/categories"), 30, "the /categories exchanges by their header")
        assert "header text matched" in await text_of(browser, "#search-note")

        # a time window: every report is asked for with since=, and a deploy is drawn
        async with aiohttp.ClientSession() as client:
            async with client.post(p.api_url + "/api/deploys",
                                   json={"version": "2.4.1", "at": "30m"}) as r:
                assert r.status == 201
        await browser.eval("window.__asked = []; const f = window.fetch; "
                           "window.fetch = (u, o) => { window.__asked.push(String(u)); "
                           "return f(u, o); };")
        await browser.eval('document.querySelector("#windows button[data-w=\'1h\']").click()')

        async def windowed() -> bool:
            asked: Any = await browser.eval("window.__asked")
            return all(any(u.startswith(f"/api/{name}?") and "since=1h" in u for u in asked)
                       for name in ("summary", "classes", "verdict", "timeline"))

        await wait_for(windowed, 30, "every report asked with since=1h")

        async def deploy_drawn() -> bool:
            return "2.4.1" in await text_of(browser, "#chart .deploy text")

        await wait_for(deploy_drawn, 30, "the deploy marker on the chart")
        assert (await text_of(browser, "#window-label")).startswith("since")
        assert await count(browser, "#chart svg circle.pt") > 0
        assert await browser.eval('location.hash.includes("w=1h")')
        verdict_window = await text_of(browser, "#verdict-window")
        assert verdict_window.startswith("judged since") and "deploy" not in verdict_window
        assert "/users/{id}" in await text_of(browser, "#verdict-routes tbody")

        # a narrow window: one column, nothing wider than the window
        await browser.viewport(400, 800)
        columns = await browser.eval('getComputedStyle(document.getElementById("sides"))'
                                     '.gridTemplateColumns.split(" ").length')
        assert columns == 1
        assert await browser.eval("document.documentElement.scrollWidth <= innerWidth")
        assert await count(browser, "#chart svg circle.pt") > 0  # redrawn at that width
        assert browser.errors == []


EXCHANGE = {
    "id": "01TEST", "request_id": "req-1", "ts": 1_700_000_000.0, "method": "GET",
    "url": "/carts/1?q=" + XSS.decode(), "route": "/carts/{id}", "outcome": "mismatch",
    "signature": "abc123", "flags": [], "replay_delay_ms": 3.0,
    "request": {"method": "GET", "url": "/carts/1", "headers": [["X-Evil", XSS.decode()]],
                "body": {"text": "", "encoding": "utf-8", "truncated": False}},
    "v1": {"status": 200, "headers": [["Content-Type", "application/json"],
                                      ["Cache-Control", "max-age=60"]], "latency_ms": 2.0,
           "body": {"text": '{"items": [{"id": 5, "qty": 1}, {"id": 7, "qty": 2}], '
                            '"odd key": "<b>x</b>", "total": 12345678901234567890, '
                            '"meta": {"at": "2024-01-01", "trace": "t1"}}',
                    "encoding": "utf-8", "truncated": False}},
    "v2": {"status": 200, "headers": [["Content-Type", "application/json"]], "latency_ms": 3.0,
           "body": {"text": '{"items": [{"id": 7, "qty": 3}, {"id": 5, "qty": 1}], '
                            '"odd key": "<b>y</b>", "total": 12345678901234567891, '
                            '"meta": {"at": "2024-01-02", "trace": "t2"}}',
                    "encoding": "utf-8", "truncated": False}},
    "diff": [{"path": '$.items["id=7"].qty', "kind": "changed", "v1": 2, "v2": 3},
             {"path": '$["odd key"]', "kind": "changed", "v1": "<b>x</b>", "v2": "<b>y</b>"},
             {"path": "$.total", "kind": "changed", "v1": 12345678901234567890,
              "v2": 12345678901234567891},
             {"path": "cache-control", "kind": "header", "v1": "max-age=60", "v2": None},
             {"path": "$.meta.at", "kind": "changed", "v1": "2024-01-01", "v2": "2024-01-02"}],
    "noise": [{"path": "$.meta.trace", "kind": "changed", "v1": "t1", "v2": "t2"}],
}


async def test_exchange_view_maps_each_difference_to_its_lines_as_text_only(reports_api):
    """JSONPath-like paths (array items matched by key, quoted names, big numbers, headers)
    land on the right rendered lines in each column; noise is marked apart; a text answer's
    `line[n]` differences mark V1's line n and V2's new line; markup in traffic stays text."""
    api = await reports_api()
    async with Browser() as browser:
        await browser.open(f"http://127.0.0.1:{api.port}/")
        await browser.eval(f"renderExchange({js(EXCHANGE)})")

        async def lines(side: str, cls: str) -> list[str]:
            found: Any = await browser.eval(
                f'[...document.querySelectorAll("#side-{side} .body .line.{cls}")]'
                '.map((l) => l.lastChild.textContent.trim())')
            return list(found)

        # V1: items[1] is id 7 (its qty 2); V2: items[0] is id 7 (its qty 3)
        assert await lines("v1", "hl") == ['"qty": 2', '"odd key": "<b>x</b>",',
                                           '"total": 12345678901234567890,',
                                           '"at": "2024-01-01",']
        assert await lines("v2", "hl") == ['"qty": 3', '"odd key": "<b>y</b>",',
                                           '"total": 12345678901234567891,',
                                           '"at": "2024-01-02",']
        assert await lines("v2", "noise") == ['"trace": "t2"']
        assert "cache-control" in await text_of(browser, "#side-v1 table.compared tr.hl")
        assert "noise" in await text_of(browser, "#xdiff tbody tr.noise")
        assert await count(browser, "#xdiff tbody tr") == 6
        assert await count(browser, "img, .body b, #xdiff b") == 0  # traffic stayed text
        assert XSS.decode() in await text_of(browser, "#xhead .url")

        text = {**EXCHANGE, "diff": [{"path": "line[2]", "kind": "changed", "v1": "two",
                                      "v2": "TWO"}], "noise": []}
        text["v1"] = {**EXCHANGE["v1"], "body": {"text": "one\ntwo\nthree", "truncated": False}}
        text["v2"] = {**EXCHANGE["v2"], "body": {"text": "one\nTWO\nthree", "truncated": False}}
        await browser.eval(f"renderExchange({js(text)})")
        assert await lines("v1", "hl") == ["two"]
        assert await lines("v2", "hl") == ["TWO"]
        assert await browser.eval("window.__pwned === undefined")
        assert browser.errors == []


async def test_chart_draws_a_compacted_day_whole_at_its_average_per_step(reports_api):
    """A point that is a whole compacted day (span_s) gets a bar as wide as the day, as high
    as its mismatches per step on average, and its exact count in the tooltip."""
    api = await reports_api()
    day = 1_699_920_000
    counts = {"compared": 240, "matched": 192, "mismatched": 48, "v2_errors": 0,
              "compare_errors": 0, "match_rate": 0.8}
    timeline = {"step_s": 7200, "from_ts": day, "until_ts": day + 2 * 86400, "classes": [],
                "routes": [], "classes_left_out": 0,
                "points": [{"ts": day, "span_s": 86400, "total": 240, **counts},
                           {"ts": day + 86400, "span_s": 7200, "total": 240, **counts}]}
    async with Browser() as browser:
        await browser.viewport(1280, 800)
        await browser.open(f"http://127.0.0.1:{api.port}/")
        async def refreshed() -> bool:
            return (await text_of(browser, "#updated")).startswith("updated")

        await wait_for(refreshed, 30, "the page's first refresh")  # it would redraw the chart
        # drawn and read in one go: a later refresh cannot come in between
        drawn: Any = await browser.eval(
            f"state.timeline = {js(timeline)}; state.deploys = []; drawChart(); "
            '[[...document.querySelectorAll("#chart rect.bar")].map((b) => ['
            "b.width.baseVal.value, b.height.baseVal.value, b.textContent]), "
            'document.querySelectorAll("#chart circle.pt").length]')
        ((day_w, day_h, day_title), (step_w, step_h, _)), points = drawn
        assert day_w > 10 * step_w  # a day is 12 steps of 2 hours
        assert abs(day_h * 12 - step_h) < 0.5  # 48 in a day: 4 per step on average
        assert "48 mismatches" in day_title and "compacted" in day_title
        assert points == 2
        assert browser.errors == []
