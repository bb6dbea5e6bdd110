"""Serving an aiohttp runner: on a listening socket we were handed, or on HOST:PORT."""

from __future__ import annotations

import socket

from aiohttp import web

from shadow.settings import parse_hostport


async def start_site(runner: web.BaseRunner, listen: socket.socket | str, flag: str = "listen",
                     *, reuse_port: bool = False) -> int:
    """Set the runner up and serve on `listen`; returns the bound port (port 0 resolved).
    `flag` names the setting in the message when HOST:PORT is malformed."""
    await runner.setup()
    site: web.BaseSite
    if isinstance(listen, socket.socket):
        site = web.SockSite(runner, listen)
    else:
        host, port = parse_hostport(listen, flag)
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
