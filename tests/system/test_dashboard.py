"""The dashboard in a real headless Chromium: it shows the summary, follows the live stream,
opens an exchange, and never lets traffic data become markup."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from comparer.api import HUB_KEY
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
