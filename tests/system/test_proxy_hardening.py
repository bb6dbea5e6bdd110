"""The proxy's client path under failure and abuse (#17), on real sockets and servers.

V1 dying mid-body, clients leaving mid-answer, slowloris heads, idle connections,
forged X-Forwarded-* headers, oversized WebSocket messages and failing metrics: none
of them may truncate, stall or fail another client's request, or leave an exchange
unrecorded or recorded as whole when it is not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import Publisher
from proxy.app import forwarded_element, upstream_request_headers
from shadow import metrics
from shadow.bus import connect
from shadow.codec import decode_event
from shadow.model import Request, RequestEvent, ResponseEvent
from tests.conftest import wait_for
from tests.nginxctl import Nginx, free_port, nginx_binary, shadow_front_conf
from tests.procs import reap, start_proxy_process
from tests.rawhttp import RawServer, exchange, read_body, read_head

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def exchanges(redis_server, keys, count: int) -> dict[str, tuple[Any, Any]]:
    """Wait for `count` exchanges with both events; {request path: (request, response event)}."""
    r: Any = connect(redis_server.url, 5.0)
    found: dict[str, tuple[Any, Any]] = {}

    async def complete() -> bool:
        events = [decode_event(f[b"e"]) for _, f in await r.xrange(keys.v1)]
        requests = {e.id: e for e in events if isinstance(e, RequestEvent)}
        responses = {e.id: e for e in events if isinstance(e, ResponseEvent)}
        found.clear()
        found.update({q.request.url: (q, responses[i]) for i, q in requests.items()
                      if i in responses})
        return len(found) >= count

    try:
        await wait_for(complete, 60, f"{count} exchanges with request and response events")
        return found
    finally:
        await r.aclose()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer closes (EOF or reset), within a generous bound."""
    received = bytearray()

    async def drain() -> None:
        while chunk := await reader.read(65536):
            received.extend(chunk)

    try:
        await asyncio.wait_for(drain(), 60)
    except ConnectionResetError:
        pass
    return bytes(received)


async def pipelined(port: int, *paths: bytes) -> bytes:
    """Send GETs for `paths` at once on one connection (the last one `Connection: close`);
    return every byte that came back until the proxy closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    last = len(paths) - 1
    writer.write(b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n" +
                          (b"Connection: close\r\n" if i == last else b"") + b"\r\n"
                          for i, p in enumerate(paths)))
    await writer.drain()
    try:
        return await read_to_end(reader)
    finally:
        writer.close()


async def parse_responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """Consecutive HTTP/1.1 answers (Content-Length or chunked) in `data`: (head, body)."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while not reader.at_eof():
        head = await read_head(reader)
        out.append((head, await read_body(reader, head)))
    return out


class DyingV1(RawServer):
    """A raw V1 that answers /ok whole and any other path with `partial` (its head and part
    of its body) and then closes the connection: V1 dying mid-body."""

    def __init__(self, partial: bytes) -> None:
        super().__init__(
            respond=lambda r: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" if r.path == b"/ok"
            else partial,
            close_after=lambda r: r.path != b"/ok")

    @property
    def paths(self) -> list[bytes]:
        return [r.path for r in self.requests]


# -- 1. V1 dies mid-body: the client sees a cut answer, never a whole-looking one ----------

async def test_v1_dying_mid_chunked_body_resets_the_client_connection(proxy_for, redis_server,
                                                                      keys):
    v1 = DyingV1(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    proxy = await proxy_for(await v1.start())
    received = await pipelined(proxy.port, b"/cut", b"/ok")
    assert b"0\r\n\r\n" not in received  # no final chunk: the answer does not look whole
    assert received.count(b"HTTP/1.1 ") <= 1  # the pipelined request was not answered here
    assert v1.paths == [b"/cut"]  # ...nor sent on: the connection was not used again

    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):  # a payload error or a reset, never a body
            async with client.get(f"http://127.0.0.1:{proxy.port}/cut2") as r:
                await r.read()

    found = await exchanges(redis_server, keys, 2)
    for path in ("/cut", "/cut2"):
        answer = found[path][1].answer
        assert answer.status == 200 and answer.body == b"hello"
        assert answer.incomplete == "v1_aborted"
        assert answer.error is not None and "V1 broke off its answer" in answer.error
    await v1.stop()


