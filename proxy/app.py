"""The reverse proxy's client path: forward to V1, stream the answer back, emit events.

Nothing here awaits Redis: events go to `Publisher.offer`, which never blocks, and
no metrics call can fail or stop a request (`_count`). A V1 that fails before its
answer's head is answered with a short 502/504; one that fails after it has the
client connection reset (a cut answer never looks whole). Either way the exchange
records V1's error as data (the response event's `error`, `incomplete`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import WebSocketError, web
from multidict import CIMultiDict
from yarl import URL

from proxy import wire
from proxy.publisher import Discard, Publisher
from shadow import metrics
from shadow.forwarding import (  # noqa: F401  (re-exported: the proxy's header rules)
    FORWARDED,
    HOP_BY_HOP,
    forwarded_element,
    hop_by_hop,
    upstream_request_headers,
)
from shadow.http import CHUNK, Capture, client_session
from shadow.ids import is_sane_request_id, new_id
from shadow.model import Answer, Event, Headers, Request, RequestEvent, ResponseEvent
from shadow.protection import REDACTED, Protection
from shadow.serve import start_site
from shadow.settings import Settings

log = logging.getLogger("shadow.proxy")

def _count(result: str) -> None:
    """Count a request by result (ok, refused, v1_error, v1_timeout, v1_aborted,
    client_aborted). Every metrics call on the client path is `contained`: never raises."""
    metrics.contained(lambda: metrics.PROXY_REQUESTS.labels(result).inc())


def decode_raw_headers(raw: tuple[tuple[bytes, bytes], ...]) -> Headers:
    """Header pairs as received: original name case, order, repeats; odd bytes kept."""
    return [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
            for k, v in raw]


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
                 sock: socket.socket | None = None, protection: Protection | None = None,
                 digest_key: bytes | None = None) -> None:
        settings.require("v1")
        assert settings.v1 is not None
        self.settings = settings
        self.publisher = publisher
        # keys the digest of V1's whole answer (shadow.http.Capture): the subscriber's key
        self.digest_key = digest_key if digest_key is not None else \
            protection.digest_key if protection is not None else None
        # None: events leave unredacted (only tests and the benchmark's reference do that)
        self.protection = protection
        self._publishing = not isinstance(publisher, Discard)
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
        self._session = client_session(s.v1_connect_timeout_s, s.v1_read_timeout_s,
                                       limit=0, ttl_dns_cache=60, enable_cleanup_closed=True)
        server = wire.GuardedServer(self.handle, head_timeout_s=s.header_timeout_s,
                                    keepalive_timeout=s.keepalive_timeout_s, access_log=None)
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
            _count("refused")
            return web.Response(status=400, text="shadow: only origin-form requests to V1 are "
                                                 "proxied (no CONNECT, no absolute URIs)\n")
        exchange_id = new_id()
        incoming = request.headers.get(self._rid_header)
        request_id = incoming if is_sane_request_id(incoming) else exchange_id
        in_headers = decode_raw_headers(request.raw_headers)
        out_headers = upstream_request_headers(
            in_headers, self._rid_header, request_id, request.remote, request.scheme,
            request.headers.get("Host"), forwarded=self.settings.forwarded_headers,
            trust_forwarded=self.settings.trust_forwarded,
            preserve_host=self.settings.preserve_host)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, raw_path, out_headers)
        if request.version >= (1, 1) and \
                request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        captured = Capture(self._cap)
        data: bytes | AsyncIterator[bytes] | None = None
        request_published = False
        mode = self.protection.body_mode(raw_path) if self.protection is not None else REDACTED

        def publish_request() -> None:
            nonlocal request_published
            if not request_published:
                request_published = True
                self._offer(RequestEvent(
                    id=exchange_id, request_id=request_id, ts=ts,
                    request=Request(request.method, raw_path, in_headers, captured.bytes(),
                                    captured.size, captured.truncated,
                                    client=request.remote, scheme=request.scheme)), mode)

        if request.body_exists:
            length = request.content_length
            if length is not None and length <= self._cap:
                try:
                    body = await request.content.read()
                except (ConnectionError, web.RequestPayloadError) as e:
                    # the client left before its body was whole: V1 never saw the request
                    _count("client_aborted")
                    log.info("request %s: the client left before its body was read (%s)",
                             request_id, type(e).__name__)
                    return web.Response(status=400, text="shadow proxy: incomplete request body\n")
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
        except (aiohttp.ClientError, OSError, web.RequestPayloadError) as e:
            if captured.cut:  # not V1's failure: the client left mid-upload
                return self._fail(502, "the client left before its request body was whole",
                                  exchange_id, request_id, started, publish_request,
                                  incomplete="client_aborted")
            return self._fail(502, f"V1 unreachable: {type(e).__name__}", exchange_id, request_id,
                              started, publish_request)
        metrics.contained(lambda: metrics.PROXY_V1_DURATION.observe(time.perf_counter() - started))
        publish_request()  # V1 may answer before it read the whole body
        return await self._relay(request, upstream, exchange_id, request_id, started, mode)

    def _offer(self, event: Event, mode: str) -> None:
        """Protect the event (redact, seal what the replay needs) and queue it. Never raises:
        an event that cannot be protected is dropped and counted, never sent in clear."""
        if self._publishing:  # produced = published + dropped + queued (shadow:unaccounted_events)
            metrics.contained(lambda: metrics.EVENTS_PRODUCED.labels(event.type).inc())
        protection = self.protection
        if protection is not None:
            try:
                if isinstance(event, RequestEvent):
                    event = protection.request_event(event, mode)
                elif isinstance(event, ResponseEvent):
                    event = ResponseEvent(id=event.id, ts=event.ts,
                                          answer=protection.answer(event.answer, mode))
            except Exception as e:  # the message may quote the data: only its type is logged
                self.publisher.drop("redaction")
                log.error("exchange %s: its %s event could not be redacted (%s); dropped",
                          event.id, event.type, type(e).__name__)
                return
        self.publisher.offer(event)

    async def _websocket(self, request: web.BaseRequest, raw_path: str,
                         out_headers: Headers) -> web.StreamResponse:
        """Pass a WebSocket through to V1, message by message. Not shadowed: counted.

        A message is relayed once whole, so each side reads at most --ws-max-message-bytes
        of one: past it (aiohttp rejects a frame by its declared length, before buffering
        it) both sides are closed with 1009."""
        metrics.contained(lambda: metrics.PROXY_WEBSOCKETS.inc())
        assert self._session is not None
        limit = self.settings.ws_max_message_bytes
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        headers = [(k, v) for k, v in out_headers if not k.lower().startswith("sec-websocket-")]
        url = URL(self._v1_base + raw_path, encoded=True)
        try:
            upstream = await self._session.ws_connect(
                url, headers=CIMultiDict(headers), protocols=protocols, autoping=False,
                max_msg_size=limit, autoclose=False)
        except aiohttp.WSServerHandshakeError as e:
            return web.Response(status=e.status, text=f"shadow proxy: V1 refused the WebSocket: "
                                                      f"{e.message}\n")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return web.Response(status=502, text=f"shadow proxy: V1 unreachable: "
                                                 f"{type(e).__name__}\n")
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                       autoping=False, max_msg_size=limit, autoclose=False)
        try:
            await client.prepare(request)
            pumps = [asyncio.create_task(_pump(client, upstream), name="ws-to-v1"),
                     asyncio.create_task(_pump(upstream, client), name="ws-to-client")]
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            code = next((t.result() for t in pumps if t.done() and not t.cancelled()
                         and t.exception() is None and t.result()), None)
            if code is not None:  # one side broke the limit: the other learns why
                message = f"message larger than --ws-max-message-bytes ({limit})".encode()
                await asyncio.gather(upstream.close(code=code, message=message),
                                     client.close(code=code, message=message))
        finally:
            await upstream.close()
            await client.close()
        return client

    async def _stream_request(self, request: web.BaseRequest, captured: Capture,
                              done: Callable[[], None]) -> AsyncIterator[bytes]:
        """The client's body on to V1 as it comes. Until it is read to its end, the request
        event says truncated (a replay needs the whole body): V1 may answer before it read
        it all, or the client may leave halfway (`cut`)."""
        captured.whole = False
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                captured.add(chunk)
                yield chunk
            captured.whole = True
        except (ConnectionError, web.RequestPayloadError):
            captured.cut = True
            raise
        finally:
            done()

    async def _relay(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse,
                     exchange_id: str, request_id: str, started: float,
                     mode: str) -> web.StreamResponse:
        """Stream V1's answer to the client while capturing it; publish the response event.

        A client that leaves does not stop the capture: V1's answer is read on until it
        ends or the capture is full, and flagged `client_aborted` if what was kept is not
        all of it. V1 failing is `v1_aborted` with its error: answered 502/504 if the head
        was still held back, else the client connection is reset (`wire.abort`)."""
        v1_headers = decode_raw_headers(upstream.raw_headers)
        response = wire.FaithfulResponse(status=upstream.status, reason=upstream.reason,
                                         headers=CIMultiDict(downstream_response_headers(
                                             v1_headers, self._rid_header, request_id)))
        client = _Client(request, response)
        captured = Capture(self._cap, self.digest_key)
        length = upstream.content_length
        held = length is not None and length <= self._cap  # small: head and body in one write
        error: str | None = None
        incomplete: str | None = None
        relayed = False
        try:
            if not held:
                await client.start()
            async for chunk in upstream.content.iter_chunked(CHUNK):
                captured.add(chunk)
                if not client.gone:
                    if not held:
                        await client.write(chunk)
                elif captured.kept >= self._cap:
                    break  # the client left and the capture is full: nothing more to keep
            if held:
                response.send_headers_with_body()
                await client.start()
                await client.write(captured.bytes())
            await client.finish()
            if client.gone and not upstream.content.at_eof():
                incomplete = "client_aborted"
            relayed = True
        except TimeoutError:
            error, incomplete = "V1 timed out while sending its body", "v1_aborted"
        except (aiohttp.ClientError, OSError) as e:
            error, incomplete = f"V1 broke off its answer: {type(e).__name__}", "v1_aborted"
        finally:
            if not relayed and incomplete is None:
                incomplete = "client_aborted"  # cancelled (the proxy stopping) or a bug
            if relayed and upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()  # unread or broken: never back into the pool
            if not relayed and response.prepared and not client.gone:
                wire.abort(request)  # after the head, a cut answer must never look whole
            self._offer(ResponseEvent(
                id=exchange_id, ts=time.time(),
                answer=Answer(status=upstream.status, headers=v1_headers, body=captured.bytes(),
                              body_size=captured.size, body_truncated=captured.truncated,
                              latency_ms=(time.perf_counter() - started) * 1000, error=error,
                              incomplete=incomplete, digest=captured.digest)), mode)
        if error is not None and not response.prepared:
            status = 504 if error.startswith("V1 timed out") else 502
            return self._answer_error(status, error, request_id)
        if error is not None:
            _count("v1_aborted")
            log.warning("request %s: %s; client connection reset", request_id, error)
        elif client.gone:
            _count("client_aborted")
            log.info("request %s: the client left before the answer was sent (%s)", request_id,
                     "V1's answer captured whole" if incomplete is None else "capture incomplete")
        else:
            _count("ok")
        return response

    def _fail(self, status: int, reason: str, exchange_id: str, request_id: str, started: float,
              publish_request: Callable[[], None], incomplete: str | None = None) -> web.Response:
        """No answer from V1: the client gets the proxy's own, and so does the exchange."""
        publish_request()
        body = f"shadow proxy: {reason}\n"
        self._offer(ResponseEvent(
            id=exchange_id, ts=time.time(),
            answer=Answer(status=status, headers=[("Content-Type", "text/plain; charset=utf-8")],
                          body=body.encode(), body_size=len(body),
                          latency_ms=(time.perf_counter() - started) * 1000, error=reason,
                          incomplete=incomplete)), REDACTED)
        return self._answer_error(status, reason, request_id, incomplete)

    def _answer_error(self, status: int, reason: str, request_id: str,
                      incomplete: str | None = None) -> web.Response:
        _count(incomplete or ("v1_timeout" if status == 504 else "v1_error"))
        log.warning("request %s: %s", request_id, reason)
        return web.Response(status=status, text=f"shadow proxy: {reason}\n",
                            headers={self._rid_header: request_id})


async def _pump(source: Any, sink: Any) -> int | None:
    """Relay WebSocket messages one way until either side closes. Returns the close code
    when `source` broke a protocol rule (a message over the limit: 1009), else None."""
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
            return None
        elif msg.type == aiohttp.WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
            return msg.data.code  # aiohttp already closed `source` with this code
        else:
            return None
    await sink.close()
    return None


class _Client:
    """The client's side of one answer: a write that fails because the client left marks
    it gone instead of raising, so V1's answer can still be captured."""

    __slots__ = ("gone", "request", "response")

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.gone = False

    async def start(self) -> None:
        if not self.gone:
            try:
                await self.response.prepare(self.request)
            except ConnectionError:
                self.gone = True

    async def write(self, data: bytes) -> None:
        if not self.gone and data:
            try:
                await self.response.write(data)
            except ConnectionError:
                self.gone = True

    async def finish(self) -> None:
        if not self.gone:
            try:
                await self.response.write_eof()
            except ConnectionError:
                self.gone = True
