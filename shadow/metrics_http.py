"""`--metrics-listen HOST:PORT`: Prometheus /metrics for the proxy or the subscriber.

(The comparer serves /metrics on its reports API.) Unauthenticated, like most exporters:
bind it where your scraper can reach it and nobody else can.
"""

from __future__ import annotations

from aiohttp import web

from shadow import metrics
from shadow.serve import start_site


class MetricsServer:
    """`async with MetricsServer("127.0.0.1:9100") as m:` serves /metrics on `m.port`."""

    def __init__(self, hostport: str, *, multiproc_dir: str | None = None) -> None:
        self.hostport = hostport
        self.multiproc_dir = multiproc_dir  # serve the sum over these processes' files
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=metrics.exposition(self.multiproc_dir))
        resp.content_type = metrics.CONTENT_TYPE
        return resp

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        self.port = await start_site(self._runner, self.hostport, "--metrics-listen")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
