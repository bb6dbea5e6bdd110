"""Byte-level HTTP/1.1 peers for fidelity tests: what went over the wire, exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RawRequest:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        lines = self.head.split(b"\r\n")[1:]
        return [(k.strip(), v.strip()) for k, _, v in (line.partition(b":") for line in lines if line)]

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def path(self) -> bytes:
        return self.request_line.split(b" ")[1]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\r\n\r\n"))[:-4]


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    req = RawRequest(head, b"")
    length = req.header(b"content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if (req.header(b"transfer-encoding") or b"").lower() == b"chunked":
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    return b""


@dataclass
class RawServer:
    """Answers each request with `respond(request) -> raw response bytes`; records requests."""

    respond: Callable[[RawRequest], bytes]
    requests: list[RawRequest] = field(default_factory=list)
    server: asyncio.Server | None = None
    # True: close the connection right after this answer (a V1 dying mid-answer)
    close_after: Callable[[RawRequest], bool] = lambda request: False

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_head(reader)
                if b"100-continue" in head.lower():
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_body(reader, head)
                request = RawRequest(head, body)
                self.requests.append(request)
                writer.write(self.respond(request))
                await writer.drain()
                if self.close_after(request):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def exchange(port: int, raw: bytes, *, read_body: bool = True) -> tuple[bytes, bytes]:
    """Send raw request bytes, return (response head, response body) as received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await read_head(reader)
        while head.startswith(b"HTTP/1.1 100"):
            head = await read_head(reader)
        body = await globals()["read_body"](reader, head) if read_body else b""
        return head, body
    finally:
        writer.close()
