"""An incomplete V1 answer (#17 item 12, the comparer's half): the client left before the
proxy captured V1's whole answer, or V1 failed after its head. It is skipped, with the
reason on the exchange, never a mismatch, and never counted as compared."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from shadow.codec import encode_event
from shadow.compare import compare
from shadow.model import Answer, Request, RequestEvent, ResponseEvent
from tests.conftest import wait_for
from tests.pipeline import Pipeline

WHOLE = b'{"items": [' + b",".join(b'{"n": %d}' % i for i in range(2000)) + b"]}"
JSON = [("Content-Type", "application/json")]


def answer(body: bytes, *, size: int | None = None, incomplete: str | None = None,
           error: str | None = None) -> Answer:
    return Answer(200, JSON, body, len(body) if size is None else size, latency_ms=3.0,
                  incomplete=incomplete, error=error)


@pytest.mark.parametrize(("reason", "error"), [("client_aborted", None),
                                               ("v1_aborted", "V1 closed the connection")])
def test_an_incomplete_v1_answer_is_skipped_with_its_reason(reason: str, error: str | None):
    cut = answer(WHOLE[:1000], size=len(WHOLE), incomplete=reason, error=error)
    result = compare(Request("GET", "/big", []), cut, answer(WHOLE), "/big")
    assert (result.outcome, result.diff, result.signature) == ("skipped", [], None)
    assert reason in result.flags
    assert ("v1_error" in result.flags) == (error is not None)
    assert "v1_invalid_json" not in result.flags  # a cut body is not V1's fault
    # the same cut body, not flagged incomplete, is what used to make a false mismatch
    assert compare(Request("GET", "/big", []), answer(WHOLE[:1000], size=len(WHOLE)),
                   answer(WHOLE), "/big").outcome == "mismatch"


async def test_an_incomplete_v1_answer_through_the_pipeline(http_server, settings_factory):
    """The proxy's events for a client that left early, published as the proxy does: the
    request is replayed to V2 as usual, and the exchange is decided as skipped."""

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=WHOLE, content_type="application/json")

    v2_app = web.Application()
    v2_app.router.add_get("/big", big)
    v2 = await http_server(v2_app)
    async with Pipeline(settings_factory(v1=v2, v2=v2)) as p, aiohttp.ClientSession() as client:
        for ident, reason in (("left-early", "client_aborted"), ("v1-died", "v1_aborted")):
            request = RequestEvent(ident, ident, 1.0, Request("GET", "/big", [("Host", "x")]))
            v1 = answer(WHOLE[:700], size=len(WHOLE), incomplete=reason,
                        error="V1 closed the connection" if reason == "v1_aborted" else None)
            for event in (request, ResponseEvent(ident, 1.1, v1)):
                await p.redis.xadd(p.keys.v1, {b"e": encode_event(event)})

        async def decided() -> bool:
            outcomes = await p.store.outcomes()
            return outcomes.get("skipped") == 2 and sum(outcomes.values()) == 2

        await wait_for(decided, 60, "both exchanges decided")
        for ident, reason in (("left-early", "client_aborted"), ("v1-died", "v1_aborted")):
            async with client.get(f"{p.api_url}/api/exchanges/{ident}") as r:
                shown = await r.json()
            assert shown["outcome"] == "skipped" and reason in shown["flags"]
            assert shown["v1"]["incomplete"] == reason and shown["v2"]["status"] == 200
            assert shown["diff"] == []
        summary = await p.summary()
        assert (summary["compared"], summary["mismatched"], summary["skipped"]) == (0, 0, 2)
        async with client.get(f"{p.api_url}/api/classes") as r:
            assert (await r.json())["classes"] == []  # no mismatch class was made of it
