"""The proxy answers exactly what V1 answers, byte for byte, on real sockets."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from typing import Any

import aiohttp
import brotli
import pytest
from aiohttp import web

from shadow.bus import connect
from shadow.codec import decode_event
from shadow.model import RequestEvent, ResponseEvent
from tests.conftest import wait_for
from tests.rawhttp import RawRequest, RawServer, exchange

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Raw: caf\xe9\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello"


async def events(redis_server, keys, count: int) -> list[Any]:
    r = connect(redis_server.url, 5.0)
    try:
        await wait_for(lambda: _xlen_at_least(r, keys.v1, count), 10, f"{count} events")
        return [decode_event(f[b"e"]) for _, f in await r.xrange(keys.v1)]
    finally:
        await r.aclose()


async def _xlen_at_least(r: Any, stream: str, n: int) -> bool:
    return int(await r.xlen(stream)) >= n


async def raw_v1(respond: Callable[[RawRequest], bytes]) -> tuple[RawServer, str]:
    server = RawServer(respond)
    return server, await server.start()


async def test_headers_pass_in_order_with_repeats_odd_bytes_and_without_hop_by_hop(proxy_for):
    v1, url = await raw_v1(lambda r: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, "
                                     b"X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Raw: caf\xe9\r\n"
                                     b"ETag: \"v\"\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello")
    proxy = await proxy_for(url)
    head, body = await exchange(proxy.port, (
        b"GET /a/b?q=%e9&x=a+b&&y=&z=%2F HTTP/1.1\r\nHost: front.example\r\nX-Dup: 1\r\n"
        b"X-Bin: caf\xe9\r\nConnection: X-Secret\r\nX-Secret: s\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic x\r\nX-Dup: 2\r\n\r\n"))
    sent = v1.requests[-1]
    assert sent.request_line == b"GET /a/b?q=%e9&x=a+b&&y=&z=%2F HTTP/1.1"  # byte-exact query
    names = [k.lower() for k, _ in sent.headers]
    assert [v for k, v in sent.headers if k == b"X-Dup"] == [b"1", b"2"]
    assert (b"X-Bin", b"caf\xe9") in sent.headers
    for hop in (b"x-secret", b"te", b"proxy-authorization", b"connection"):
        assert hop not in names
    assert sent.header(b"host") == url.removeprefix("http://").encode()  # rewritten to V1's
    assert sent.header(b"x-forwarded-for") == b"127.0.0.1"
    assert sent.header(b"x-forwarded-host") == b"front.example"
    assert sent.header(b"x-forwarded-proto") == b"http"
    assert body == b"hello"
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines[1:7] == [b"Content-Length: 5", b"X-Raw: caf\xe9", b'ETag: "v"', b"Set-Cookie: a=1",
                          b"Set-Cookie: b=2", b"X-Request-Id: " + sent.header(b"x-request-id")]
    assert len(lines) == 7  # nothing added: no Content-Type, Date, Server; hop-by-hop gone
    await v1.stop()


async def test_host_and_forwarded_headers_are_settings(proxy_for):
    v1, url = await raw_v1(lambda r: OK)
    proxy = await proxy_for(url, preserve_host=True, forwarded_headers=False)
    await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: front.example\r\n\r\n")
    sent = v1.requests[-1]
    assert sent.header(b"host") == b"front.example"
    assert not any(k.lower().startswith(b"x-forwarded") for k, _ in sent.headers)
    await v1.stop()


@pytest.mark.parametrize("incoming, kept", [
    (b"abc-123", True), (b"x" * 128, True), (b"x" * 129, False), (b"has space", False),
    (None, False),
])
async def test_request_id_kept_when_sane_else_generated(proxy_for, redis_server, keys,
                                                        incoming, kept):
    v1, url = await raw_v1(lambda r: OK)
    proxy = await proxy_for(url, request_id_header="X-Trace")
    extra = b"X-Trace: " + incoming + b"\r\n" if incoming is not None else b""
    head, _ = await exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    sent_id = v1.requests[-1].header(b"x-trace")
    assert [v for k, v in v1.requests[-1].headers if k.lower() == b"x-trace"] == [sent_id]
    assert b"X-Trace: " + sent_id in head  # returned to the client
    if kept:
        assert sent_id == incoming
    else:
        assert sent_id != incoming and len(sent_id) == 26  # a fresh, time-ordered id
    request, response = await events(redis_server, keys, 2)
    assert isinstance(request, RequestEvent) and isinstance(response, ResponseEvent)
    assert request.request_id == sent_id.decode() and request.id == response.id
    assert request.id != incoming  # the exchange key is always our own
    await v1.stop()


@pytest.mark.parametrize("method, path, answer", [
    (b"HEAD", b"/h", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"),
    (b"GET", b"/204", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
    (b"GET", b"/304", b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
])
async def test_answers_without_bodies(proxy_for, method, path, answer):
    v1, url = await raw_v1(lambda r: OK if b"/next" in r.request_line else answer)
    proxy = await proxy_for(url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" +
                 b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined: framing must be exact
    first = await reader.readuntil(b"\r\n\r\n")
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    expected_head = answer.split(b"\r\n\r\n")[0]
    assert first.startswith(expected_head + b"\r\nX-Request-Id: ")
    assert second.startswith(b"HTTP/1.1 ")  # no stray body bytes between the two answers
    await v1.stop()


async def test_expect_100_continue(proxy_for):
    v1, url = await raw_v1(lambda r: OK)
    proxy = await proxy_for(url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # before any body byte
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert final.startswith(b"HTTP/1.1 200 OK")
    assert v1.requests[-1].body == b"abc" and v1.requests[-1].header(b"expect") is None
    await v1.stop()


async def test_chunked_both_ways_and_compressed_bodies_untouched(proxy_for, redis_server, keys):
    packed = gzip.compress(b'{"a": 1}' * 1000)
    packed_br = brotli.compress(b'{"a": 1}' * 1000)

    def respond(r: RawRequest) -> bytes:
        if r.request_line.startswith(b"POST"):
            body = b"got %d" % len(r.body)
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + \
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        if r.request_line.startswith(b"GET /br"):
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: br\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(packed_br)) + packed_br
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n" % len(packed)) + packed

    v1, url = await raw_v1(respond)
    proxy = await proxy_for(url)
    head, body = await exchange(proxy.port, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                            b"chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert body == b"got 11" and b"Transfer-Encoding: chunked" in head
    assert v1.requests[-1].body == b"hello world"
    head, body = await exchange(proxy.port, b"GET /z HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    assert body == packed and b"Content-Encoding: gzip" in head  # passed through, not decoded
    head, body = await exchange(proxy.port, b"GET /br HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\n")
    assert body == packed_br and b"Content-Encoding: br" in head
    captured = [e for e in await events(redis_server, keys, 4) if isinstance(e, RequestEvent)]
    assert captured[0].request.body == b"hello world" and captured[0].request.body_size == 11
    await v1.stop()


async def test_v1_timeout_and_v1_down_are_clear_and_recorded(proxy_for, http_server, redis_server,
                                                             keys):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    v1 = await http_server(app)
    proxy = await proxy_for(v1, v1_read_timeout_s=0.3)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{proxy.port}/slow") as r:
            assert r.status == 504 and "V1 timed out" in await r.text()
    down = await proxy_for("http://127.0.0.1:1")
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{down.port}/x") as r:
            assert r.status == 502 and "V1 unreachable" in await r.text()
    answers = [e for e in await events(redis_server, keys, 4) if isinstance(e, ResponseEvent)]
    assert sorted((a.answer.status, a.answer.error) for a in answers) == [
        (502, "V1 unreachable: ClientConnectorError"), (504, "V1 timed out")]


@pytest.mark.parametrize("raw", [
    b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
    b"GET http://other.example/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
])
async def test_proxy_never_connects_anywhere_but_v1(proxy_for, raw):
    v1, url = await raw_v1(lambda r: OK)
    proxy = await proxy_for(url)
    head, _ = await exchange(proxy.port, raw, read_body=False)
    assert head.startswith(b"HTTP/1.1 400") and v1.requests == []
    await v1.stop()


async def test_websocket_passes_through(proxy_for, http_server):
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["chat"])
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    proxy = await proxy_for(await http_server(app))
    async with aiohttp.ClientSession() as client, \
            client.ws_connect(f"http://127.0.0.1:{proxy.port}/ws", protocols=["chat"]) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
        await ws.send_bytes(b"\x00\x01\x02")
        assert (await ws.receive(timeout=5)).data == b"\x02\x01\x00"
