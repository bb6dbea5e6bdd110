"""Reports for people and scripts: API filters, mismatches, show, classes, mark, verdict."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from shadow.cli import demo_apps
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import shadow

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
async def demo_pipeline(http_server, settings_factory):
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(2))
    async with Pipeline(settings_factory(v1=v1, v2=v2)) as p, aiohttp.ClientSession() as client:
        plan = demo_apps.traffic(300, seed=3)
        for method, path, body in plan:
            async with client.request(method, p.url + path, data=body) as r:
                await r.read()

        async def settled() -> bool:
            outcomes = await p.store.outcomes()
            return sum(outcomes.values()) == len(plan) and outcomes.get("pending", 0) == 0

        await wait_for(settled, 30, "the demo traffic to be compared")
        yield p


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(shadow, *args)


async def test_bad_filters_are_400_with_a_clear_message(demo_pipeline):
    async with aiohttp.ClientSession() as client:
        for query, message in (("v1_status=abc", "v1_status: expected an HTTP status code"),
                               ("since=yesterday", "since: expected unix seconds"),
                               ("limit=0", "limit: expected a number 1-1000"),
                               ("colour=red", "unknown filter 'colour'"),
                               ("outcome=meh", "outcome: expected one of"),
                               ("since=2h&until=3h", "since is after until")):
            async with client.get(f"{demo_pipeline.api_url}/api/mismatches?{query}") as r:
                assert r.status == 400, query
                assert message in (await r.json())["error"]
        async with client.post(f"{demo_pipeline.api_url}/api/classes/abc",
                               json={"status": "done"}) as r:
            assert r.status == 400 and "status must be one of" in (await r.json())["error"]


async def test_mismatches_show_classes_mark_and_verdict(demo_pipeline):
    api = demo_pipeline.api_url
    listed = await run("mismatches", "--api", api, "--json", "--route", "/users/{id}",
                       "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert len(items) == 5 and {x["route"] for x in items} == {"/users/{id}"}
    assert {d["path"] for d in items[0]["diff"]} == {"$.name", "$.full_name"}

    shown = await run("show", items[0]["id"], "--api", api)
    assert shown.returncode == 0, shown.stderr
    assert "V1" in shown.stdout and "V2" in shown.stdout and "full_name" in shown.stdout
    missing = await run("show", "no-such-id", "--api", api)
    assert missing.returncode == 2 and "404" in missing.stderr

    classes = json.loads((await run("classes", "--api", api, "--json")).stdout)["classes"]
    by_route = {c["route"]: c for c in classes}
    assert set(by_route) == {"/users/{id}", "/products/{id}", "/orders/{id}", "/categories",
                             "/status"}
    assert by_route["/products/{id}"]["paths"] == [{"path": "$.id", "kind": "type"}]

    # latency on a shared machine is not what this test is about: the gate is off
    no_latency = ("--latency-floor-ms", "3600000")
    verdict = await run("verdict", "--api", api, "--json", "--min-samples", "1",
                        "--min-match", "50", *no_latency)
    assert verdict.returncode == 1
    routes = {r["route"]: r for r in json.loads(verdict.stdout)["routes"]}
    assert not routes["/users/{id}"]["ready"]
    assert by_route["/users/{id}"]["signature"] in routes["/users/{id}"]["reason"]
    assert routes["/search"]["ready"]
    assert "too few samples: 0 compared" in routes["/orders"]["reason"]  # POSTs: never replayed

    for c in classes:  # every difference is deliberate: accept them all
        marked = await run("mark", c["signature"], "accepted", "--api", api, "--ticket", "DEMO-1")
        assert marked.returncode == 0 and "accepted DEMO-1" in marked.stdout
    ready = await run("verdict", "--api", api, "--min-samples", "1", "--min-match", "50",
                      "--exclude", "POST /orders", *no_latency)
    assert ready.returncode == 0, ready.stdout
    assert "READY for cutover" in ready.stdout
