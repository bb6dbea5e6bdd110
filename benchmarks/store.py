#!/usr/bin/env python3
"""Store benchmark: SQLite ingest rate, bytes per exchange, and report latency (all time
and for 1h, 24h and 7d windows) at 100k and 1M exchanges.

    .venv/bin/python benchmarks/store.py [--sizes 100000,1000000] [--batch 500]
                                         [--span-s 604800]

Ingest is what the comparer does per batch: upsert the request, response and candidate
parts (three events per exchange), then record the outcomes (comparisons precomputed,
so this measures the store, not the diff); the rollups are written with them. 10% of
exchanges mismatch, in 20 classes over 20 routes. Their timestamps are spread evenly over
the simulated --span-s (default a week) ending now, oldest first, so the per-minute rollups
hold that many minutes. Bytes per exchange is the database file (after a WAL checkpoint)
over the exchanges stored. Reports are fetched over HTTP from a real reports API.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from comparer import ReportsApi  # noqa: E402
from comparer.stores.sqlite import SQLiteStore  # noqa: E402
from shadow.bus import connect  # noqa: E402
from shadow.cli.embedded_redis import EmbeddedRedis  # noqa: E402
from shadow.compare import compare  # noqa: E402
from shadow.ids import new_id  # noqa: E402
from shadow.model import (  # noqa: E402
    Answer,
    CandidateEvent,
    Comparison,
    Event,
    Request,
    RequestEvent,
    ResponseEvent,
)
from shadow.settings import load_settings  # noqa: E402

JSON = [("Content-Type", "application/json"), ("Content-Length", "120")]


def templates() -> tuple[Answer, list[Answer], Comparison, list[Comparison]]:
    v1 = Answer(200, JSON, orjson.dumps({"id": 1, "name": "x" * 80, "tags": ["a", "b"]}), 120,
                latency_ms=3.0)
    bad = [Answer(200, JSON, orjson.dumps({"id": 1, "name": "x" * 80, f"f{k}": k}), 120,
                  latency_ms=4.0) for k in range(20)]
    req = Request("GET", "/r0/1", [])
    return v1, bad, compare(req, v1, v1, "/r0/{id}"), [compare(req, v1, b, f"/r{k}/{{id}}")
                                                        for k, b in enumerate(bad)]


REPORTS = ("summary", "routes", "classes", "verdict")
WINDOWS = ("", "1h", "24h", "7d")  # "": all time


async def ingest(store: SQLiteStore, n: int, batch: int, start: int,
                 ts_of: Callable[[int], float]) -> float:
    v1, bad, match, mismatches = templates()
    began = time.perf_counter()
    done = 0
    while done < n:
        size = min(batch, n - done)
        events: list[Event] = []
        plan: dict[str, Comparison] = {}
        for j in range(size):
            i = start + done + j
            ident = new_id()
            k = i % 20
            ts = ts_of(i)
            wrong = i % 10 == 0
            events += [RequestEvent(ident, ident, ts, Request("GET", f"/r{k}/{i}", [])),
                       ResponseEvent(ident, ts, v1),
                       CandidateEvent(ident, ts, bad[k] if wrong else v1)]
            plan[ident] = mismatches[k] if wrong else match
        ready = await store.apply(events)
        await store.complete([(x.id, plan[x.id]) for x in ready])
        done += size
        if done % 50_000 < batch:
            rate = done / (time.perf_counter() - began)
            print(f"  ingested {start + done:>9,} exchanges ({rate:,.0f}/s)", flush=True)
    return n / (time.perf_counter() - began)


async def latency(url: str, runs: int = 5) -> tuple[float, float]:
    """Median and worst time (ms) of GET url."""
    times = []
    async with aiohttp.ClientSession() as client:
        for _ in range(runs):
            t0 = time.perf_counter()
            async with client.get(url) as r:
                await r.read()
                assert r.status == 200, url
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


async def db_bytes(store: SQLiteStore, path: Path) -> int:
    await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--batch", type=int, default=500, help="exchanges per batch (default 500)")
    ap.add_argument("--span-s", type=float, default=7 * 86400,
                    help="simulated time the exchanges' timestamps spread over, ending now "
                         "(default a week)")
    ap.add_argument("--runs", type=int, default=5, help="requests per report timing (default 5)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    first_ts = time.time() - args.span_s
    step = args.span_s / max(sizes)

    def ts_of(i: int) -> float:
        return first_ts + i * step
    work = Path(tempfile.mkdtemp(prefix="shadow-store-bench-"))
    redis_server = EmbeddedRedis(work / "redis", appendonly=False).start()
    settings = load_settings({"api": "127.0.0.1:0", "redis": redis_server.url,
                              "store": f"sqlite:///{work / 'bench.db'}"}, env={})
    store = SQLiteStore(settings.store)
    await store.open()
    redis = connect(redis_server.url, 5.0)
    api = ReportsApi(settings, store, redis)
    await api.start()
    rows = []
    timings: list[tuple[int, str, str, float, float]] = []
    try:
        have = 0
        for size in sizes:
            print(f"ingesting up to {size:,} exchanges in batches of {args.batch} ...", flush=True)
            rate = await ingest(store, size - have, args.batch, have, ts_of)
            have = size
            total = await db_bytes(store, work / "bench.db")
            rows.append((size, rate, total / size, total / 2**20))
            print(f"  {size:,}: ingest {rate:,.0f} exchanges/s; database {total / 2**20:,.0f} "
                  f"MiB, {total / size:,.0f} bytes per exchange", flush=True)
            for report in REPORTS:
                for since in WINDOWS:
                    query = "?min_samples=1" if report == "verdict" else ""
                    if since:
                        query += f"{'&' if query else '?'}since={since}"
                    median, worst = await latency(
                        f"http://127.0.0.1:{api.port}/api/{report}{query}", args.runs)
                    timings.append((size, report, since or "all", median, worst))
                    print(f"    /api/{report} {since or 'all time'}: median {median:.1f} ms, "
                          f"worst {worst:.1f} ms", flush=True)
    finally:
        await api.stop()
        await store.close()
        await redis.aclose()
        redis_server.stop()
        for f in work.glob("bench.db*"):
            f.unlink()
    print(f"\n### Store benchmark ({datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
          f"SQLite WAL, batches of {args.batch} exchanges)\n")
    print(f"Timestamps over {args.span_s / 86400:g} simulated days.\n")
    print("| stored exchanges | ingest (exchanges/s) | bytes per exchange | database |")
    print("|---:|---:|---:|---:|")
    for size, rate, per, db_mb in rows:
        print(f"| {size:,} | {rate:,.0f} | {per:,.0f} | {db_mb:,.0f} MiB |")
    print("\n| stored exchanges | report | window | median | worst |")
    print("|---:|---|---|---:|---:|")
    for size, report, since, median, worst in timings:
        print(f"| {size:,} | {report} | {since} | {median:.1f} ms | {worst:.1f} ms |")
    print("\nTargets (#12): ingest >= 10,000 exchanges/s; every report < 100 ms for 1h, 24h and "
          "7d windows at 10M exchanges.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
