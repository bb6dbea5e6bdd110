"""Byte fidelity on top of aiohttp, in one place (and guarded by tests/test_proxy_fidelity.py).

1. Header bytes that are not UTF-8 are written back as the original bytes
   (shadow.rawheaders, shared with the subscriber).
2. Headers aiohttp adds on its own to a response (Content-Type, Date, Server)
   are removed again when V1's answer did not have them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from shadow.rawheaders import install

_ADDED_BY_AIOHTTP = ("Content-Type", "Date", "Server")


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


__all__ = ["FaithfulResponse", "install"]
