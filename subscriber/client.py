"""Sending one recorded request to V2 (or V1'): used by the subscriber and by `shadow replay`."""

from __future__ import annotations

import asyncio
import errno
import time

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from shadow import metrics, rawheaders
from shadow.forwarding import upstream_request_headers
from shadow.http import client_session, read_capped
from shadow.model import Answer, Headers, Request
from shadow.settings import Settings
from subscriber.policy import SAFE_METHODS, Policy

RETRY_DELAY_S = 0.2  # before the one retry of a safe request that V2 dropped unanswered
_TRANSIENT_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.EPIPE})


def replay_headers(request: Request, settings: Settings, request_id: str) -> Headers:
    """The headers V1 got for `request`, rebuilt by the proxy's own pure function from what
    it recorded (shadow/forwarding.py; the client's address and scheme): end-to-end
    headers, the request id, X-Forwarded-*, Host per --preserve-host. Content-Length is
    left to the HTTP client, which writes it for the body it sends. --v2-set-headers /
    --v2-remove-headers come after (Policy.headers). An event from a proxy that did not
    record the scheme gets none of shadow's own forwarding headers."""
    host = next((v for k, v in request.headers if k.lower() == "host"), None)
    headers = upstream_request_headers(
        request.headers, settings.request_id_header, request_id, request.client,
        request.scheme or "http", host,
        forwarded=settings.forwarded_headers and request.scheme is not None,
        trust_forwarded=settings.trust_forwarded, preserve_host=settings.preserve_host)
    return [(k, v) for k, v in headers if k.lower() != "content-length"]


def transient(error: BaseException) -> bool:
    """A failure before any byte of the answer that a second try may not meet: the
    connection refused or reset, or closed by the server without an answer."""
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return True
    if isinstance(error, (ConnectionResetError, ConnectionRefusedError, BrokenPipeError)):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


class ReplayClient:
    """One HTTP session; `call` turns any failure into data on the answer."""

    def __init__(self, settings: Settings, policy: Policy | None = None,
                 concurrency: int | None = None, digest_key: bytes | None = None) -> None:
        self.settings = settings
        # keys the digest of each answer's whole body (shadow.http.Capture): the proxy's key
        self.digest_key = digest_key
        self.policy = policy or Policy.from_settings(settings)
        self.concurrency = concurrency or settings.replay_concurrency
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            rawheaders.install()  # header bytes that are not UTF-8 reach V2 as V1 got them
            s = self.settings
            self._session = client_session(s.v2_connect_timeout_s, s.v2_read_timeout_s,
                                           limit=self.concurrency)
            # aiohttp silently re-sends any idempotent request (PUT and DELETE included) once,
            # at once, when its connection fails; the one retry rule here is `call`'s: safe
            # methods only, after a short delay, counted (as aiohttp's own test client does)
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(self, base: str, request: Request, request_id: str, name: str = "V2") -> Answer:
        """Send `request` to `base`; a safe request that failed before any byte of the
        answer (refused, reset, closed unanswered) is sent once more after a short delay."""
        answer, retry = await self._send(base, request, request_id, name)
        if retry and request.method.upper() in SAFE_METHODS:
            metrics.REPLAY_RETRIES.inc()
            await asyncio.sleep(RETRY_DELAY_S)
            answer, _ = await self._send(base, request, request_id, name)
        metrics.REPLAYS.labels("error" if answer.error is not None else "answered").inc()
        return answer

    async def _send(self, base: str, request: Request, request_id: str,
                    name: str) -> tuple[Answer, bool]:
        """One try: the answer (or the error as data), and whether the failure was transient
        and came before any byte of the answer."""
        assert self._session is not None, "ReplayClient.start() first"
        started = time.perf_counter()
        answered = False
        metrics.REPLAYS_IN_FLIGHT.inc()
        try:
            async with self._session.request(
                    request.method, URL(base + self.policy.url(request.url), encoded=True),
                    headers=CIMultiDict(self.policy.headers(
                        replay_headers(request, self.settings, request_id))),
                    data=request.body if request.body_size else None,
                    allow_redirects=False, compress=None) as resp:
                answered = True
                captured = await read_capped(resp, self.settings.capture_cap_bytes,
                                             self.digest_key)
                latency = (time.perf_counter() - started) * 1000
                metrics.REPLAY_DURATION.observe(latency / 1000)
                return Answer(status=resp.status, headers=list(resp.headers.items()),
                              body=captured.bytes(), body_size=captured.size,
                              body_truncated=captured.truncated, latency_ms=latency,
                              target=base, digest=captured.digest), False
        except TimeoutError:
            error, retry = f"{name} timed out", False
        except (aiohttp.ClientError, OSError) as e:
            error, retry = f"{name} unreachable: {type(e).__name__}: {e}", \
                not answered and transient(e)
        finally:
            metrics.REPLAYS_IN_FLIGHT.dec()
        return Answer(status=None, error=error, target=base,
                      latency_ms=(time.perf_counter() - started) * 1000), retry

