"""The command line, run as users run it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from shadow.cli import demo_apps
from shadow.settings import available_cores
from tests.conftest import wait_for
from tests.nginxctl import free_port
from tests.procs import reap, start_proxy_process, start_up

ROOT = Path(__file__).parent.parent.parent


def shadow(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow", *args], check=False, cwd=kw.pop("cwd", ROOT),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          **kw)  # type: ignore[call-overload]


def test_demo_reports_every_deliberate_difference(tmp_path: Path) -> None:
    done = shadow("demo", "--exit", "--requests", "1500", cwd=tmp_path, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for route, _, _ in demo_apps.CHANGES:
        assert re.search(rf"found\s+{re.escape(route)}\s", out), (route, out[-3000:])
    assert "NOT found" not in out
    assert re.search(r"/status\s+nondeterministic timestamp \(\$.server_time: noise", out)
    assert "1500 exchanges" in out and " 0 pending" in out


@pytest.mark.parametrize("args, message", [
    (["up", "--v2", "http://127.0.0.1:1"], "--v1"),
    (["up", "--v1", "ftp://x", "--v2", "http://127.0.0.1:1"], "http:// or https://"),
    (["up", "--v1", "http://a", "--v2", "http://b", "--listen", "nope"], "HOST:PORT"),
    (["up", "--v1", "http://a", "--v2", "http://b", "--capture-cap-bytes", "-1"], "positive"),
    (["up", "--v1", "http://a", "--v2", "http://b", "--api", "0.0.0.0:0"], "SHADOW_API_TOKEN"),
    (["proxy", "--v1", "http://a", "--listen", "127.0.0.1:0"], "--redis"),
    (["report", "--api", "http://127.0.0.1:9"], "cannot reach the reports API"),
])
def test_bad_configuration_is_a_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    done = shadow(*args, cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_toml_file_is_read_and_bad_toml_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "shadow.toml").write_text('[shadow]\nv1 = "http://127.0.0.1:1"\nlisten = 5\n')
    done = shadow("up", "--v2", "http://127.0.0.1:1", cwd=tmp_path, timeout=30)
    assert done.returncode == 2 and "HOST:PORT" in done.stderr  # v1 came from the file
    (tmp_path / "shadow.toml").write_text("v1 = \n")
    done = shadow("report", cwd=tmp_path, timeout=30)
    assert done.returncode == 2 and "cannot parse config file" in done.stderr


async def test_up_serves_reports_restarts_a_crashed_child_and_stops_on_ctrl_c(
        http_server, tmp_path: Path) -> None:
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(2))
    proc, proxy, api = await start_up(
        "--v1", v1, "--v2", v2, "--data-dir", str(tmp_path / "data"),
        "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path)
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 3 + available_cores()  # redis, subscriber, comparer, proxies
        comparer = next(c for c in children if "comparer" in c.cmdline())
        async with aiohttp.ClientSession() as client:
            for i in range(1, 51):
                if i == 25:
                    comparer.kill()  # a crash: `up` must restart it, and it must lose nothing
                async with client.get(f"{proxy}/users/{i}") as r:
                    assert r.status == 200 and (await r.json())["name"] == f"User {i}"

            async def compared() -> bool:
                done = await asyncio.to_thread(shadow, "report", "--api", api, "--json",
                                               timeout=30)
                summary = json.loads(done.stdout) if done.returncode == 0 else {}
                return summary.get("compared") == 50

            await wait_for(compared, 60, "50 compared exchanges in `shadow report --json`")
            # the reports API's /metrics sums every child's, the killed comparer's included
            async with client.get(f"{api}/metrics") as r:
                text = await r.text()
            assert metric(text, 'shadow_proxy_requests_total{result="ok"}') == 50
            assert metric(text, 'shadow_replays_total{result="answered"}') == 50
            assert metric(text, 'shadow_comparisons_total{outcome="mismatch"}') == 50
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 3 + available_cores()
        assert comparer.pid not in {c.pid for c in children}
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        for child in children:
            await wait_for(lambda c=child: _gone(c), 10, f"{child.pid} to exit")
    finally:
        await reap(proc)


async def _gone(p: psutil.Process) -> bool:
    return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE


def test_embedded_redis_dies_with_a_killed_parent(tmp_path: Path) -> None:
    script = ("import sys, time; from shadow.cli.embedded_redis import EmbeddedRedis;"
              f"r = EmbeddedRedis({str(tmp_path)!r}).start(); print(r.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        redis_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(redis_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while psutil.pid_exists(redis_pid) and psutil.Process(redis_pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "embedded Redis outlived its parent"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            parent.kill()


async def test_proxy_workers_share_one_port(http_server, redis_server, keys, tmp_path: Path) -> None:
    v1 = await http_server(demo_apps.build(1))
    metrics_port = free_port()
    proc, port = await start_proxy_process(
        "--v1", v1, "--listen", "127.0.0.1:0", "--workers", "2", "--redis", redis_server.url,
        "--stream-prefix", keys.prefix, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    try:
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as c:
            for i in range(1, 41):
                async with c.get(f"http://127.0.0.1:{port}/users/{i}") as r:
                    assert r.status == 200
            # one /metrics for both workers: their counts summed
            async with c.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                text = await r.text()
            assert metric(text, 'shadow_proxy_requests_total{result="ok"}') == 40
        check = connect_redis(redis_server.url)
        try:
            await wait_for(lambda: _xlen(check, keys.v1, 80), 10, "80 events from the workers")
        finally:
            await check.aclose()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await reap(proc)


def metric(text: str, sample: str) -> float:
    """One sample's value from Prometheus text, e.g. 'shadow_x_total{result="ok"}'."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