async def test_v1_dying_mid_streamed_content_length_body_is_not_glued_to_the_next(
        proxy_for, redis_server, keys):
    v1 = DyingV1(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 3000)
    proxy = await proxy_for(await v1.start(), capture_cap_bytes=1024)  # larger than cap: streamed
    received = await pipelined(proxy.port, b"/cut", b"/ok")
    head, _, body = received.partition(b"\r\n\r\n")
    if received:  # a reset may discard what the client had not read yet
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 100000" in head
    assert len(body) < 100000  # the client sees the declared length is not met
    assert b"HTTP/1.1" not in body  # the next answer is not glued into this body
    assert v1.paths == [b"/cut"]

    found = await exchanges(redis_server, keys, 1)
    answer = found["/cut"][1].answer
    assert answer.status == 200 and answer.incomplete == "v1_aborted" and answer.error
    assert answer.body_size == 3000 and answer.body == b"x" * 1024 and answer.body_truncated
    await v1.stop()


async def test_v1_dying_before_a_held_back_head_is_answered_502(proxy_for, redis_server, keys):
    """A small answer is read whole before its head is sent: nothing reached the client yet,
    so it gets an honest 502, and its connection stays usable."""
    v1 = DyingV1(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    proxy = await proxy_for(await v1.start())
    answers = await parse_responses(await pipelined(proxy.port, b"/cut", b"/ok"))
    assert [head.split(b"\r\n")[0] for head, _ in answers] == [b"HTTP/1.1 502 Bad Gateway",
                                                               b"HTTP/1.1 200 OK"]
    assert b"V1 broke off its answer" in answers[0][1]
    assert answers[1][1] == b"ok"

    found = await exchanges(redis_server, keys, 2)
    answer = found["/cut"][1].answer
    assert answer.status == 200 and answer.body == b"0123456789"  # V1's, as far as it went
    assert answer.incomplete == "v1_aborted" and answer.error
    assert found["/ok"][1].answer.incomplete is None and found["/ok"][1].answer.error is None
    await v1.stop()


# -- 12. A client leaving mid-answer: V1's answer is still captured, or flagged -----------

PATTERN = bytes(range(251)) * 4096  # ~1 MiB, no period of a power of two


def big_v1(total: int) -> web.Application:
    body = (PATTERN * (total // len(PATTERN) + 1))[:total]

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = total
        await response.prepare(request)
        for start in range(0, total, 64 * 1024):
            await response.write(body[start:start + 64 * 1024])
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    return app


async def test_client_leaving_mid_answer_capture_goes_on_to_the_cap(http_server, proxy_for,
                                                                   redis_server, keys):
    """The client reads a little and leaves. The proxy finds out only when its writes fail,
    after at most the socket buffers (a few MiB); the capture (8 MiB) goes on from V1 to
    the cap, and the answer is flagged client_aborted since V1 had more (24 MiB)."""
    cap, total = 8 * 1024 * 1024, 24 * 1024 * 1024
    v1 = await http_server(big_v1(total))
    proxy = await proxy_for(v1, capture_cap_bytes=cap)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep the client's buffer small
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readexactly(1000)
    writer.transport.abort()  # unread data: the close is a reset

    answer = (await exchanges(redis_server, keys, 1))["/big"][1].answer
    assert answer.error is None  # V1 did nothing wrong
    assert answer.incomplete == "client_aborted"
    body = answer.body
    assert len(body) == cap and body == (PATTERN * 9)[:cap]  # captured on, up to the cap
    assert cap <= answer.body_size < total


async def test_clients_leaving_before_small_answers_still_get_both_events(http_server,
                                                                          proxy_for,
                                                                          redis_server, keys):
    """A load generator stopping: clients gone while V1 works. Every request is recorded
    with V1's whole answer, which is fit to compare (no error, not incomplete)."""
    n = 16
    arrived: list[str] = []
    release = asyncio.Event()

    async def small(request: web.Request) -> web.Response:
        arrived.append(request.match_info["i"])
        await release.wait()
        return web.Response(text=f"answer {request.match_info['i']}")

    app = web.Application()
    app.router.add_get("/small/{i}", small)
    proxy = await proxy_for(await http_server(app))
    writers = []
    for i in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET /small/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        writers.append(writer)
    await wait_for(lambda: len(arrived) == n, 60, "every request at V1")
    for writer in writers:
        writer.transport.abort()
    for _ in range(10):  # let the proxy take in the resets before V1 answers
        await asyncio.sleep(0)
    release.set()

    found = await exchanges(redis_server, keys, n)
    for i in range(n):
        request, response = found[f"/small/{i}"]
        assert request.request.method == "GET"
        assert response.answer.status == 200
        assert response.answer.body == f"answer {i}".encode()
        assert response.answer.error is None and response.answer.incomplete is None


async def test_a_client_leaving_mid_upload_is_recorded_not_blamed_on_v1(http_server, proxy_for,
                                                                        redis_server, keys):
    """The request event says its body is not whole (so it is never replayed as if it
    were), and V1's side says the client left, not that V1 failed."""
    arrived = asyncio.Event()

    async def upload(request: web.Request) -> web.Response:
        arrived.set()
        try:
            await request.read()
        except ConnectionError:
            pass
        return web.Response(text="never seen")

    app = web.Application()
    app.router.add_post("/up", upload)
    proxy = await proxy_for(await http_server(app), capture_cap_bytes=1024 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + b"a" * 100000)
    await asyncio.wait_for(arrived.wait(), 60)  # the upload is under way to V1
    writer.close()

    request, response = (await exchanges(redis_server, keys, 1))["/up"]
    assert request.request.body_truncated and request.request.body_size <= 100000
    assert response.answer.incomplete == "client_aborted"
    assert response.answer.error == "the client left before its request body was whole"


# -- 5. Request-head deadline and keep-alive idle time -----------------------------------

async def test_slowloris_is_closed_at_the_head_deadline_while_others_are_served(proxy_for):
    v1 = RawServer(lambda r: OK)
    proxy = await proxy_for(await v1.start(), header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:  # one header byte at a time, for as long as it is let
        try:
            while True:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    slow = asyncio.create_task(trickle(), name="slowloris")
    try:
        _, body = await exchange(proxy.port, b"GET /normal HTTP/1.1\r\nHost: x\r\n\r\n")
        assert body == b"hello"
        received = await read_to_end(reader)  # closed, or this times out
        assert received == b"" or received.startswith(b"HTTP/1.1 408 Request Timeout")
        assert [r.request_line for r in v1.requests] == [b"GET /normal HTTP/1.1"]
    finally:
        slow.cancel()
        writer.close()
        await v1.stop()


async def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(proxy_for):
    v1 = RawServer(lambda r: OK)
    proxy = await proxy_for(await v1.start(), keepalive_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await read_head(reader)
        assert await read_body(reader, head) == b"hello"
        assert b"Connection: close" not in head  # kept alive...
        assert await read_to_end(reader) == b""  # ...until idle for the keep-alive time
    finally:
        writer.close()
        await v1.stop()


async def test_the_head_deadline_spares_idle_connections_and_slow_bodies(proxy_for):
    """The deadline is for heads only. Proven without sleeping: a connection opened later
    that sends nothing is closed at its deadline; by then the idle keep-alive connection
    and the slow body have waited longer than the deadline, and both are still served."""
    v1 = RawServer(lambda r: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(r.body) or 5, r.body or b"hello"))
    proxy = await proxy_for(await v1.start(), header_timeout_s=0.3, keepalive_timeout_s=600)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", proxy.port)
    body_r, body_w = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        idle_w.write(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await read_body(idle_r, await read_head(idle_r)) == b"hello"
        body_w.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\nab")
        assert (await read_head(body_r)).startswith(b"HTTP/1.1 100")  # its head is in
        later_r, later_w = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await read_to_end(later_r) == b""  # silent: closed at the deadline, no 408
        later_w.close()
        idle_w.write(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await read_body(idle_r, await read_head(idle_r)) == b"hello"
        body_w.write(b"cde")
        head = await read_head(body_r)
        assert head.startswith(b"HTTP/1.1 200") and await read_body(body_r, head) == b"abcde"
    finally:
        idle_w.close()
        body_w.close()
        await v1.stop()


# -- 6. Forwarded headers: the client's are not trusted unless configured ------------------

FORGED = [("Host", "front.example"), ("X-Forwarded-For", "6.6.6.6"),
          ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https"),
          ("Forwarded", "for=6.6.6.6;host=evil.example"), ("X-Real-IP", "6.6.6.6"),
          ("X-Forwarded-Port", "443"), ("Accept", "*/*")]


def test_forwarded_headers_are_replaced_unless_trusted():
    def build(**kw: Any) -> dict[str, str]:
        out = upstream_request_headers(FORGED, "X-Request-Id", "rid", "10.0.0.1", "http",
                                       "front.example", **kw)
        return {k.lower(): v for k, v in out}

    untrusted = build()
    assert untrusted["x-forwarded-for"] == "10.0.0.1"
    assert untrusted["x-forwarded-host"] == "front.example"
    assert untrusted["x-forwarded-proto"] == "http"
    assert {"forwarded", "x-real-ip", "x-forwarded-port"}.isdisjoint(untrusted)
    assert untrusted["accept"] == "*/*"
    assert {"forwarded", "x-forwarded-for", "x-real-ip"}.isdisjoint(build(forwarded=False))

    trusted = build(trust_forwarded=True)
    assert trusted["x-forwarded-for"] == "6.6.6.6, 10.0.0.1"  # extended with this hop
    assert trusted["x-forwarded-host"] == "evil.example"  # kept: the trusted hop's word
    assert trusted["x-forwarded-proto"] == "https"
    assert trusted["x-real-ip"] == "6.6.6.6" and trusted["x-forwarded-port"] == "443"
    assert trusted["forwarded"] == ("for=6.6.6.6;host=evil.example, "
                                    "for=10.0.0.1;host=front.example;proto=http")


def test_forwarded_element_quotes_what_is_not_a_token():
    assert forwarded_element("::1", "h.example:8080", "https") == \
        'for="[::1]";host="h.example:8080";proto=https'
    assert forwarded_element(None, 'a"b', "http") == 'host="a\\"b";proto=http'


async def test_forged_forwarded_headers_never_reach_v1(proxy_for):
    v1 = RawServer(lambda r: OK)
    proxy = await proxy_for(await v1.start())
    forged = b"".join(f"{k}: {v}\r\n".encode() for k, v in FORGED)
    await exchange(proxy.port, b"GET / HTTP/1.1\r\n" + forged + b"\r\n")
    sent = v1.requests[-1]
    assert sent.header(b"x-forwarded-for") == b"127.0.0.1"
    assert sent.header(b"x-forwarded-host") == b"front.example"
    assert sent.header(b"x-forwarded-proto") == b"http"
    for name in (b"forwarded", b"x-real-ip", b"x-forwarded-port"):
        assert sent.header(name) is None, name
    await v1.stop()


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (./scripts/test "
                                                   "installs Debian's nginx-light)")
async def test_behind_nginx_v1_gets_what_nginx_saw(redis_server, keys, tmp_path):
    """nginx/shadow.conf in front of a real `shadow proxy --trust-forwarded true` process,
    the documented set-up: V1 gets the client address and Host as nginx saw them, not what
    the client claimed."""
    v1 = RawServer(lambda r: OK)
    v1_url = await v1.start()
    proxy_port, front_port = free_port(), free_port()
    proxy, _ = await start_proxy_process("--v1", v1_url, "--listen", f"127.0.0.1:{proxy_port}",
                                         "--redis", redis_server.url, "--stream-prefix",
                                         keys.prefix, "--trust-forwarded", "true")
    nginx = Nginx(tmp_path / "nginx", shadow_front_conf(
        front_port, f"127.0.0.1:{proxy_port}", v1_url.removeprefix("http://")))
    try:
        nginx.start(front_port)
        forged = b"".join(f"{k}: {v}\r\n".encode() for k, v in FORGED if k != "Host")
        _, body = await exchange(front_port, b"GET /via HTTP/1.1\r\nHost: front.example\r\n"
                                 + forged + b"Connection: close\r\n\r\n")
        assert body == b"hello"
        sent = v1.requests[-1]
        assert sent.request_line == b"GET /via HTTP/1.1"
        assert sent.header(b"x-forwarded-for") == b"127.0.0.1, 127.0.0.1"  # client, nginx
        assert sent.header(b"x-forwarded-host") == b"front.example"
        assert sent.header(b"x-forwarded-proto") == b"http"
        for name in (b"forwarded", b"x-real-ip", b"x-forwarded-port"):
            assert sent.header(name) is None, name
    finally:
        nginx.stop()
        await reap(proxy)
        await v1.stop()


# -- 2. WebSocket messages are bounded ----------------------------------------------------

LIMIT = 64 * 1024


def ws_v1(closes: list[int | None]) -> web.Application:
    """Echoes messages; answers "big" with a message over LIMIT; records how it was closed."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(max_msg_size=0)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "big":
                await sock.send_bytes(b"v" * (LIMIT * 2))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        closes.append(sock.close_code)
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    return app


async def test_websocket_messages_over_the_limit_close_both_sides_with_1009(http_server,
                                                                            proxy_for):
    closes: list[int | None] = []
    proxy = await proxy_for(await http_server(ws_v1(closes)), ws_max_message_bytes=LIMIT)
    url = f"http://127.0.0.1:{proxy.port}/ws"
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(url, max_msg_size=0) as ws:  # client to V1: too big
            await ws.send_str("hi")
            assert (await ws.receive(timeout=60)).data == "hi"  # within the limit: relayed
            await ws.send_bytes(b"c" * (LIMIT * 2))
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
        await wait_for(lambda: closes == [1009], 60, "V1's side closed with 1009")
        async with client.ws_connect(url, max_msg_size=0) as ws:  # V1 to client: too big
            await ws.send_str("big")
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
            assert "--ws-max-message-bytes" in (msg.extra or "")


async def test_an_unfinished_huge_websocket_frame_is_refused_before_it_is_buffered(
        http_server, proxy_for):
    """A client declares a 300 MiB frame and sends only its start: the proxy closes with
    1009 at once, from the frame's declared length; it does not wait to buffer it."""
    proxy = await proxy_for(await http_server(ws_v1([])), ws_max_message_bytes=LIMIT)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
        assert (await read_head(reader)).startswith(b"HTTP/1.1 101")
        mask = os.urandom(4)
        writer.write(b"\x82" + bytes([0x80 | 127]) + struct.pack(">Q", 300 * 1024 * 1024) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * LIMIT)))
        await writer.drain()
        frame = await asyncio.wait_for(reader.readexactly(4), 60)
        assert frame[0] == 0x88  # a close frame...
        assert struct.unpack(">H", frame[2:4])[0] == 1009  # ...saying "message too big"
    finally:
        writer.close()


# -- 8. Metrics can fail; requests cannot ------------------------------------------------

class BrokenMetric:
    """A metric whose every method raises, as prometheus_client can (a bug, a full disk in
    multiprocess mode)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise OSError(28, "No space left on device")
        return fail


async def test_failing_metrics_never_fail_a_request_or_stop_publishing(
        monkeypatch, proxy_for, redis_server, redis, keys):
    for name in ("PROXY_REQUESTS", "PROXY_V1_DURATION", "PROXY_WEBSOCKETS", "EVENTS_PUBLISHED",
                 "EVENTS_DROPPED", "PUBLISH_QUEUE", "EVENTS_PRODUCED"):
        monkeypatch.setattr(metrics, name, BrokenMetric())
    v1 = RawServer(lambda r: OK)
    proxy = await proxy_for(await v1.start())
    for i in range(2):  # the second batch is published too: the publisher is still running
        head, body = await exchange(proxy.port, f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello"
        await exchanges(redis_server, keys, i + 1)

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_v1 = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
    full = Publisher(redis, keys, max_queue=1)  # not started: every event after one is dropped
    unreachable = await proxy_for(dead_v1, publisher=full)
    for _ in range(2):
        head, _ = await exchange(unreachable.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502")  # V1's failure, not the metrics'
    assert full.dropped == 3
    refused, _ = await exchange(proxy.port, b"GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400")
    closed.close()
    await v1.stop()


# -- Shutdown: the publisher stops even when Redis swallows its cancellation --------------

async def test_publisher_stop_returns_whenever_it_cancels_a_batch_in_flight(redis, keys):
    """stop() past its flush deadline cancels the batch on its way to Redis. redis-py can
    swallow that cancellation at some steps of a command and return normally; the loop
    then waited for new events for ever, and `shadow proxy` never finished stopping.
    Cancel at each step of a command in turn: every stop() returns."""
    for steps in range(40):
        publisher = Publisher(redis, keys, linger_s=0)
        await publisher.start()
        publisher.offer(RequestEvent(id=f"x{steps}", request_id="x", ts=0.0,
                                     request=Request("GET", "/", [])))
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(publisher.stop(flush_timeout_s=0))
        await asyncio.wait([stopping], timeout=60)  # (asyncio.wait cancels nothing)
        assert stopping.done(), f"stop() hung, cancelled {steps} steps into a batch"
        await stopping
