"""aiohttp's server, made faithful and hard to abuse, in one place (guarded by
tests/test_proxy_fidelity.py and tests/system/test_proxy_hardening.py).

1. Header bytes that are not UTF-8 are written back as the original bytes
   (shadow.rawheaders, shared with the subscriber).
2. Headers aiohttp adds on its own to a response (Content-Type, Date, Server)
   are removed again when V1's answer did not have them.
3. A request-head deadline (slowloris guard): aiohttp has none; its keep-alive
   timer only closes idle connections. `GuardedServer` closes a connection whose
   request head is not complete within the deadline.
4. `abort()`: a reset of the client connection, the one way to tell a client
   (or nginx) that an answer already under way is cut, whatever its framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from shadow.rawheaders import install

_ADDED_BY_AIOHTTP = ("Content-Type", "Date", "Server")
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


class FaithfulResponse(web.StreamResponse):
    """A StreamResponse that sends exactly the given headers (plus hop-by-hop framing)."""

    def __init__(self, *, status: int, reason: str | None, headers: CIMultiDict[str]) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        self._given = {name for name in _ADDED_BY_AIOHTTP if name in headers}

    def send_headers_with_body(self) -> None:
        """Hold the head back until the first body write (small, already-read bodies)."""
        self._send_headers_immediately = False

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        headers: Any = self._headers
        for name in _ADDED_BY_AIOHTTP:
            if name not in self._given and name in headers:
                del headers[name]


def abort(request: web.BaseRequest) -> None:
    """Reset the client connection now and never reuse it.

    A graceful close would let a cut answer pass for a whole one: a chunked answer would
    get its final chunk from aiohttp, a close-delimited one would end with a normal FIN,
    and a Content-Length connection kept alive would glue the next answer into this body.
    A reset is an error to every client and to nginx, whatever the framing."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not TCP, or uvloop's
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
    request.protocol.force_close()  # no pipelined request is read from this connection


_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 72\r\n\r\n"
                b"shadow proxy: the request head did not arrive within --header-timeout-s\n")


class HeadDeadlineHandler(RequestHandler):
    """aiohttp's connection handler plus a deadline for each request head.

    The deadline starts when the connection opens, and when the first bytes of a new
    request arrive on an idle keep-alive connection (an idle connection that sends nothing
    is aiohttp's keep-alive timer's business). It ends when the head is parsed. Past it,
    the connection gets a 408 (if a head had begun) and is closed. Bodies and answers are
    not subject to it: V1's timeouts and the client's own pace govern those."""

    __slots__ = ("_head_timeout_s", "_head_timer", "_heads_when_armed", "_head_begun")

    def __init__(self, manager: web.Server, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_when_armed = 0
        self._head_begun = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        waiting = self._waiter is not None and not self._waiter.done()  # idle, between requests
        super().data_received(data)
        if self._request_count != heads:  # a head is complete: its deadline is met
            self._disarm_head_deadline()
        elif data and not self._upgraded:
            if waiting:  # the first bytes of the next head
                self._arm_head_deadline()
            if self._head_timer is not None:
                self._head_begun = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_timer is None:
            self._heads_when_armed = self._request_count
            self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_deadline)

    def _disarm_head_deadline(self) -> None:
        timer, self._head_timer = self._head_timer, None
        self._head_begun = False
        if timer is not None:
            timer.cancel()

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._request_count != self._heads_when_armed or self._upgraded:
            return
        if self.transport is not None and self._head_begun:
            self.transport.write(_TIMEOUT_408)
        self.force_close()


class GuardedServer(web.Server):
    """`web.Server` whose connections have a request-head deadline (`HeadDeadlineHandler`)."""

    def __init__(self, handler: Any, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout_s = head_timeout_s

    def __call__(self) -> RequestHandler:
        return HeadDeadlineHandler(self, loop=self._loop, head_timeout_s=self._head_timeout_s,
                                   **self._kwargs)


__all__ = ["FaithfulResponse", "GuardedServer", "abort", "install"]
