"""Sending one recorded request to V2 (or V1'): used by the subscriber and by `shadow replay`."""

from __future__ import annotations

import time

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from shadow import metrics, rawheaders
from shadow.model import Answer, Headers, Request
from shadow.settings import Settings
from subscriber.policy import Policy

_DROP_ON_REPLAY = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization", "host", "content-length",
})
_CHUNK = 64 * 1024


def replay_headers(headers: Headers, request_id_header: str, request_id: str) -> Headers:
    drop = _DROP_ON_REPLAY | {request_id_header.lower()}
    for k, v in headers:
        if k.lower() == "connection":
            drop = drop | {t.strip().lower() for t in v.split(",")}
    return [(k, v) for k, v in headers if k.lower() not in drop] + [(request_id_header, request_id)]


class ReplayClient:
    """One HTTP session; `call` turns any failure into data on the answer."""

    def __init__(self, settings: Settings, policy: Policy | None = None,
                 concurrency: int | None = None) -> None:
        self.settings = settings
        self.policy = policy or Policy.from_settings(settings)
        self.concurrency = concurrency or settings.replay_concurrency
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            rawheaders.install()  # header bytes that are not UTF-8 reach V2 as V1 got them
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.v2_connect_timeout_s,
                                              sock_read=s.v2_read_timeout_s),
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(self, base: str, request: Request, request_id: str, name: str = "V2") -> Answer:
        assert self._session is not None, "ReplayClient.start() first"
        started = time.perf_counter()
        metrics.REPLAYS_IN_FLIGHT.inc()
        try:
            async with self._session.request(
                    request.method, URL(base + self.policy.url(request.url), encoded=True),
                    headers=CIMultiDict(self.policy.headers(replay_headers(
                        request.headers, self.settings.request_id_header, request_id))),
                    data=request.body if request.body_size else None,
                    allow_redirects=False, compress=None) as resp:
                body, size = await _read_capped(resp, self.settings.capture_cap_bytes)
                latency = (time.perf_counter() - started) * 1000
                metrics.REPLAYS.labels("answered").inc()
                metrics.REPLAY_DURATION.observe(latency / 1000)
                return Answer(status=resp.status, headers=list(resp.headers.items()), body=body,
                              body_size=size, body_truncated=size > len(body),
                              latency_ms=latency, target=base)
        except TimeoutError:
            error = f"{name} timed out"
        except (aiohttp.ClientError, OSError) as e:
            error = f"{name} unreachable: {type(e).__name__}: {e}"
        finally:
            metrics.REPLAYS_IN_FLIGHT.dec()
        metrics.REPLAYS.labels("error").inc()
        return Answer(status=None, error=error, target=base,
                      latency_ms=(time.perf_counter() - started) * 1000)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, int]:
    """Keep the first `cap` bytes; read (and count) the rest so the connection is reusable."""
    parts: list[bytes] = []
    kept = size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if kept < cap:
            piece = chunk[: cap - kept]
            parts.append(piece)
            kept += len(piece)
    return b"".join(parts), size
