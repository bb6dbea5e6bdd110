"""HTTP plumbing the proxy and the subscriber share: capped body capture and the
aiohttp client session both use towards V1/V2 (header rules live in shadow/forwarding.py)."""

from __future__ import annotations

from typing import Any

import aiohttp

CHUNK = 64 * 1024
# aiohttp adds none of these by itself: the upstream gets the headers the client sent
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Capture:
    """Keeps the first `cap` bytes of a body and counts the rest. `whole` is false while a
    streamed body has not been read to its end; `cut` when its sender broke it off."""

    __slots__ = ("cap", "cut", "kept", "parts", "size", "whole")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.kept = 0
        self.size = 0
        self.whole = True
        self.cut = False

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.cap - self.kept
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self.parts.append(piece)
            self.kept += len(piece)

    @property
    def truncated(self) -> bool:
        """Not all of the body is here: past the cap, or not (yet) read to its end."""
        return self.size > self.kept or not self.whole

    def bytes(self) -> bytes:
        return b"".join(self.parts) if len(self.parts) != 1 else self.parts[0]


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, int]:
    """Keep the first `cap` bytes; read (and count) the rest so the connection is reusable."""
    captured = Capture(cap)
    async for chunk in resp.content.iter_chunked(CHUNK):
        captured.add(chunk)
    return b"".join(captured.parts), captured.size


def client_session(connect_timeout_s: float | None, read_timeout_s: float | None,
                   **connector: Any) -> aiohttp.ClientSession:
    """A session that forwards bytes as they are: no overall timeout (per-socket connect and
    read ones), no decompression, no cookies, no headers of aiohttp's own. `connector` are
    TCPConnector options (limit, ...)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(**connector),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                      sock_read=read_timeout_s),
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_SKIP_AUTO_HEADERS)
