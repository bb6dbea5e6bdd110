"""`shadow replay`: prove a fix on the same real traffic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from shadow.filters import Filters
from tests.conftest import wait_for
from tests.pipeline import Pipeline

ROOT = Path(__file__).parent.parent.parent


def v2_app(bugs: dict[str, bool]) -> web.Application:
    async def price(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": n, "price": n + (1 if bugs["price"] else 0)})

    async def name(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": n, "name": f"N{n}" if bugs["name"] else f"n{n}"})

    a = web.Application()
    a.router.add_get("/prices/{n}", price)
    a.router.add_get("/names/{n}", name)
    return a


def v1_app() -> web.Application:
    return v2_app({"price": False, "name": False})


async def test_replay_reports_the_fixed_class_and_the_one_still_failing(http_server,
                                                                        settings_factory):
    bugs = {"price": True, "name": True}
    v1, v2 = await http_server(v1_app()), await http_server(v2_app(bugs))
    settings = settings_factory(v1=v1, v2=v2)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        for i in range(1, 21):
            async with client.get(f"{p.url}/{'prices' if i % 2 else 'names'}/{i}") as r:
                assert r.status == 200

        async def decided() -> bool:
            o = await p.store.outcomes()
            return o.get("mismatch", 0) == 20

        await wait_for(decided, 30, "20 mismatches")
        classes = {c["route"]: c["signature"] for c in await p.store.classes()}
    bugs["price"] = False  # the team fixes one of the two bugs in V2
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "shadow", "replay", "--store", settings.store, "--v2", v2,
        "--only", "mismatches", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 1, done.stderr  # not everything is fixed yet
    report = json.loads(done.stdout)
    verdicts = {c["signature"]: (c["verdict"], c["replayed"]) for c in report["classes"]}
    assert verdicts == {classes["/prices/{id}"]: ("fixed", 10),
                        classes["/names/{id}"]: ("still failing", 10)}
    assert report["new_regressions"] == []

    # Previewing a rule needs no V2: the stored answers are compared again under it.
    rules = Path(settings.store.removeprefix("sqlite:///")).parent / "rules.toml"
    rules.write_text('[[rules]]\nroute = "/names/*"\nignore = ["$.name"]\n'
                     'reason = "case change accepted"\n')
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "shadow", "replay", "--stored", "--store", settings.store,
        "--rules", str(rules), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 1, done.stderr
    verdicts = {c["signature"]: (c["verdict"], c["replayed"])
                for c in json.loads(done.stdout)["classes"]}
    assert verdicts == {classes["/prices/{id}"]: ("still failing", 10),  # stored V2: still off
                        classes["/names/{id}"]: ("fixed", 10)}  # hidden by the rule


async def test_replay_re_verifies_the_kept_examples_of_each_class(http_server, settings_factory):
    """With the default keep policy most mismatch documents are gone (their counts stay):
    replay re-sends the kept examples of each class, --per-class N of each at most."""
    bugs = {"price": True, "name": True}
    v1, v2 = await http_server(v1_app()), await http_server(v2_app(bugs))
    settings = settings_factory(v1=v1, v2=v2, keep="sampled", keep_per_class_hour=3)
    async with Pipeline(settings) as p, aiohttp.ClientSession() as client:
        for i in range(1, 81):
            async with client.get(f"{p.url}/{'prices' if i % 2 else 'names'}/{i}") as r:
                assert r.status == 200

        async def decided() -> bool:
            return (await p.store.outcomes()).get("mismatch", 0) == 80

        await wait_for(decided, 30, "80 mismatches")
        classes = {c["route"]: c["signature"] for c in await p.store.classes()}
        kept = {route: len((await p.store.list_exchanges(Filters(signature=sig, limit=100)))[0])
                for route, sig in classes.items()}
        assert all(3 <= n < 40 for n in kept.values()), kept  # a few of each 40 are kept
        assert (await p.store.summary())["mismatched"] == 80
    bugs["price"] = False

    async def replay(*extra: str) -> dict[str, tuple[str, int]]:
        done = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "shadow", "replay", "--store", settings.store, "--v2", v2,
            "--json", *extra], cwd=ROOT, capture_output=True, text=True, timeout=60,
            check=False)
        assert done.returncode == 1, done.stderr
        return {c["signature"]: (c["verdict"], c["replayed"])
                for c in json.loads(done.stdout)["classes"]}

    assert await replay() == {classes["/prices/{id}"]: ("fixed", kept["/prices/{id}"]),
                              classes["/names/{id}"]: ("still failing", kept["/names/{id}"])}
    assert await replay("--per-class", "2") == {classes["/prices/{id}"]: ("fixed", 2),
                                                classes["/names/{id}"]: ("still failing", 2)}
