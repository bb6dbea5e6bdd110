"""The reverse proxy's client path: forward to V1, stream the answer back, emit events.

Nothing here awaits Redis: events go to `Publisher.offer`, which never blocks.
A failing V1 is answered with a short 502/504 and recorded as data on the
exchange (the response event's `error`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import wire
from proxy.publisher import Discard, Publisher
from shadow import metrics
from shadow.ids import is_sane_request_id, new_id
from shadow.model import Answer, Headers, Request, RequestEvent, ResponseEvent
from shadow.serve import start_site
from shadow.settings import Settings

log = logging.getLogger("shadow.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
_CHUNK = 64 * 1024
_COUNT_OK = metrics.PROXY_REQUESTS.labels("ok")


def decode_raw_headers(raw: tuple[tuple[bytes, bytes], ...]) -> Headers:
    """Header pairs as received: original name case, order, repeats; odd bytes kept."""
    return [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
            for k, v in raw]


def hop_by_hop(headers: Headers) -> frozenset[str]:
    """Hop-by-hop names: the fixed set plus every name the Connection header lists."""
    extra = {token.strip().lower() for k, v in headers if k.lower() == "connection"
             for token in v.split(",") if token.strip()}
    return HOP_BY_HOP | extra if extra else HOP_BY_HOP


def upstream_request_headers(headers: Headers, request_id_header: str, request_id: str,
                             remote: str | None, scheme: str, host: str | None, *,
                             forwarded: bool = True, preserve_host: bool = False) -> Headers:
    """Headers for V1 (pure): end-to-end headers in order, the request id, X-Forwarded-*.

    Host is V1's own unless `preserve_host`; Expect is answered by the proxy itself."""
    drop = hop_by_hop(headers) | {"expect", request_id_header.lower()}
    if not preserve_host:
        drop = drop | {"host"}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.append((request_id_header, request_id))
    if not forwarded:
        return out
    forwarded_for = [v for k, v in headers if k.lower() == "x-forwarded-for"]
    if remote:
        out = [(k, v) for k, v in out if k.lower() != "x-forwarded-for"]
        out.append(("X-Forwarded-For", ", ".join([*forwarded_for, remote])))
    if not any(k.lower() == "x-forwarded-proto" for k, _ in headers):
        out.append(("X-Forwarded-Proto", scheme))
    if host and not any(k.lower() == "x-forwarded-host" for k, _ in headers):
        out.append(("X-Forwarded-Host", host))
    return out


def downstream_response_headers(headers: Headers, request_id_header: str,
                                request_id: str) -> Headers:
    """Headers for the client (pure): V1's end-to-end headers, plus the request id if absent."""
    drop = hop_by_hop(headers)
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    lname = request_id_header.lower()
    if not any(k.lower() == lname for k, _ in out):
        out.append((request_id_header, request_id))
    return out


