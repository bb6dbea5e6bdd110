"""`shadow demo`: sample V1 and V2 (demo_apps.py), `shadow up` in front, traffic, the report;
`shadow demo-app`: one sample service alone, as a server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.progress import Progress

from shadow.cli import demo_apps
from shadow.cli.embedded_redis import find_server_binary
from shadow.cli.loop import run_async, until_signal
from shadow.cli.supervisor import Supervisor
from shadow.cli.views import make_console, print_summary, progress_bar
from shadow.errors import ShadowError
from shadow.serve import start_site
from shadow.settings import Settings, parse_hostport, replace

log = logging.getLogger("shadow")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if settings.redis is None:
        find_server_binary()  # no embedded Redis installed: say so before starting anything
    return run_async(run_demo(args, settings))


def cmd_demo_app(args: argparse.Namespace, settings: Settings) -> int:
    """`shadow demo-app v1|v2 --listen HOST:PORT`: one of the demo's sample services alone, as
    a server (docker-compose.yml runs V1 and V2 this way). SIGTERM or Ctrl-C stops it."""
    parse_hostport(args.app_listen, "--listen")  # a ConfigError (exit 2) before anything starts

    async def run() -> int:
        runner = web.AppRunner(demo_apps.build(int(args.version[1])), access_log=None,
                                handle_signals=False)
        try:
            port = await start_site(runner, args.app_listen)
            log.info("sample %s listening on port %d (%s)", args.version.upper(), port,
                     "the old system" if args.version == "v1" else "the 'rewrite'")
            await until_signal()
        finally:
            await runner.cleanup()
        return 0

    return run_async(run())


async def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    console = make_console()
    data_dir = Path(tempfile.mkdtemp(prefix="shadow-demo-"))
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        port = await start_site(runner, "127.0.0.1:0")
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    v1, v2 = await serve(demo_apps.build(1)), await serve(demo_apps.build(2))
    v1_again = await serve(demo_apps.build(1))  # a second V1: tells V1's own noise from bugs
    settings = replace(settings, v1=v1, v2=v2, v1_secondary=v1_again,
                       listen="127.0.0.1:0", api="127.0.0.1:0",
                       store=f"sqlite:///{data_dir / 'shadow.db'}", data_dir=str(data_dir),
                       keep="all",  # a demo's every exchange can be opened
                       join_timeout_s=min(settings.join_timeout_s, 10.0),
                       log_level="warning" if settings.log_level == "info" else settings.log_level)
    console.print(f"sample V1 at {v1} (and a second V1 at {v1_again} for noise), "
                  f"sample V2 (the 'rewrite') at {v2}; data in {data_dir}")
    sup = Supervisor(settings)
    await sup.start()
    proxy_url, api_url = f"http://{sup.proxy_address}", f"http://{sup.api_address}"
    plan = demo_apps.traffic(args.requests)
    errors = 0
    try:
        async with aiohttp.ClientSession() as client:
            await _wait_http(client, api_url + "/api/summary")
            with progress_bar(console) as progress:
                task = progress.add_task(f"requests through the proxy ({proxy_url})", total=len(plan))
                sem = asyncio.Semaphore(max(1, args.concurrency))

                async def send(method: str, path: str, body: bytes | None) -> None:
                    nonlocal errors
                    async with sem:
                        try:
                            async with client.request(method, proxy_url + path, data=body) as r:
                                await r.read()
                        except aiohttp.ClientError:
                            errors += 1
                        progress.advance(task)

                await asyncio.gather(*(send(*req) for req in plan))
                compare = progress.add_task("exchanges compared", total=len(plan))
                summary = await _settle(client, api_url, len(plan), progress, compare)
        console.print()
        print_summary(summary, console)
        _explain_demo(summary, console)
        if errors:
            console.print(f"[red]{errors} client requests failed[/]")
        if args.exit:
            return 0 if errors == 0 else 1
        console.print(f"\nStill serving: proxy {proxy_url}  reports API {api_url}/api/summary\n"
                      f"Dashboard: {api_url}/   Try: shadow report --api {api_url}  or  "
                      f"shadow tail --api {api_url}    (Ctrl-C to stop)")
        await until_signal()
        return 0
    finally:
        await sup.stop()
        for runner in runners:
            await runner.cleanup()


async def _wait_http(client: aiohttp.ClientSession, url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with client.get(url) as r:
                if r.status == 200:
                    return
        if time.monotonic() > deadline:
            raise ShadowError(f"{url} did not answer within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _settle(client: aiohttp.ClientSession, api_url: str, expected: int, progress: Progress,
                  task: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until every exchange is decided (or the timeout), showing progress."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with client.get(api_url + "/api/summary") as r:
            summary: dict[str, Any] = await r.json()
        decided = summary["total"] - summary["pending"]
        progress.update(task, completed=min(decided, expected))
        if (summary["total"] >= expected and summary["pending"] == 0) or time.monotonic() > deadline:
            return summary
        await asyncio.sleep(0.2)


def _explain_demo(summary: dict[str, Any], console: Console) -> None:
    console.print("\n[bold]What the sample V2 changed, and what shadow found:[/]")
    routes = {r["route"]: r for r in summary.get("routes", [])}
    for route, path, what in demo_apps.CHANGES:
        r = routes.get(route) or {}
        if any(n["path"] == path for n in r.get("noise", [])):
            console.print(f"  [green]found[/]  {route:<16} {what} ({path}: noise, V1 disagrees "
                          "with itself; not counted as a mismatch)")
            continue
        found = any(d["path"] == path for d in r.get("top_diffs", []))
        mark = "[green]found[/]" if found else "[red]NOT found[/]"
        console.print(f"  {mark}  {route:<16} {what} ({path}, {r.get('mismatched', 0)} mismatches)")
