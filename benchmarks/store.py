#!/usr/bin/env python3
"""Store benchmark: SQLite ingest rate and /api/summary latency at 100k and 1M exchanges.

    .venv/bin/python benchmarks/store.py [--sizes 100000,1000000] [--batch 500]

Ingest is what the comparer does per batch: upsert the request, response and candidate
parts (three events per exchange), then record the outcomes (comparisons precomputed,
so this measures the store, not the diff). 10% of exchanges mismatch, in 20 classes over
20 routes. The summary is fetched over HTTP from a real reports API.
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


async def ingest(store: SQLiteStore, n: int, batch: int, start: int) -> float:
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
            ts = time.time()
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


async def summary_latency(url: str, runs: int = 7) -> tuple[float, float]:
    times = []
    async with aiohttp.ClientSession() as client:
        for _ in range(runs):
            t0 = time.perf_counter()
            async with client.get(url) as r:
                data = await r.json()
            times.append((time.perf_counter() - t0) * 1000)
    assert data["total"] > 0
    return statistics.median(times), max(times)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--batch", type=int, default=500, help="exchanges per batch (default 500)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
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
    try:
        have = 0
        for size in sizes:
            print(f"ingesting up to {size:,} exchanges in batches of {args.batch} ...", flush=True)
            rate = await ingest(store, size - have, args.batch, have)
            have = size
            median, worst = await summary_latency(f"http://127.0.0.1:{api.port}/api/summary")
            db_mb = os.path.getsize(work / "bench.db") / 2**20
            rows.append((size, rate, median, worst, db_mb))
            print(f"  {size:,}: ingest {rate:,.0f} exchanges/s; /api/summary median "
                  f"{median:.1f} ms, worst {worst:.1f} ms; database {db_mb:,.0f} MiB", flush=True)
    finally:
        await api.stop()
        await store.close()
        await redis.aclose()
        redis_server.stop()
        for f in work.glob("bench.db*"):
            f.unlink()
    print(f"\n### Store benchmark ({datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
          f"SQLite WAL, batches of {args.batch} exchanges)\n")
    print("| stored exchanges | ingest (exchanges/s) | /api/summary median | worst | database |")
    print("|---:|---:|---:|---:|---:|")
    for size, rate, median, worst, db_mb in rows:
        print(f"| {size:,} | {rate:,.0f} | {median:.1f} ms | {worst:.1f} ms | {db_mb:,.0f} MiB |")
    print("\nTargets: ingest >= 5,000 exchanges/s; /api/summary < 300 ms at 1M.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
