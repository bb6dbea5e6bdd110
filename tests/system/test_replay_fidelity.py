"""V2 gets the request as V1 got it: end-to-end headers, request id, Host, X-Forwarded-*."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shadow.forwarding import upstream_request_headers
from shadow.model import Request
from shadow.settings import load_settings
from subscriber.client import replay_headers
from subscriber.policy import Policy
from tests.conftest import wait_for
from tests.pipeline import Pipeline

CLIENT_HEADERS = [
    ("Host", "shop.example"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
    ("Expect", "100-continue"), ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-For", "6.6.6.6"), ("Accept", "*/*"), ("X-Request-Id", "client-id"),
    ("Content-Length", "0"), ("Cookie", "s=1"),
]


def test_replay_headers_are_the_headers_v1_got() -> None:
    request = Request("GET", "/a?b=1", CLIENT_HEADERS, client="10.0.0.7", scheme="https")
    for flags in ({}, {"preserve_host": True}, {"trust_forwarded": True},
                  {"forwarded_headers": False}, {"preserve_host": True, "trust_forwarded": True}):
        s = load_settings(flags, env={})
        v1 = upstream_request_headers(CLIENT_HEADERS, "X-Request-Id", "rid", "10.0.0.7", "https",
                                      "shop.example", forwarded=s.forwarded_headers,
                                      trust_forwarded=s.trust_forwarded,
                                      preserve_host=s.preserve_host)
        assert replay_headers(request, s, "rid") == \
            [(k, v) for k, v in v1 if k != "Content-Length"], flags
    # by default (shadow is the first hop): the client's forwarding claims are replaced
    assert replay_headers(request, load_settings({}, env={}), "rid") == [
        ("Accept", "*/*"), ("Cookie", "s=1"), ("X-Request-Id", "rid"),
        ("X-Forwarded-For", "10.0.0.7"), ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example")]
    # --preserve-host: the client's Host, where the client put it
    assert replay_headers(request, load_settings({"preserve_host": True}, env={}), "rid")[0] == \
        ("Host", "shop.example")
    # trusted: the chain goes on
    trusted = dict(replay_headers(request, load_settings({"trust_forwarded": True}, env={}), "r"))
    assert trusted["X-Forwarded-For"] == "6.6.6.6, 10.0.0.7"
    assert trusted["X-Forwarded-Host"] == "evil.example"
    # --v2-set-headers / --v2-remove-headers apply last
    s = load_settings({"v2_set_headers": "X-Forwarded-Host: v2.internal",
                       "v2_remove_headers": "Cookie"}, env={})
    assert Policy.from_settings(s).headers(replay_headers(request, s, "rid")) == [
        ("Accept", "*/*"), ("X-Request-Id", "rid"), ("X-Forwarded-For", "10.0.0.7"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "v2.internal")]
    # an event from a proxy that recorded no address or scheme: no forwarding headers of ours
    old = Request("GET", "/a", CLIENT_HEADERS)
    assert not any(k.lower().startswith("x-forwarded")
                   for k, _ in replay_headers(old, load_settings({}, env={}), "rid"))


def echo_app(seen: list[dict[str, str]]) -> web.Application:
    """Answers what it received: method, absolute URL, Host and headers. Its own address as
    Host reads "(own)", so two servers on two ports answer alike when each got its own."""

    async def echo(request: web.Request) -> web.Response:
        assert request.transport is not None
        address, port = request.transport.get_extra_info("sockname")[:2]
        host = "(own)" if request.host == f"{address}:{port}" else request.host
        headers = {k: (host if k.lower() == "host" else v) for k, v in request.headers.items()}
        seen.append({k.lower(): v for k, v in headers.items()})
        return web.json_response({"method": request.method, "host": host,
                                  "url": f"{request.scheme}://{host}{request.path_qs}",
                                  "headers": headers})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.mark.parametrize("flags", [{}, {"preserve_host": True},
                                   {"preserve_host": True, "trust_forwarded": True}],
                         ids=["own-host", "preserve-host", "preserve-host-trusted"])
async def test_two_identical_echo_servers_compare_equal(http_server, settings_factory,
                                                        flags: dict[str, Any]) -> None:
    seen_v1: list[dict[str, str]] = []
    seen_v2: list[dict[str, str]] = []
    v1, v2 = await http_server(echo_app(seen_v1)), await http_server(echo_app(seen_v2))
    settings = settings_factory(v1=v1, v2=v2, **flags)
    sent = {"Host": "shop.example", "X-Forwarded-Host": "evil.example",
            "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "gopher",
            "Forwarded": "for=6.6.6.6", "X-Custom": "1", "Cookie": "a=b"}
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        for i in range(12):
            headers = {**sent, "X-Request-Id": f"mine-{i}"} if i % 2 else sent
            method = "OPTIONS" if i % 3 == 2 else "GET"
            async with client.request(method, f"{p.url}/echo/{i}?q={i}", headers=headers) as r:
                assert r.status == 200

        async def decided() -> bool:
            o = await p.store.outcomes()
            return sum(o.values()) == 12 and o.get("pending", 0) == 0

        await wait_for(decided, 60, "12 decided exchanges")
        outcomes = await p.store.outcomes()
        assert outcomes == {"match": 12}, [r["top_diffs"] for r in (await p.summary())["routes"]]
    # the comparison was not trivially equal: V1 got forwarding headers, and V2 the same
    assert sorted(sorted(h.items()) for h in seen_v1) == sorted(sorted(h.items()) for h in seen_v2)
    assert seen_v1[0]["x-forwarded-for"].endswith("127.0.0.1")
    assert seen_v1[0]["host"] == ("shop.example" if flags.get("preserve_host") else "(own)")
    assert seen_v1[1]["x-request-id"] == "mine-1"