class Proxy:
    """`async with Proxy(settings, publisher) as p:` serves on `p.port`."""

    def __init__(self, settings: Settings, publisher: Publisher | Discard, *,
                 sock: socket.socket | None = None) -> None:
        settings.require("v1")
        assert settings.v1 is not None
        self.settings = settings
        self.publisher = publisher
        self._v1_base = settings.v1.rstrip("/")
        self._sock = sock
        self._rid_header = settings.request_id_header
        self._cap = settings.capture_cap_bytes
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        wire.install()
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.v1_connect_timeout_s,
                                          sock_read=s.v1_read_timeout_s),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        server = web.Server(self.handle, access_log=None)
        # in-flight requests get a few seconds to finish on stop, then connections close
        self._runner = web.ServerRunner(server, handle_signals=False, access_log=None,
                                        shutdown_timeout=5.0)
        self.port = await start_site(self._runner, self._sock or s.listen, "--listen",
                                     reuse_port=True)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        ts = time.time()
        raw_path = request.raw_path
        if request.method == "CONNECT" or not raw_path.startswith("/"):
            metrics.PROXY_REQUESTS.labels("refused").inc()
            return web.Response(status=400, text="shadow: only origin-form requests to V1 are "
                                                 "proxied (no CONNECT, no absolute URIs)\n")
        exchange_id = new_id()
        incoming = request.headers.get(self._rid_header)
        request_id = incoming if is_sane_request_id(incoming) else exchange_id
        in_headers = decode_raw_headers(request.raw_headers)
        out_headers = upstream_request_headers(
            in_headers, self._rid_header, request_id, request.remote, request.scheme,
            request.headers.get("Host"), forwarded=self.settings.forwarded_headers,
            preserve_host=self.settings.preserve_host)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, raw_path, out_headers)
        if request.version >= (1, 1) and \
                request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        captured = _Capture(self._cap)
        data: bytes | AsyncIterator[bytes] | None = None
        request_published = False

        def publish_request() -> None:
            nonlocal request_published
            if not request_published:
                request_published = True
                self.publisher.offer(RequestEvent(
                    id=exchange_id, request_id=request_id, ts=ts,
                    request=Request(request.method, raw_path, in_headers, captured.bytes(),
                                    captured.size, captured.truncated)))

        if request.body_exists:
            length = request.content_length
            if length is not None and length <= self._cap:
                body = await request.content.read()
                captured.add(body)
                data = body
                publish_request()
            else:
                data = self._stream_request(request, captured, publish_request)
        else:
            publish_request()

        assert self._session is not None
        url = URL(self._v1_base + raw_path, encoded=True)
        try:
            upstream = await self._session.request(
                request.method, url, headers=CIMultiDict(out_headers), data=data,
                allow_redirects=False, compress=None,
            )
        except TimeoutError:
            return self._fail(504, "V1 timed out", exchange_id, request_id, started, publish_request)
        except (aiohttp.ClientError, OSError) as e:
            return self._fail(502, f"V1 unreachable: {type(e).__name__}", exchange_id, request_id,
                              started, publish_request)
        metrics.PROXY_V1_DURATION.observe(time.perf_counter() - started)
        publish_request()  # V1 may answer before it read the whole body
        return await self._relay(request, upstream, exchange_id, request_id, started)

    async def _websocket(self, request: web.BaseRequest, raw_path: str,
                         out_headers: Headers) -> web.StreamResponse:
        """Pass a WebSocket through to V1, message by message. Not shadowed: counted."""
        metrics.PROXY_WEBSOCKETS.inc()
        assert self._session is not None
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        headers = [(k, v) for k, v in out_headers if not k.lower().startswith("sec-websocket-")]
        url = URL(self._v1_base + raw_path, encoded=True)
        try:
            upstream = await self._session.ws_connect(
                url, headers=CIMultiDict(headers), protocols=protocols, autoping=False,
                max_msg_size=0, autoclose=False)
        except aiohttp.WSServerHandshakeError as e:
            return web.Response(status=e.status, text=f"shadow proxy: V1 refused the WebSocket: "
                                                      f"{e.message}\n")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return web.Response(status=502, text=f"shadow proxy: V1 unreachable: "
                                                 f"{type(e).__name__}\n")
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                       autoping=False, max_msg_size=0, autoclose=False)
        try:
            await client.prepare(request)
            pumps = [asyncio.create_task(_pump(client, upstream), name="ws-to-v1"),
                     asyncio.create_task(_pump(upstream, client), name="ws-to-client")]
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            await upstream.close()
            await client.close()
        return client

    async def _stream_request(self, request: web.BaseRequest, captured: _Capture,
                              done: object) -> AsyncIterator[bytes]:
        try:
            async for chunk in request.content.iter_chunked(_CHUNK):
                captured.add(chunk)
                yield chunk
        finally:
            done()  # type: ignore[operator]

    async def _relay(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse,
                     exchange_id: str, request_id: str, started: float) -> web.StreamResponse:
        v1_headers = decode_raw_headers(upstream.raw_headers)
        response = wire.FaithfulResponse(status=upstream.status, reason=upstream.reason,
                                         headers=CIMultiDict(downstream_response_headers(
                                             v1_headers, self._rid_header, request_id)))
        captured = _Capture(self._cap)
        error: str | None = None
        try:
            length = upstream.content_length
            if length is not None and length <= self._cap:
                body = await upstream.read()
                captured.add(body)
                response.send_headers_with_body()  # one write: head and body together
                await response.prepare(request)
                if body:
                    await response.write(body)
            else:
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    captured.add(chunk)
                    await response.write(chunk)
            await response.write_eof()
            _COUNT_OK.inc()
        except TimeoutError:
            error = "V1 timed out while sending its body"
        except (aiohttp.ClientError, ConnectionError, OSError) as e:
            error = f"transfer interrupted: {type(e).__name__}"
        finally:
            upstream.release()
            self.publisher.offer(ResponseEvent(
                id=exchange_id, ts=time.time(),
                answer=Answer(status=upstream.status, headers=v1_headers, body=captured.bytes(),
                              body_size=captured.size, body_truncated=captured.truncated,
                              latency_ms=(time.perf_counter() - started) * 1000, error=error)))
        if error:
            log.info("request %s: %s", request_id, error)
        return response

    def _fail(self, status: int, reason: str, exchange_id: str, request_id: str, started: float,
              publish_request: object) -> web.Response:
        publish_request()  # type: ignore[operator]
        metrics.PROXY_REQUESTS.labels("v1_timeout" if status == 504 else "v1_error").inc()
        log.warning("request %s: %s", request_id, reason)
        body = f"shadow proxy: {reason}\n"
        self.publisher.offer(ResponseEvent(
            id=exchange_id, ts=time.time(),
            answer=Answer(status=status, headers=[("Content-Type", "text/plain; charset=utf-8")],
                          body=body.encode(), body_size=len(body),
                          latency_ms=(time.perf_counter() - started) * 1000, error=reason)))
        return web.Response(status=status, text=body, headers={self._rid_header: request_id})


async def _pump(source: Any, sink: Any) -> None:
    """Relay WebSocket messages one way until either side closes."""
    async for msg in source:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type == aiohttp.WSMsgType.PONG:
            await sink.pong(msg.data)
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            await sink.close(code=msg.data or 1000, message=(msg.extra or "").encode())
            return
        else:
            return
    await sink.close()


class _Capture:
    """Keeps the first `cap` bytes of a body and counts the rest."""

    __slots__ = ("cap", "kept", "parts", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.kept = 0
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.cap - self.kept
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self.parts.append(piece)
            self.kept += len(piece)

    @property
    def truncated(self) -> bool:
        return self.size > self.kept

    def bytes(self) -> bytes:
        return b"".join(self.parts) if len(self.parts) != 1 else self.parts[0]