def connect_redis(url: str):  # type: ignore[no-untyped-def]
    from shadow.bus import connect

    return connect(url, 5.0)


async def _xlen(r, stream: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return int(await r.xlen(stream)) >= n


async def test_sighup_reloads_the_rules_and_a_bad_file_changes_nothing(http_server,
                                                                       tmp_path: Path) -> None:
    """Rules change without a restart: `kill -HUP <shadow up>` reaches the comparer, whose
    next comparisons use the new file; a broken file is refused and the old rules stay."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "hide-rename"\nroute = "/users/*"\n'
                     'ignore = ["$.name", "$.full_name"]\nreason = "renamed on purpose"\n')
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(2))
    proc, proxy, api = await start_up(
        "--v1", v1, "--v2", v2, "--data-dir", str(tmp_path / "data"), "--rules", str(rules),
        "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE)
    errors: list[str] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            errors.append(raw.decode())

    reader = asyncio.create_task(read_stderr())
    try:
        async with aiohttp.ClientSession() as client:
            async def send(first: int) -> None:
                for i in range(first, first + 5):
                    async with client.get(f"{proxy}/users/{i}") as r:
                        assert r.status == 200

            async def summary() -> dict[str, Any]:
                async with client.get(f"{api}/api/summary") as r:
                    return await r.json()  # type: ignore[no-any-return]

            async def rule_names() -> list[str]:
                async with client.get(f"{api}/api/rules") as r:
                    return [x["id"] for x in (await r.json())["rules"]]

            await send(1)
            await wait_for(lambda: _eq(summary, "compared", 5), 30, "5 compared")
            assert (await summary())["matched"] == 5  # the rule hides the rename

            rules.write_text('[[rules]]\nname = "other"\nroute = "/orders/*"\nignore = ["$.x"]\n'
                             'reason = "r"\n')
            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: _names_are(rule_names, ["other"]), 30, "the new rules")
            await send(6)
            await wait_for(lambda: _eq(summary, "compared", 10), 30, "10 compared")
            assert (await summary())["mismatched"] == 5  # the rename counts again

            rules.write_text("[[rules]\nthis is not toml")
            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: (any("rules not reloaded" in e for e in errors)), 30,
                           "the bad file refused")
            assert await rule_names() == ["other"]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await reap(proc)
        await reader


async def _eq(get: Any, key: str, value: int) -> bool:
    return (await get()).get(key) == value


async def _names_are(get: Any, names: list[str]) -> bool:
    return await get() == names
