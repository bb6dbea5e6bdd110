"""The reports API on a real comparer: access control and figures that add up."""

from __future__ import annotations

import socket

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
