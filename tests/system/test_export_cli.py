"""`shadow export` against a running `shadow up`: HAR and JSON lines files of real compared
traffic, the filters, secrets as stored (redacted by the proxy), and a transfer cut short
that leaves no file looking whole."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import jsonschema
from aiohttp import web

from shadow.cli import demo_apps
from tests.conftest import wait_for
from tests.procs import reap, start_up

ROOT = Path(__file__).parent.parent.parent
SCHEMA = json.loads((ROOT / "tests" / "data" / "har-1.2.schema.json").read_text())
CANARY = "canary-zx81-export-secret"


def shadow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shadow", *args], cwd=cwd, capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


async def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(shadow, *args, cwd=cwd)


async def test_export_har_and_jsonl_files_of_compared_traffic(http_server, tmp_path: Path) -> None:
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(2))
    proc, proxy, api = await start_up(
        "--v1", v1, "--v2", v2, "--data-dir", str(tmp_path / "data"), "--keep", "all",
        "--workers", "1", "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path)
    try:
        plan = demo_apps.traffic(80, seed=11)
        async with aiohttp.ClientSession() as client:
            for method, path, body in plan:
                async with client.request(method, proxy + path, data=body,
                                          headers={"Authorization": f"Bearer {CANARY}"}) as r:
                    await r.read()

            async def compared() -> bool:
                async with client.get(f"{api}/api/summary") as r:
                    summary = await r.json()
                return summary["total"] == len(plan) and summary["pending"] == 0

            await wait_for(compared, 60, "the traffic to be compared")
            async with client.get(f"{api}/api/classes") as r:
                top = (await r.json())["classes"][0]

        har_file = tmp_path / "traffic.har"
        done = await run("export", "--api", api, "-o", str(har_file))
        assert done.returncode == 0, done.stderr
        assert f"exported {len(plan)} exchanges as har to {har_file}" in done.stderr.decode()
        raw = har_file.read_bytes()
        assert CANARY.encode() not in raw  # exported as stored: redacted by the proxy
        doc = json.loads(raw)
        assert not list(jsonschema.Draft7Validator(SCHEMA).iter_errors(doc))
        entries = doc["log"]["entries"]
        assert len(entries) == len(plan)
        assert {e["request"]["url"].split("?")[0].rsplit("/", 1)[0] for e in entries} >= {
            f"{proxy}/users", f"{proxy}/orders"}  # the Host the client sent
        auth = [h["value"] for e in entries for h in e["request"]["headers"]
                if h["name"].lower() == "authorization"]
        assert len(auth) == len(plan) and all(CANARY not in v for v in auth)
        assert {e["_shadow"]["outcome"] for e in entries} >= {"match", "mismatch"}
        for e in entries:  # V2's answer beside V1's, or why there is none
            if e["_shadow"]["outcome"] == "skipped":  # POST: not replayed by default
                assert e["request"]["method"] == "POST" and e["_v2"]["_skipped"]
            else:
                assert e["_v2"]["status"] >= 200 and "_error" not in e["_v2"]

        # JSON lines by the file's name; one class, on standard output
        lines_file = tmp_path / "class.jsonl"
        done = await run("export", "--api", api, "--signature", top["signature"],
                         "-o", str(lines_file))
        assert done.returncode == 0, done.stderr
        docs = [json.loads(line) for line in lines_file.read_text().splitlines()]
        assert len(docs) == top["count"] and {d["signature"] for d in docs} == {top["signature"]}
        assert all(d["v1"]["body"] and d["v2"]["body"] for d in docs)  # both answers
        done = await run("export", "--api", api, "--format", "jsonl", "--route", top["route"],
                         "--outcome", "mismatch", "--limit", "3")
        assert done.returncode == 0, done.stderr
        assert [json.loads(line)["route"] for line in done.stdout.splitlines()] == \
            [top["route"]] * 3
        assert "exported 3 exchanges as jsonl to standard output" in done.stderr.decode()

        refused = await run("export", "--api", api, "--since", "1e300", "-o",
                            str(tmp_path / "never.har"))
        assert refused.returncode == 2 and b"since: expected a time from 1970" in refused.stderr
        assert not (tmp_path / "never.har").exists()
    finally:
        await reap(proc)


async def test_a_cut_transfer_leaves_no_file_that_looks_whole(http_server,
                                                             tmp_path: Path) -> None:
    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"id": "1"}\n' * 100)
        assert request.transport is not None
        request.transport.abort()  # what the reports API does when its store fails half-way
        return response

    app = web.Application()
    app.router.add_get("/api/export", half)
    api = await http_server(app)
    target = tmp_path / "out.jsonl"
    target.write_text("the previous export\n")
    done = await run("export", "--api", api, "-o", str(target))
    assert done.returncode == 2 and b"cut short" in done.stderr, done.stderr
    assert target.read_text() == "the previous export\n"  # replaced only by a whole export
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no partial file left
