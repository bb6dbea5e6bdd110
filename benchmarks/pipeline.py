#!/usr/bin/env python3
"""Pipeline benchmark: the whole system under a steady load, everything on this machine.

    .venv/bin/python benchmarks/pipeline.py [--duration 20] [--rates 500,1000,1500,2000,2500]

V1 and V2 are nginx serving 100 small JSON files (fast, never the bottleneck); V2's copies
differ for 5% (then 50%) of them. A paced load generator sends GETs through one shadow
proxy at each rate in turn; the pipeline keeps up at a rate when the backlog (requests sent
minus exchanges decided) does not grow over the second half of the run. Run with 1 and with
2 subscriber + comparer processes. CPU per process names the bottleneck.

--firehose keeps one live-firehose client (server-sent events from the first comparer's
API, as the dashboard or `shadow tail` would) connected the whole time, to measure what
watching costs; --mismatch and --replicas pick one configuration instead of all four.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from comparer.stores.sqlite import SQLiteStore  # noqa: E402
from shadow.cli.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.nginxctl import Nginx, free_port  # noqa: E402


def write_sites(work: Path, mismatch_percent: int) -> None:
    for side in ("v1", "v2"):
        d = work / side / "items"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(100):
            changed = side == "v2" and i < mismatch_percent
            (d / f"{i}.json").write_text(
                f'{{"id": {i}, "name": "item {i}", "price": {i * 1.5 + (1 if changed else 0)}, '
                f'"tags": ["a", "b"], "stock": {i % 7}}}')


async def paced_load(url: str, rate: float, duration_s: float, sent: list[int]) -> None:
    sem = asyncio.Semaphore(64)
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn) as client:
        start = time.monotonic()
        n = 0
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            async with sem, client.get(f"{url}/items/{i % 100}.json") as r:
                await r.read()
            sent[0] += 1

        while (elapsed := time.monotonic() - start) < duration_s:
            due = int(elapsed * rate)
            while n < due:
                t = asyncio.create_task(one(n))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks, return_exceptions=True)


async def decided(store: SQLiteStore) -> int:
    outcomes = await store.outcomes()
    return sum(n for o, n in outcomes.items() if o != "pending")


async def step(url: str, store: SQLiteStore, rate: float, duration_s: float,
               procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    base = await decided(store)
    sent = [0]
    load = asyncio.create_task(paced_load(url, rate, duration_s, sent))
    for plist in procs.values():
        for p in plist:
            p.cpu_percent(None)
    samples = []
    began = time.monotonic()
    while not load.done():
        await asyncio.sleep(1)
        samples.append((time.monotonic() - began, sent[0] - (await decided(store) - base)))
    cpu = {name: sum(p.cpu_percent(None) for p in plist) for name, plist in procs.items()}
    half = [b for t, b in samples if t >= duration_s / 2]
    growth = (half[-1] - half[0]) if len(half) > 1 else 0
    achieved = sent[0] / duration_s
    # drain before the next step
    deadline = time.monotonic() + 120
    while await decided(store) - base < sent[0] and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    kept_up = achieved >= 0.95 * rate and growth <= 0.02 * rate * duration_s / 2
    return {"rate": rate, "achieved": achieved, "backlog_growth": growth,
            "kept_up": float(kept_up), **{f"cpu_{k}": v for k, v in cpu.items()}}


def start(args: list[str], work: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "shadow", *args, "--log-level", "warning"],
                            cwd=REPO, stdin=subprocess.DEVNULL)


async def watch_firehose(api: str, seen: list[int], connected: asyncio.Event) -> None:
    """One SSE client, as the dashboard would be, counting the items it receives."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as client:
        for _ in range(100):
            try:
                async with client.get(f"{api}/api/firehose") as r:
                    connected.set()
                    async for line in r.content:
                        if line.startswith(b"data: "):
                            seen[0] += 1
                return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.2)


