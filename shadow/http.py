"""HTTP plumbing the proxy and the subscriber share: capped body capture and the
aiohttp client session both use towards V1/V2 (header rules live in shadow/forwarding.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp

CHUNK = 64 * 1024
# aiohttp adds none of these by itself: the upstream gets the headers the client sent
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


DIGEST_BYTES = 16  # BLAKE2b-128: collisions out of reach for telling two answers apart


def digest_scheme(key: bytes | None) -> str:
    """The prefix of a digest: the algorithm, and with a key a short fingerprint of it (a
    keyed digest is comparable only with one made with the same key: a key rotation that
    reaches the proxy before the subscriber must not look like a difference)."""
    if not key:
        return "b2"
    return "b2k-" + hashlib.blake2b(b"shadow body digest key", key=key[:64],
                                    digest_size=4).hexdigest()


class Capture:
    """Keeps the first `cap` bytes of a body and counts the rest. `whole` is false while a
    streamed body has not been read to its end; `cut` when its sender broke it off. Every
    byte, past the cap too, goes into a BLAKE2b digest of the whole body (keyed with
    `digest_key`, so a digest says nothing about a secret in the body to whoever reads the
    store without the key): `digest` is "<scheme>:<hex>" (scheme: digest_scheme)."""

    __slots__ = ("_hash", "_scheme", "cap", "cut", "kept", "parts", "size", "whole")

    def __init__(self, cap: int, digest_key: bytes | None = None) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.kept = 0
        self.size = 0
        self.whole = True
        self.cut = False
        self._hash = hashlib.blake2b(digest_size=DIGEST_BYTES, key=(digest_key or b"")[:64])
        self._scheme = digest_scheme(digest_key)

    @property
    def digest(self) -> str:
        """The digest of every byte added so far."""
        return f"{self._scheme}:{self._hash.hexdigest()}"

    def add(self, chunk: bytes) -> None:
        self._hash.update(chunk)
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


async def read_capped(resp: aiohttp.ClientResponse, cap: int,
                      digest_key: bytes | None = None) -> Capture:
    """Keep the first `cap` bytes; read (count and digest) the rest, so the connection is
    reusable and the whole body has a length and a digest."""
    captured = Capture(cap, digest_key)
    async for chunk in resp.content.iter_chunked(CHUNK):
        captured.add(chunk)
    return captured


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
