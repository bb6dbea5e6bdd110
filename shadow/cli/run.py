"""Commands that run services: `shadow up`, `shadow proxy` (one process or --workers N),
`shadow subscriber` and `shadow comparer`. With replay.py, the only modules that import
the services (proxy/, subscriber/, comparer/), each inside the command that runs it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shadow.bus import connect, ensure_layout, keys_for
from shadow.cli.loop import run_async, until_signal
from shadow.cli.supervisor import Child, Children, Heartbeat, Supervisor, address, bind, keep_trying
from shadow.credentials import mask_url
from shadow.errors import BusError, ShadowError
from shadow.metrics_http import MetricsServer
from shadow.private import make_private_files
from shadow.protection import Protection
from shadow.secretkey import load_keyring
from shadow.settings import Settings, sqlite_path, to_args, to_env

log = logging.getLogger("shadow")


def tune_gc_for_throughput() -> None:
    """The proxy allocates many short-lived objects per request. Moving start-up objects out
    of the collector's sight and collecting the young generation less often was measured at
    +10-15% requests/s (benchmarks/proxy.py); cycles are still collected."""
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def _need_redis(settings: Settings, role: str) -> str:
    if settings.redis is None:
        raise ShadowError(f"`shadow {role}` needs --redis URL (or SHADOW_REDIS); only "
                          "`shadow up` starts an embedded Redis")
    return settings.redis


def protection_for(settings: Settings) -> Protection:
    """The data protection the proxy and the subscriber apply (the key is read here: no key,
    or a bad one, is a ConfigError before anything starts). Loud when it lets data through."""
    protection = Protection.from_settings(settings, load_keyring(settings))
    if not settings.redaction:
        log.warning("--redaction false: secrets reach Redis and the store IN CLEAR; only for "
                    "measuring what redaction costs")
    if protection.raw_globs:
        log.warning("--capture-bodies: bodies of %s are stored RAW (unredacted)",
                    ", ".join(protection.raw_globs))
    return protection


def cmd_proxy(args: argparse.Namespace, settings: Settings) -> int:
    protection = None
    if settings.publish:  # no Redis or no key (or a bad one): an error before anything starts
        _need_redis(settings, "proxy")
        protection = protection_for(settings)
    if (settings.workers or 1) > 1:
        return run_async(run_proxy_workers(args, settings))
    return run_async(run_proxy(args, settings, protection))


async def run_proxy(args: argparse.Namespace, settings: Settings,
                    protection: Protection | None) -> int:
    tune_gc_for_throughput()
    from proxy import Discard, Proxy, Publisher

    async with contextlib.AsyncExitStack() as opened:  # a failed start closes what it opened
        await opened.enter_async_context(Heartbeat(args.heartbeat_fd, settings.heartbeat_timeout_s))
        redis = connect(_need_redis(settings, "proxy"), settings.redis_timeout_s) \
            if settings.publish else None
        if redis is not None:
            opened.push_async_callback(redis.aclose)
        publisher = Publisher(redis, keys_for(settings), max_queue=settings.max_queue,
                              max_queue_bytes=settings.max_queue_bytes,
                              batch=settings.publish_batch, maxlen=settings.stream_maxlen,
                              wait_replicas=settings.publish_wait_replicas,
                              wait_timeout_s=settings.redis_timeout_s / 2) \
            if redis is not None else Discard()
        if redis is not None:
            await _check_layout(redis, settings)
        sock = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
        proxy = Proxy(settings, publisher, sock=sock,
                      protection=protection)
        exporter = MetricsServer(settings.metrics_listen) if settings.metrics_listen else None
        await publisher.start()
        opened.push_async_callback(publisher.stop)
        await proxy.start()
        opened.push_async_callback(proxy.stop)
        if exporter is not None:
            await exporter.start()
            opened.push_async_callback(exporter.stop)
        log.info("proxy on port %s -> V1 %s%s%s", proxy.port, mask_url(str(settings.v1)),
                 "" if settings.publish else " (publishing off)",
                 f"; /metrics on port {exporter.port}" if exporter is not None else "")
        await until_signal()
    return 0


async def _check_layout(redis: aioredis.Redis, settings: Settings) -> None:
    """A proxy started with another --stream-shards than the streams were written with stops
    here, saying what to do. Redis unreachable: the proxy serves anyway (fail-open), and its
    publisher checks before its first batch."""
    try:
        await asyncio.wait_for(ensure_layout(redis, keys_for(settings)), settings.redis_timeout_s)
    except (RedisError, OSError, TimeoutError, BusError) as e:
        log.warning("the stream shard count could not be checked now (%s); the publisher "
                    "checks it before its first batch", mask_url(str(e)) or type(e).__name__)


async def run_proxy_workers(args: argparse.Namespace, settings: Settings) -> int:
    """N proxy processes accepting on one shared socket."""
    if settings.publish:
        _need_redis(settings, "proxy")
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:
        sock = bind(settings.listen, "--listen")
    metrics_dir = Path(tempfile.mkdtemp(prefix="shadow-proxy-metrics-")) \
        if settings.metrics_listen else None
    # the workers' metrics, summed on our /metrics; a worker that exits or hangs is restarted
    group = Children({**os.environ, **to_env(settings)},  # credentials: never on a command line
                     metrics_dir=metrics_dir, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    exporter = MetricsServer(settings.metrics_listen, multiproc_dir=str(metrics_dir)) \
        if settings.metrics_listen else None
    worker_args = [*to_args(settings, skip=("listen", "workers", "metrics_listen")), "--listen",
                   address(sock), "--listen-fd", str(sock.fileno())]
    await group.start([Child("proxy", worker_args, (sock.fileno(),))
                       for _ in range(settings.workers or 1)])
    log.info("proxy on port %s -> V1 %s (%d workers)", sock.getsockname()[1],
             mask_url(str(settings.v1)),
             settings.workers or 1)
    if exporter is not None:
        await exporter.start()
    try:
        await until_signal()
    finally:
        if exporter is not None:
            await exporter.stop()
        await group.stop()
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


async def _open_service(opened: contextlib.AsyncExitStack, args: argparse.Namespace,
                        settings: Settings, role: str) -> tuple[str, aioredis.Redis]:
    """What a subscriber or comparer process opens first, closed by `opened`: its heartbeat to
    `shadow up` (when it runs under it) and its Redis client."""
    await opened.enter_async_context(Heartbeat(args.heartbeat_fd, settings.heartbeat_timeout_s))
    url = _need_redis(settings, role)
    redis = connect(url, settings.redis_timeout_s)
    opened.push_async_callback(redis.aclose)
    return url, redis


def yield_cpu_to_the_proxy(args: argparse.Namespace, settings: Settings) -> None:
    """Under `shadow up` (a heartbeat pipe says so), the pipeline's processes run at
    --pipeline-nice, with the batch scheduling policy: set in the main thread before any other
    starts, so every thread (aiosqlite's, the resolver's) inherits it."""
    if args.heartbeat_fd is None or not settings.pipeline_nice:
        return
    with contextlib.suppress(OSError):
        os.nice(settings.pipeline_nice)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def cmd_subscriber(args: argparse.Namespace, settings: Settings) -> int:
    from subscriber import Subscriber

    yield_cpu_to_the_proxy(args, settings)

    protection = protection_for(settings)  # no key, or a bad one: an error before anything

    async def run() -> int:
        async with contextlib.AsyncExitStack() as opened:  # a failed start closes what it opened
            url, redis = await _open_service(opened, args, settings, "subscriber")
            sub = Subscriber(settings, redis, protection=protection)
            exporter = MetricsServer(settings.metrics_listen) if settings.metrics_listen else None
            await keep_trying(f"Redis at {mask_url(url)}", sub.start, sub.stop)
            opened.push_async_callback(sub.stop)
            if exporter is not None:
                await exporter.start()
                opened.push_async_callback(exporter.stop)
            log.info("subscriber replaying to V2 %s%s", mask_url(str(settings.v2)),
                     f"; /metrics on port {exporter.port}" if exporter is not None else "")
            await until_signal()
        return 0

    return run_async(run())


def cmd_comparer(args: argparse.Namespace, settings: Settings) -> int:
    from comparer import Comparer, ReportsApi, open_store

    yield_cpu_to_the_proxy(args, settings)

    if settings.store.startswith("sqlite:///"):  # a store an older version left open to others
        db = sqlite_path(settings.store)
        make_private_files([db, f"{db}-wal", f"{db}-shm"])

    async def run() -> int:
        async with contextlib.AsyncExitStack() as opened:  # a failed start closes what it opened
            url, redis = await _open_service(opened, args, settings, "comparer")
            store = open_store(settings.store)
            sock = socket.socket(fileno=args.api_fd) if args.api_fd is not None else None
            comparer = Comparer(settings, redis, store)
            api = ReportsApi(settings, store, redis, sock=sock,  # checks the token before binding
                             rules=lambda: comparer.rules)
            await keep_trying(f"the store {mask_url(settings.store)}", store.open, store.close)
            opened.push_async_callback(store.close)
            await keep_trying(f"Redis at {mask_url(url)}", comparer.start, comparer.stop)
            opened.push_async_callback(comparer.stop)
            await api.start()
            opened.push_async_callback(api.stop)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, comparer.reload_rules)
            log.info("comparer storing to %s; reports API on port %s (SIGHUP reloads --rules)",
                     mask_url(settings.store), api.port)
            await until_signal()
        return 0

    return run_async(run())


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        sup = Supervisor(settings)
        try:  # a failed start stops what did start; after it, no part stops the others
            await sup.start()
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, sup.reload_rules)
            print(f"shadow is up: send clients to http://{sup.proxy_address} (V1: "
                  f"{mask_url(str(settings.v1))}); replaying to {mask_url(str(settings.v2))}; dashboard: http://{sup.api_address}/  reports: "
                  f"shadow report --api http://{sup.api_address}  (Ctrl-C to stop)", flush=True)
            await until_signal()
        finally:
            await sup.stop()
        return 0

    return run_async(run())
