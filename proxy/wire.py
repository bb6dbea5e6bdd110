"""Byte fidelity on top of aiohttp, in one place (and guarded by tests/test_proxy_fidelity.py).

1. Header bytes that are not UTF-8: aiohttp's parser keeps them as lone surrogates
   (surrogateescape) but its C header serializer silently drops surrogates. We
   install a serializer that writes them back as the original bytes. All-ASCII
   headers (the usual case) still take aiohttp's fast C path.
2. Headers aiohttp adds on its own to a response (Content-Type, Date, Server)
   are removed again when V1's answer did not have them.
"""

from __future__ import annotations

from typing import Any

import aiohttp.http_writer as _http_writer
from aiohttp import web
from multidict import CIMultiDict

_fast_serialize = _http_writer._serialize_headers
_ADDED_BY_AIOHTTP = ("Content-Type", "Date", "Server")


def serialize_headers(status_line: str, headers: CIMultiDict[str]) -> bytes:
    if status_line.isascii() and "".join(headers.values()).isascii() \
            and "".join(headers.keys()).isascii():
        return _fast_serialize(status_line, headers)  # type: ignore[no-any-return]
    safe = _http_writer._safe_header
    lines = "".join(f"{safe(k)}: {safe(v)}\r\n" for k, v in headers.items())
    return f"{safe(status_line)}\r\n{lines}\r\n".encode("utf-8", "surrogateescape")


def install() -> None:
    """Idempotent: make every aiohttp writer in this process byte-faithful for headers."""
    _http_writer._serialize_headers = serialize_headers  # type: ignore[assignment]


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