async def run_config(work: Path, mismatch: int, replicas: int, rates: list[float],
                     duration: float, firehose: bool = False) -> list[dict[str, float]]:
    shutil.rmtree(work / "v1", ignore_errors=True)
    shutil.rmtree(work / "v2", ignore_errors=True)
    write_sites(work, mismatch)
    p1, p2, pp = free_port(), free_port(), free_port()
    nginx = Nginx(work / f"nginx-{mismatch}-{replicas}", f"""
        server {{ listen 127.0.0.1:{p1}; location / {{ root {work}/v1; }} }}
        server {{ listen 127.0.0.1:{p2}; location / {{ root {work}/v2; }} }}""").start(p1, p2)
    redis = EmbeddedRedis(work / f"redis-{mismatch}-{replicas}", appendonly=False).start()
    db = work / f"shadow-{mismatch}-{replicas}.db"
    common = ["--redis", redis.url, "--store", f"sqlite:///{db}"]
    children = [start(["proxy", "--v1", f"http://127.0.0.1:{p1}", "--listen",
                       f"127.0.0.1:{pp}", *common], work)]
    api_ports = [free_port() for _ in range(replicas)]
    for api_port in api_ports:
        children.append(start(["subscriber", "--v2", f"http://127.0.0.1:{p2}", *common], work))
        children.append(start(["comparer", "--api", f"127.0.0.1:{api_port}", *common], work))
    procs: dict[str, list[psutil.Process]] = {"proxy": [], "subscriber": [], "comparer": []}
    for c in children:
        role = c.args[3]  # type: ignore[index]
        procs[role].append(psutil.Process(c.pid))
    procs["redis"] = [psutil.Process(redis.pid)]  # type: ignore[arg-type]
    procs["nginx"] = [psutil.Process(nginx.process.pid)] + \
        psutil.Process(nginx.process.pid).children()  # type: ignore[union-attr]
    procs["loadgen"] = [psutil.Process(os.getpid())]
    store = SQLiteStore(f"sqlite:///{db}")
    await asyncio.sleep(1.5)
    await store.open()
    results = []
    seen, connected = [0], asyncio.Event()
    watcher = asyncio.create_task(
        watch_firehose(f"http://127.0.0.1:{api_ports[0]}", seen, connected)) if firehose else None
    if watcher is not None:
        await asyncio.wait_for(connected.wait(), 30)
        await asyncio.sleep(2.5)  # comparers look for listeners every 2 s
    try:
        for rate in rates:
            r = await step(f"http://127.0.0.1:{pp}", store, rate, duration, procs)
            results.append(r)
            busiest = max((k for k in r if k.startswith("cpu_")), key=lambda k: r[k])
            watched = f"; firehose items so far {seen[0]}" if firehose else ""
            print(f"  {mismatch:>2}% mismatching, {replicas} sub+cmp: {rate:>6.0f}/s asked, "
                  f"{r['achieved']:>6.0f}/s sent, backlog growth {r['backlog_growth']:>6.0f} -> "
                  f"{'kept up' if r['kept_up'] else 'FELL BEHIND'}; busiest {busiest[4:]} "
                  f"{r[busiest]:.0f}% CPU{watched}", flush=True)
            if not r["kept_up"]:
                break
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await store.close()
        for c in children:
            c.send_signal(signal.SIGTERM)
        for c in children:
            c.wait(30)
        redis.stop()
        nginx.stop()
    return results


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per rate (default 20)")
    ap.add_argument("--rates", default="500,1000,1500,2000,2500,3000")
    ap.add_argument("--mismatch", type=int, choices=(5, 50), default=None,
                    help="only this mismatching percentage (default: 5 and 50)")
    ap.add_argument("--replicas", type=int, default=None,
                    help="only this many subscriber + comparer processes (default: 1 and 2)")
    ap.add_argument("--firehose", action="store_true",
                    help="keep one live-firehose (SSE) client connected throughout")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="shadow-pipeline-bench-"))
    table = []
    try:
        for mismatch in (5, 50) if args.mismatch is None else (args.mismatch,):
            for replicas in (1, 2) if args.replicas is None else (args.replicas,):
                results = await run_config(work, mismatch, replicas, rates, args.duration,
                                           args.firehose)
                ok = [r for r in results if r["kept_up"]]
                best = max((r["rate"] for r in ok), default=0.0)
                last = results[-1]
                busiest = max((k for k in last if k.startswith("cpu_")), key=lambda k: last[k])
                table.append((mismatch, replicas, best, busiest[4:], last[busiest]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### Pipeline benchmark ({datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
          f"{args.duration:.0f} s per rate, load generator on the same machine"
          f"{', one firehose client watching' if args.firehose else ''})\n")
    print("| mismatching | subscriber + comparer processes | highest rate kept up | "
          "busiest at the last rate tried |")
    print("|---:|---:|---:|---|")
    for mismatch, replicas, best, busiest, cpu in table:
        print(f"| {mismatch}% | {replicas} | {best:,.0f} exchanges/s | {busiest} "
              f"({cpu:.0f}% CPU) |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
