#!/usr/bin/env python3
"""Store benchmark, #12's targets: bytes on disk per exchange on the defaults, marginal bytes
per additional exchange, SQLite ingest rate with rollups, report latency for 1h/24h/7d windows.

    .venv/bin/python benchmarks/store.py [--small 12000] [--rate 5000]
                                         [--sizes 1000000,3000000] [--span-s 604800]
                                         [--classes 5] [--latencies 1]
                                         [--keep sampled|all] [--batch 500]

Phase 1 (--small, default 12,000 exchanges): traffic at --rate (5,000/s) ending now, on the
defaults (keep policy, compaction, retention): bytes on disk per exchange (target <= 100).

Phase 2 (--sizes, default 1M and 3M; the issue's 1M,10M takes about half an hour): a fresh
store per size, the exchanges' timestamps spread evenly over --span-s (a simulated week)
ending now, so the rollups hold a week at full density (every route and class every
minute) and the keep policy sees every hour of it. Ingest rate with the comparer's
housekeeping running beside it (target >= 10,000/s); bytes per exchange; the marginal bytes
per exchange between consecutive sizes (target <= 10); summary, routes, classes and verdict
for all time, 1h, 24h and 7d from a real reports API on the largest store (target < 100 ms
each at 10M).

Ingest is what the comparer does per batch: upsert the request, response and candidate parts
(three events per exchange), then record the outcomes (comparisons precomputed, so this
measures the store, not the diff), with the keep policy. 10% of exchanges mismatch, in
--classes classes, over 20 routes; each side answers in one of --latencies latencies (1 ms
apart; default 1; 50 is a realistic spread: a route's latency histogram per time bucket is
one rollup row however many buckets it has). The housekeeping runs as the comparer's does,
the streams' horizon included (on an embedded Redis whose streams are empty: the traffic is
drained, so the tombstones of dropped exchanges go once their last part is older than
--tombstone-margin-s, 60 s). After ingest the housekeeping finishes (compaction with no
settle time, retention on the defaults, the horizon) and the WAL is checkpointed; bytes on
disk are the database's files then.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from comparer import ReportsApi  # noqa: E402
from comparer.housekeeping import Housekeeper, Limits, StreamHorizon  # noqa: E402
from comparer.stores.sqlite import SQLiteStore  # noqa: E402
from shadow.bus import connect  # noqa: E402
from shadow.cli.embedded_redis import EmbeddedRedis  # noqa: E402
from shadow.compare import compare  # noqa: E402
from shadow.ids import new_id  # noqa: E402
from shadow.keep import KeepPolicy  # noqa: E402
from shadow.keys import Keys  # noqa: E402
from shadow.model import (  # noqa: E402
    Answer,
    CandidateEvent,
    Comparison,
    Event,
    Request,
    RequestEvent,
    ResponseEvent,
)
from shadow.settings import Settings, load_settings  # noqa: E402

JSON = [("Content-Type", "application/json"), ("Content-Length", "120")]
ROUTES = 20


def templates(classes: int) -> tuple[Answer, list[Answer], Comparison, list[Comparison]]:
    v1 = Answer(200, JSON, orjson.dumps({"id": 1, "name": "x" * 80, "tags": ["a", "b"]}), 120,
                latency_ms=3.0)
    bad = [Answer(200, JSON, orjson.dumps({"id": 1, "name": "x" * 80, f"f{k}": k}), 120,
                  latency_ms=4.0) for k in range(classes)]
    req = Request("GET", "/r0/1", [])
    return v1, bad, compare(req, v1, v1, "/r0/{id}"), [compare(req, v1, b, f"/r{k}/{{id}}")
                                                        for k, b in enumerate(bad)]


REPORTS = ("summary", "routes", "classes", "verdict")
WINDOWS = ("", "1h", "24h", "7d")  # "": all time


async def ingest(store: SQLiteStore, n: int, batch: int, ts_of: Callable[[int], float],
                 keep: KeepPolicy, classes: int, latencies: int) -> float:
    """Ingest n exchanges (the i-th at ts_of(i)), oldest first; returns exchanges/s."""
    v1, bad, match, mismatches = templates(classes)
    began = time.perf_counter()
    done = 0
    while done < n:
        size = min(batch, n - done)
        events: list[Event] = []
        plan: dict[str, Comparison] = {}
        for i in range(done, done + size):
            ident = new_id()
            ts = ts_of(i)
            wrong = i % 10 == 3
            c = (i // 10) % classes
            a1 = dataclasses.replace(v1, latency_ms=2.0 + (i * 7) % latencies)
            a2 = dataclasses.replace(bad[c] if wrong else v1,
                                     latency_ms=3.0 + (i * 13) % latencies)
            events += [RequestEvent(ident, ident, ts, Request("GET", f"/r{i % ROUTES}/{i}", [])),
                       ResponseEvent(ident, ts, a1), CandidateEvent(ident, ts, a2)]
            plan[ident] = mismatches[c] if wrong else match
        ready = await store.apply(events)
        await store.complete([(x.id, plan[x.id]) for x in ready], keep=keep)
        done += size
        if done % 100_000 < batch:
            rate = done / (time.perf_counter() - began)
            print(f"  ingested {done:>10,} exchanges ({rate:,.0f}/s)", flush=True)
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


async def held(store: SQLiteStore) -> tuple[int, int]:
    """Documents kept, and tombstones of the dropped ones (none before the keep policy)."""
    async with store.db.execute("SELECT name FROM sqlite_master WHERE name = 'dropped'") as cur:
        tombstones = await cur.fetchone() is not None
    sql = "SELECT (SELECT count(*) FROM exchanges), " + \
        ("(SELECT count(*) FROM dropped)" if tombstones else "0")
    async with store.db.execute(sql) as cur:
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def db_bytes(store: SQLiteStore, path: Path) -> int:
    await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


@dataclasses.dataclass
class Run:
    label: str
    n: int
    rate: float  # exchanges/s, with the housekeeping beside
    finish_s: float  # the housekeeping after ingest
    bytes: int
    kept: int
    dropped: int

    @property
    def per(self) -> float:
        return self.bytes / self.n


async def fill(settings: Settings, redis: Any, path: Path, n: int,
               ts_of: Callable[[int], float], args: argparse.Namespace, label: str,
               ) -> tuple[SQLiteStore, Run]:
    """A fresh store holding n exchanges, as the comparer leaves it on the settings."""
    for f in path.parent.glob(path.name + "*"):
        f.unlink()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    horizon = StreamHorizon(redis, Keys(f"bench{os.getpid()}"),  # streams drained: empty
                            margin_s=settings.tombstone_margin_s)
    housekeeper = Housekeeper(store, Limits.from_settings(settings), interval_s=5.0,
                              horizon=horizon)
    print(f"{label}: ingesting {n:,} exchanges in batches of {args.batch} ...", flush=True)
    await housekeeper.start()
    try:
        rate = await ingest(store, n, args.batch, ts_of, KeepPolicy.from_settings(settings),
                            args.classes, args.latencies)
    finally:
        await housekeeper.stop()
    t0 = time.perf_counter()
    await store.compact(settle_s=0)  # what the next rounds would fold
    await housekeeper.run_once()
    finish = time.perf_counter() - t0
    total = await db_bytes(store, path)
    kept, dropped = await held(store)
    run = Run(label, n, rate, finish, total, kept, dropped)
    print(f"  {n:,}: ingest {rate:,.0f} exchanges/s; housekeeping after it {finish:.1f} s; "
          f"{total / 2**20:,.1f} MiB, {run.per:,.1f} bytes per exchange; {kept:,} documents "
          f"kept, {dropped:,} tombstones", flush=True)
    return store, run


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=12_000,
                    help="phase 1: exchanges at --rate (default 12000; 0 skips)")
    ap.add_argument("--rate", type=float, default=5000.0,
                    help="phase 1's traffic, exchanges per second (default 5000)")
    ap.add_argument("--sizes", default="1000000,3000000",
                    help="phase 2: a store of each size, spread over --span-s (default "
                         "1000000,3000000; the issue's targets: 1000000,10000000)")
    ap.add_argument("--span-s", type=float, default=7 * 86400,
                    help="phase 2's simulated time, ending now (default a week)")
    ap.add_argument("--classes", type=int, default=5, help="mismatch classes (default 5)")
    ap.add_argument("--latencies", type=int, default=1,
                    help="distinct latencies per side, 1 ms apart (default 1)")
    ap.add_argument("--batch", type=int, default=500, help="exchanges per batch (default 500)")
    ap.add_argument("--runs", type=int, default=5, help="requests per report timing (default 5)")
    ap.add_argument("--keep", choices=("sampled", "all"), default="sampled",
                    help="the keep policy (default sampled, shadow's default: documents kept "
                         "as evidence, tombstones for the others); all: every document")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="shadow-store-bench-"))
    path = work / "bench.db"
    redis_server = EmbeddedRedis(work / "redis", appendonly=False).start()
    settings = load_settings({"api": "127.0.0.1:0", "redis": redis_server.url,
                              "store": f"sqlite:///{path}", "keep": args.keep}, env={})
    redis = connect(redis_server.url, 5.0)
    runs: list[Run] = []
    timings: list[tuple[str, str, float, float]] = []
    store: SQLiteStore | None = None
    try:
        if args.small:
            end = time.time()
            store, run = await fill(settings, redis, path, args.small,
                                    lambda i: end - (args.small - i) / args.rate, args,
                                    f"phase 1 ({args.rate:,.0f}/s)")
            runs.append(run)
            await store.close()
            store = None
        for n in sizes:
            if store is not None:
                await store.close()
            first, step = time.time() - args.span_s, args.span_s / n

            def spread(i: int, first: float = first, step: float = step) -> float:
                return first + i * step
            store, run = await fill(settings, redis, path, n, spread, args,
                                    f"phase 2 (over {args.span_s / 86400:g} days)")
            runs.append(run)
        if store is not None:
            api = ReportsApi(settings, store, redis)
            await api.start()
            try:
                for report in REPORTS:
                    for since in WINDOWS:
                        query = "?min_samples=1" if report == "verdict" else ""
                        if since:
                            query += f"{'&' if query else '?'}since={since}"
                        median, worst = await latency(
                            f"http://127.0.0.1:{api.port}/api/{report}{query}", args.runs)
                        timings.append((report, since or "all", median, worst))
                        print(f"    /api/{report} {since or 'all time'}: median {median:.1f} "
                              f"ms, worst {worst:.1f} ms", flush=True)
            finally:
                await api.stop()
    finally:
        if store is not None:
            await store.close()
        await redis.aclose()
        redis_server.stop()
        for f in work.glob("bench.db*"):
            f.unlink()
    print(f"\n### Store benchmark ({datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
          f"SQLite WAL, batches of {args.batch} exchanges, keep policy {args.keep}, "
          f"{args.classes} mismatch classes over {ROUTES} routes, {args.latencies} "
          "latencies per side)\n")
    print("| run | exchanges | ingest (exchanges/s) | bytes on disk | bytes per exchange | "
          "documents kept | tombstones |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r.label} | {r.n:,} | {r.rate:,.0f} | {r.bytes / 2**20:,.1f} MiB | "
              f"{r.per:,.1f} | {r.kept:,} | {r.dropped:,} |")
    weekly = [r for r in runs if r.label.startswith("phase 2")]
    for a, b in zip(weekly, weekly[1:], strict=False):
        print(f"\nMarginal bytes per exchange from {a.n:,} to {b.n:,}: "
              f"{(b.bytes - a.bytes) / (b.n - a.n):,.1f}")
    if timings:
        print(f"\n| report ({weekly[-1].n if weekly else runs[-1].n:,} exchanges) | window | "
              "median | worst |")
        print("|---|---|---:|---:|")
        for report, since, median, worst in timings:
            print(f"| {report} | {since} | {median:.1f} ms | {worst:.1f} ms |")
    print("\nTargets (#12): <= 100 bytes per exchange at 12,000 exchanges; <= 10 bytes per "
          "additional exchange from 1M to 10M; ingest >= 10,000 exchanges/s; every report "
          "< 100 ms for 1h, 24h and 7d windows at 10M exchanges.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
