"""Which route an exchange counts for is not the client's choice (#17 item 7): the
`Canonical-Resource` header counts only with --trust-canonical-resource, and the number of
distinct routes is capped (--max-routes) by the store, across comparer restarts and
replicas (the store's part: tests/test_store_contract.py); the rest count as one `(other)`
route, reported in the summary and in /metrics."""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web

from comparer import Comparer
from shadow.rules import EMPTY, OTHER_ROUTE, route_of
from tests.conftest import wait_for
from tests.pipeline import Pipeline

HIJACK = [("Canonical-Resource", "/hijacked")]


def test_the_canonical_resource_header_counts_only_when_trusted():
    assert route_of(EMPTY, "GET", "/users/42", HIJACK) == "/users/{id}"
    assert route_of(EMPTY, "GET", "/users/42", HIJACK, trust_header=True) == "/hijacked"


def overflow_count(text: str) -> float:
    m = re.search(r"^shadow_routes_overflowed_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_routes_beyond_the_cap_count_as_other_across_a_restart(http_server,
                                                                     settings_factory):
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{name}", hello)
    v1 = await http_server(app)
    settings = settings_factory(v1=v1, v2=v1, max_routes=3)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        async def metric() -> float:
            async with client.get(f"{p.api_url}/metrics") as r:
                return overflow_count(await r.text())

        before = await metric()

        async def send(*names: str) -> None:
            for name in names:
                async with client.get(f"{p.url}/{name}", headers=HIJACK) as r:
                    assert r.status == 200

        async def decided(n: int) -> None:
            async def done() -> bool:
                outcomes = await p.store.outcomes()
                return outcomes.get("match") == n and sum(outcomes.values()) == n

            await wait_for(done, 60, f"{n} matched exchanges")

        await send("alpha", "beta", "gamma")
        await decided(3)
        await send("delta", "epsilon", "alpha")
        await decided(6)
        summary = await p.summary()
        routes = {r["route"]: r["total"] for r in summary["routes"]}
        assert routes == {"/alpha": 2, "/beta": 1, "/gamma": 1, OTHER_ROUTE: 2}  # no /hijacked
        assert summary["routes_overflowed"] == 2
        assert await metric() - before == 2

        await p.comparer.stop()  # a restarted comparer knows nothing but what the store keeps
        p.comparer = Comparer(settings, p.redis, p.store, keys=p.keys)
        await p.comparer.start()
        await send("zeta", "beta")
        await decided(8)
        summary = await p.summary()
        routes = {r["route"]: r["total"] for r in summary["routes"]}
        assert routes == {"/alpha": 2, "/beta": 2, "/gamma": 1, OTHER_ROUTE: 3}
        assert summary["routes_overflowed"] == 3
        async with client.get(f"{p.api_url}/api/exchanges?route={OTHER_ROUTE}") as r:
            listed = (await r.json())["items"]
        assert sorted(x["url"] for x in listed) == ["/delta", "/epsilon", "/zeta"]
