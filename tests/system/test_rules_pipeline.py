"""Rules through the whole pipeline: noise hidden, routes named, suppressions counted."""

from __future__ import annotations


async def test_rules_through_the_pipeline_hide_noise_name_routes_and_count(http_server,
                                                                           settings_factory,
                                                                           tmp_path):
    import aiohttp
    from aiohttp import web

    from tests.conftest import wait_for
    from tests.pipeline import Pipeline

    def app(version: int) -> web.Application:
        async def order(request: web.Request) -> web.Response:
            n = int(request.match_info["order"])
            body = {"id": n, "total": 10.0, "at": f"2026-11-22T10:00:{n % 60:02d}.{version}Z"}
            if version == 2 and n % 5 == 0:
                body["total"] = 11.0  # the one real bug
            return web.json_response(body)

        a = web.Application()
        a.router.add_get("/shops/{shop}/orders/{order}", order)
        return a

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('routes = ["/shops/{shop}/orders/{order}"]\n\n'
                          '[[rules]]\nname = "timestamps"\nroute = "/shops/*"\n'
                          'ignore = ["$.at"]\nreason = "generated per call"\nowner = "orders"\n')
    v1, v2 = await http_server(app(1)), await http_server(app(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2, rules=str(rules_file),
                                         trust_canonical_resource=True)) as p, \
            aiohttp.ClientSession() as client:
        for i in range(1, 41):
            headers = {"Canonical-Resource": "/orders/by-shop"} if i == 40 else {}
            async with client.get(f"{p.url}/shops/acme/orders/{i}", headers=headers) as r:
                assert r.status == 200

        async def done() -> bool:
            return (await p.store.outcomes()).get("pending", 0) == 0 and await p.store.count() == 40

        await wait_for(done, 30, "40 decided exchanges")
        summary = await p.summary()
        routes = {r["route"]: r for r in summary["routes"]}
        assert set(routes) == {"/shops/{shop}/orders/{order}", "/orders/by-shop"}
        main = routes["/shops/{shop}/orders/{order}"]
        assert (main["matched"], main["mismatched"]) == (32, 7), main
        assert main["top_diffs"] == [{"path": "$.total", "kind": "changed", "count": 7}]
        async with client.get(f"{p.api_url}/api/rules") as r:
            listed = await r.json()
        [rule] = listed["rules"]
        # 39: the exchange named /orders/by-shop by its header is outside the rule's route
        assert rule["id"] == "timestamps" and rule["suppressed"] == 39 and not rule["expired"]
        assert rule["owner"] == "orders" and listed["routes"] == ["/shops/{shop}/orders/{order}"]
        import asyncio
        import subprocess
        import sys

        shown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "shadow", "rules", "--api", p.api_url],
            capture_output=True, text=True, timeout=60, check=False)
        assert shown.returncode == 0 and "timestamps" in shown.stdout and "39" in shown.stdout
