"""The `shadow` command line: the composition root, the only module that imports the services."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import gc
import logging
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shadow import __version__, firehose
from shadow.bus import connect
from shadow.cli import demo_apps
from shadow.cli.supervisor import Child, Children, Heartbeat, Supervisor, address, bind, keep_trying
from shadow.cli.views import (
    classes_table,
    make_console,
    mismatches_table,
    print_summary,
    print_verification,
    rules_table,
    show_exchange,
    verdict_lines,
)
from shadow.errors import ShadowError
from shadow.keys import Keys
from shadow.metrics_http import MetricsServer
from shadow.safetext import visible
from shadow.serve import start_site
from shadow.settings import (
    HELP,
    Settings,
    check_writable,
    field_names,
    load_settings,
    replace,
    to_args,
)

log = logging.getLogger("shadow")

PRIMARY = {
    "up": ("v1", "v2", "listen", "api", "redis", "store", "rules", "allow_side_effects",
           "v1_secondary", "data_dir", "workers"),
    "proxy": ("v1", "listen", "redis", "workers"),
    "subscriber": ("v2", "redis", "allow_side_effects"),
    "comparer": ("redis", "store", "api"),
    "demo": ("redis",),
    "replay": ("v2", "store", "rules"),
}

DESCRIPTIONS = {
    "up": "Run everything on one machine: Redis (embedded unless --redis), the proxy in front "
          "of V1, the subscriber replaying to V2, and the comparer with its reports API. "
          "Point clients at --listen; read results with `shadow report`. Ctrl-C stops it all.",
    "proxy": "Run only the proxy: serves every client from V1 and publishes request/response "
             "events to Redis (never delaying a client for it).",
    "subscriber": "Run only the subscriber: replays admitted requests against V2 and publishes "
                  "V2's answers. Run as many as you like; they share the work.",
    "comparer": "Run only the comparer: joins V1 and V2 answers in the store, diffs them and "
                "serves the reports API (/api/summary, /api/exchanges/ID, /metrics).",
    "demo": "A self-contained demo: starts a sample V1 and a V2 'rewrite' with deliberate "
            "differences, runs `shadow up` in front, sends traffic and prints the report.",
    "report": "Print the per-route summary from a running comparer's reports API.",
    "replay": "Re-verify stored traffic against today's V2: re-send stored requests (all, only "
              "mismatches, or by route, class or time), compare with the stored V1 answers, and "
              "report per mismatch class: fixed, still failing, or changed; plus new regressions. "
              "Reads the store directly (run it where the comparer's --store is reachable). "
              "The policy settings apply: only safe methods unless --allow-side-effects. "
              "With --stored nothing is sent: the stored V2 answers are compared again under "
              "--rules, a preview of what a rules change would hide.",
}


# ---------------------------------------------------------------- arguments

BOOLEAN_FLAGS = ("allow_side_effects", "publish", "forwarded_headers", "preserve_host",
                 "auto_ignore_noise", "metrics_open", "trust_forwarded", "trust_canonical_resource")


def _add_settings(parser: argparse.ArgumentParser, primary: tuple[str, ...]) -> None:
    main_group = parser.add_argument_group("main options")
    tuning = parser.add_argument_group("tuning (also SHADOW_<NAME> or shadow.toml)")
    for name in field_names():
        flag = f"--{name.replace('_', '-')}"
        group = main_group if name in primary else tuning
        if name in BOOLEAN_FLAGS:
            group.add_argument(flag, nargs="?", const="true", default=None, metavar="BOOL",
                               help=HELP.get(name))
        else:
            group.add_argument(flag, default=None, metavar=name.upper().split("_")[-1]
                               if name not in ("v1", "v2") else "URL", help=HELP.get(name))
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="TOML settings file (default ./shadow.toml when present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadow",
        description="Traffic shadowing: serve clients from V1, replay their requests against "
                    "V2, and compare the answers, to prove a rewrite on real traffic.",
        epilog="Start with `shadow demo`, then `shadow up --v1 URL --v2 URL`.")
    parser.add_argument("--version", action="version", version=f"shadow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("up", "proxy", "subscriber", "comparer", "demo", "replay"):
        p = sub.add_parser(name, help=DESCRIPTIONS[name].split(":")[0].split(".")[0],
                           description=DESCRIPTIONS[name])
        _add_settings(p, PRIMARY[name])
        p.set_defaults(func=COMMANDS[name])
    sub.choices["proxy"].add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    sub.choices["comparer"].add_argument("--api-fd", type=int, help=argparse.SUPPRESS)
    for name in ("proxy", "subscriber", "comparer"):  # set by the supervisor (`shadow up`)
        sub.choices[name].add_argument("--heartbeat-fd", type=int, help=argparse.SUPPRESS)
    rp = sub.choices["replay"]
    rp.add_argument("--only", choices=("mismatches", "all"), default="mismatches",
                    help="which stored exchanges to re-send (default mismatches)")
    rp.add_argument("--route", help="only this route template")
    rp.add_argument("--signature", help="only this mismatch class")
    rp.add_argument("--since", help="unix seconds, ISO 8601 or a duration ago (15m, 2h, 7d)")
    rp.add_argument("--limit", type=int, default=10_000, help="at most this many (default 10000)")
    rp.add_argument("--json", action="store_true", help="print the report as JSON")
    rp.add_argument("--stored", action="store_true",
                    help="send nothing: compare the stored V2 answers again under --rules, to "
                         "see what a rules change would hide before deploying it (no --v2)")
    demo = sub.choices["demo"]
    demo.add_argument("--requests", type=int, default=3000, help="requests to send (default 3000)")
    demo.add_argument("--concurrency", type=int, default=16, help="parallel clients (default 16)")
    demo.add_argument("--exit", action="store_true",
                      help="stop after printing the report (default: keep serving the API)")
    report = sub.add_parser("report", help="per-route summary from the reports API",
                            description=DESCRIPTIONS["report"])
    report.add_argument("--api", dest="api_url", default=None, metavar="URL",
                        help="reports API URL (default http://<api setting>, 127.0.0.1:8081)")
    report.add_argument("--json", action="store_true", help="print the /api/summary JSON")
    report.add_argument("--config", default=None, metavar="FILE", help="TOML settings file")
    report.set_defaults(func=cmd_report)

    def reader(name: str, help_text: str, description: str,
               json_help: str = "print JSON instead of a table") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("--api", dest="api_url", default=None, metavar="URL",
                       help="reports API URL (default http://<api setting>, 127.0.0.1:8081)")
        p.add_argument("--json", action="store_true", help=json_help)
        p.add_argument("--config", default=None, metavar="FILE", help="TOML settings file")
        return p

    mm = reader("mismatches", "list mismatching exchanges",
                "List mismatching exchanges, newest first, with their differing fields.")
    mm.add_argument("--route", help="only this route template, e.g. /users/{id}")
    mm.add_argument("--method", help="only this HTTP method")
    mm.add_argument("--since", help="unix seconds, ISO 8601 or a duration ago (15m, 2h, 7d)")
    mm.add_argument("--until", help="same forms as --since")
    mm.add_argument("--signature", help="only this mismatch class")
    mm.add_argument("--path", help="only exchanges with a differing path containing this text")
    mm.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    mm.set_defaults(func=cmd_mismatches)
    show = reader("show", "one exchange, V1 and V2 side by side",
                  "Show one exchange (by exchange id or X-Request-Id): the request, V1's and "
                  "V2's answers side by side with the differing fields highlighted.")
    show.add_argument("id", help="exchange id or request id")
    show.set_defaults(func=cmd_show)
    cl = reader("classes", "mismatch classes: one line per bug",
                "List mismatch classes (exchanges grouped by route and shape of difference).")
    cl.set_defaults(func=cmd_classes)
    mark = reader("mark", "set a mismatch class's status",
                  "Triage a mismatch class: new, known, accepted (a deliberate change; it no "
                  "longer counts against the verdict), bug (with --ticket), fixed (reopens by "
                  "itself if it mismatches again).")
    mark.add_argument("signature")
    mark.add_argument("status", choices=("new", "known", "accepted", "bug", "fixed"))
    mark.add_argument("--ticket", help="a link to the bug ticket")
    mark.add_argument("--note", help="free text")
    mark.set_defaults(func=cmd_mark)
    rl = reader("rules", "the comparison rules in force, and what each one hid",
                "List the rules of the comparer's --rules file with their reason, owner, expiry "
                "and how many differences each one has suppressed, so suppressions stay "
                "visible and reviewed.")
    rl.add_argument("action", nargs="?", choices=("list", "suggest"), default="list",
                    help="list (default): the rules in force; suggest: print proposed rules as "
                         "TOML, from noise evidence and UUID/timestamp detectors (never applied)")
    rl.set_defaults(func=cmd_rules)
    vd = reader("verdict", "can we cut over? exit 0 = ready, 1 = not ready",
                "Ready only when every route seen has at least --min-samples compared "
                "exchanges and the lower bound of the 95%% Wilson interval of its match rate "
                "is at least --min-match. Classes marked accepted count as matches. Prints the "
                "routes that hold the cutover back and why.")
    vd.add_argument("--min-match", type=float, default=99.9, metavar="PCT",
                    help="required match rate, percent (default 99.9)")
    vd.add_argument("--min-samples", type=int, default=100, metavar="N",
                    help="compared exchanges required per route (default 100)")
    vd.add_argument("--exclude", action="append", default=[], metavar="ROUTE",
                    help="leave a route out ('/health' or 'GET /health'); repeatable")
    vd.set_defaults(func=cmd_verdict)
    tl = reader("tail", "the live firehose: one line per compared exchange",
                "Follow the comparisons as they happen (redacted: secrets named by "
                "--redact-headers / --redact-fields on the comparer are masked). One line per "
                "exchange: time, outcome, method, URL, V1 and V2 status and latency, and the "
                "first difference. Ctrl-C to stop.",
                json_help="print each item as one line of JSON (for scripts)")
    tl.add_argument("--outcome", help="only these outcomes, comma-separated "
                                      "(match, mismatch, v2_error, skipped, compare_error)")
    tl.add_argument("--route", help="only routes matching this glob, e.g. '/users/*'")
    tl.add_argument("--method", help="only this HTTP method")
    tl.add_argument("--count", type=int, default=None, metavar="N",
                    help="stop after N exchanges (default: follow until Ctrl-C)")
    tl.set_defaults(func=cmd_tail)
    return parser


# ---------------------------------------------------------------- running

def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(coro)  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(coro)


async def _until_signal() -> None:
    """Return on SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


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


def cmd_proxy(args: argparse.Namespace, settings: Settings) -> int:
    if settings.workers > 1:
        return _run(run_proxy_workers(args, settings))
    return _run(run_proxy(args, settings))


async def run_proxy(args: argparse.Namespace, settings: Settings) -> int:
    tune_gc_for_throughput()
    from proxy import Discard, Proxy, Publisher

    async with contextlib.AsyncExitStack() as opened:  # a failed start closes what it opened
        await opened.enter_async_context(Heartbeat(args.heartbeat_fd, settings.heartbeat_timeout_s))
        redis = connect(_need_redis(settings, "proxy"), settings.redis_timeout_s) \
            if settings.publish else None
        if redis is not None:
            opened.push_async_callback(redis.aclose)
        publisher = Publisher(redis, Keys(settings.stream_prefix), max_queue=settings.max_queue,
                              max_queue_bytes=settings.max_queue_bytes,
                              batch=settings.publish_batch, maxlen=settings.stream_maxlen) \
            if redis is not None else Discard()
        sock = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
        proxy = Proxy(settings, publisher, sock=sock)
        exporter = MetricsServer(settings.metrics_listen) if settings.metrics_listen else None
        await publisher.start()
        opened.push_async_callback(publisher.stop)
        await proxy.start()
        opened.push_async_callback(proxy.stop)
        if exporter is not None:
            await exporter.start()
            opened.push_async_callback(exporter.stop)
        log.info("proxy on port %s -> V1 %s%s%s", proxy.port, settings.v1,
                 "" if settings.publish else " (publishing off)",
                 f"; /metrics on port {exporter.port}" if exporter is not None else "")
        await _until_signal()
    return 0


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
    group = Children(metrics_dir=metrics_dir, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    exporter = MetricsServer(settings.metrics_listen, multiproc_dir=str(metrics_dir)) \
        if settings.metrics_listen else None
    worker_args = [*to_args(settings, skip=("listen", "workers", "metrics_listen")), "--listen",
                   address(sock), "--listen-fd", str(sock.fileno())]
    await group.start([Child("proxy", worker_args, (sock.fileno(),))
                       for _ in range(settings.workers)])
    log.info("proxy on port %s -> V1 %s (%d workers)", sock.getsockname()[1], settings.v1,
             settings.workers)
    if exporter is not None:
        await exporter.start()
    try:
        await _until_signal()
    finally:
        if exporter is not None:
            await exporter.stop()
        await group.stop()
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_subscriber(args: argparse.Namespace, settings: Settings) -> int:
    from subscriber import Subscriber

    async def run() -> int:
        async with contextlib.AsyncExitStack() as opened:  # a failed start closes what it opened
            await opened.enter_async_context(
                Heartbeat(args.heartbeat_fd, settings.heartbeat_timeout_s))
            url = _need_redis(settings, "subscriber")
            redis = connect(url, settings.redis_timeout_s)
            opened.push_async_callback(redis.aclose)
            sub = Subscriber(settings, redis)
            exporter = MetricsServer(settings.metrics_listen) if settings.metrics_listen else None
            await keep_trying(f"Redis at {url}", sub.start, sub.stop)
            opened.push_async_callback(sub.stop)
            if exporter is not None:
                await exporter.start()
                opened.push_async_callback(exporter.stop)
            log.info("subscriber replaying to V2 %s%s", settings.v2,
                     f"; /metrics on port {exporter.port}" if exporter is not None else "")
            await _until_signal()
        return 0

    return _run(run())


def cmd_comparer(args: argparse.Namespace, settings: Settings) -> int:
    from comparer import Comparer, ReportsApi, open_store

    async def run() -> int:
        async with contextlib.AsyncExitStack() as opened:  # a failed start closes what it opened
            await opened.enter_async_context(
                Heartbeat(args.heartbeat_fd, settings.heartbeat_timeout_s))
            url = _need_redis(settings, "comparer")
            redis = connect(url, settings.redis_timeout_s)
            opened.push_async_callback(redis.aclose)
            store = open_store(settings.store, retention_max_age_s=settings.retention_max_age_s)
            sock = socket.socket(fileno=args.api_fd) if args.api_fd is not None else None
            comparer = Comparer(settings, redis, store)
            api = ReportsApi(settings, store, redis, sock=sock,  # checks the token before binding
                             rules=lambda: comparer.rules)
            await keep_trying(f"the store {settings.store}", store.open, store.close)
            opened.push_async_callback(store.close)
            await keep_trying(f"Redis at {url}", comparer.start, comparer.stop)
            opened.push_async_callback(comparer.stop)
            await api.start()
            opened.push_async_callback(api.stop)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, comparer.reload_rules)
            log.info("comparer storing to %s; reports API on port %s (SIGHUP reloads --rules)",
                     settings.store, api.port)
            await _until_signal()
        return 0

    return _run(run())


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        sup = Supervisor(settings)
        try:  # a failed start stops what did start; after it, no part stops the others
            await sup.start()
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, sup.reload_rules)
            print(f"shadow is up: send clients to http://{sup.proxy_address} (V1: {settings.v1}); "
                  f"replaying to {settings.v2}; dashboard: http://{sup.api_address}/  reports: "
                  f"shadow report --api http://{sup.api_address}  (Ctrl-C to stop)", flush=True)
            await _until_signal()
        finally:
            await sup.stop()
        return 0

    return _run(run())


# ---------------------------------------------------------------- reports

def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    url = args.api_url or f"http://{settings.api}"
    return url if "://" in url else f"http://{url}"


def _api_request(url: str, token: str | None, accept: str,
                 body: dict[str, Any] | None = None) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"Accept": accept},
                                     data=orjson.dumps(body) if body is not None else None)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    return request


def _api_error(url: str, e: OSError, doing: str) -> ShadowError:
    """What to tell the user when the reports API refused (HTTP error) or is not there."""
    if isinstance(e, urllib.error.HTTPError):
        return ShadowError(f"{url} answered {e.code}: "
                           + visible(e.read().decode(errors="replace")[:300]))
    return ShadowError(f"cannot {doing} at {url} ({getattr(e, 'reason', e)}): is `shadow up` or "
                       "`shadow comparer` running? Point at it with --api URL")


def fetch_json(url: str, token: str | None, timeout_s: float = 10.0,
               body: dict[str, Any] | None = None) -> Any:
    try:
        with urllib.request.urlopen(_api_request(url, token, "application/json", body),
                                    timeout=timeout_s) as resp:
            return orjson.loads(resp.read())
    except (urllib.error.URLError, OSError) as e:
        raise _api_error(url, e, "reach the reports API") from e


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    summary = fetch_json(_api_url(args, settings) + "/api/summary", settings.api_token)
    if args.json:
        _print_json(summary)
    else:
        print_summary(summary)
    return 0


def _print_json(data: Any) -> None:
    """JSON for scripts, equal to the API's, with no raw control or bidi character left for a
    terminal to act on (each becomes its \\uXXXX escape, which JSON reads back the same)."""
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    sys.stdout.write(visible(text, multiline=True) + "\n")


def cmd_mismatches(args: argparse.Namespace, settings: Settings) -> int:
    query = {k: str(v) for k, v in (("route", args.route), ("method", args.method),
                                     ("since", args.since), ("until", args.until),
                                     ("signature", args.signature), ("path", args.path),
                                     ("limit", args.limit)) if v is not None}
    url = f"{_api_url(args, settings)}/api/mismatches?{urllib.parse.urlencode(query)}"
    data = fetch_json(url, settings.api_token)
    if args.json:
        _print_json(data)
    else:
        console = make_console()
        console.print(mismatches_table(data["items"]))
        if data.get("next"):
            console.print(f"more: add --limit, or page with the API cursor {data['next']}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    key = urllib.parse.quote(args.id, safe="")
    data = fetch_json(f"{_api_url(args, settings)}/api/exchanges/{key}", settings.api_token)
    if args.json:
        _print_json(data)
    else:
        show_exchange(data, make_console())
    return 0


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    query = {k: v for k, v in (("outcome", args.outcome), ("route", args.route),
                               ("method", args.method)) if v}
    url = f"{_api_url(args, settings)}/api/firehose?{urllib.parse.urlencode(query)}"
    request = _api_request(url, settings.api_token, "text/event-stream")
    seen, followed, lost = 0, False, False
    try:
        while True:
            try:
                # the API sends a keepalive every 15 s; 60 s of silence means it is gone
                with urllib.request.urlopen(request, timeout=60) as resp:
                    if not args.json and (lost or not followed):
                        print(f"{'back: ' if lost else ''}following {url} (Ctrl-C to stop)",
                              file=sys.stderr, flush=True)
                    followed, lost = True, False
                    for event, data in firehose.sse_events(resp):
                        if event == "dropped":
                            print(f"… {data.decode()} exchanges skipped: this terminal reads "
                                  "slower than they arrive; filter with --outcome or --route",
                                  file=sys.stderr, flush=True)
                            continue
                        text = data.decode(errors="replace") if args.json else \
                            firehose.line(orjson.loads(data))
                        print(visible(text), flush=True)
                        seen += 1
                        if args.count is not None and seen >= args.count:
                            return 0
                reason = "the stream ended"
            except (urllib.error.URLError, OSError) as e:
                if not followed or isinstance(e, urllib.error.HTTPError):
                    raise _api_error(url, e, "follow the firehose") from e
                reason = str(getattr(e, "reason", e))
            if not lost:
                print(f"lost the firehose ({reason}); reconnecting every 2 s (Ctrl-C to stop)",
                      file=sys.stderr, flush=True)
                lost = True
            time.sleep(2)
    except KeyboardInterrupt:
        return 0


def cmd_classes(args: argparse.Namespace, settings: Settings) -> int:
    data = fetch_json(f"{_api_url(args, settings)}/api/classes", settings.api_token)
    if args.json:
        _print_json(data)
    else:
        make_console().print(classes_table(data["classes"]))
    return 0


def cmd_mark(args: argparse.Namespace, settings: Settings) -> int:
    body = {"status": args.status, "ticket": args.ticket, "note": args.note}
    data = fetch_json(f"{_api_url(args, settings)}/api/classes/{args.signature}",
                      settings.api_token, body=body)
    if args.json:
        _print_json(data)
    else:
        print(visible(f"class {data['signature']} ({data['method']} {data['route']}): "
                      f"{data['status']}" + (f" {data['ticket']}" if data.get("ticket") else "")))
    return 0


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "suggest":
        found = fetch_json(f"{_api_url(args, settings)}/api/suggestions", settings.api_token)
        if args.json:
            _print_json(found)
        elif found["toml"]:
            sys.stdout.write("# Suggested by shadow. Review each one, then add the ones you agree "
                             "with to your --rules file.\n\n"
                             + visible(found["toml"], multiline=True))
        else:
            print("no suggestions: no noisy paths or UUID/timestamp differences found yet")
        return 0
    data = fetch_json(f"{_api_url(args, settings)}/api/rules", settings.api_token)
    if args.json:
        _print_json(data)
    else:
        make_console().print(rules_table(data))
    return 0


def cmd_verdict(args: argparse.Namespace, settings: Settings) -> int:
    query = [("min_match", str(args.min_match)), ("min_samples", str(args.min_samples)),
             *(("exclude", r) for r in args.exclude)]
    data = fetch_json(f"{_api_url(args, settings)}/api/verdict?{urllib.parse.urlencode(query)}",
                      settings.api_token)
    if args.json:
        _print_json({"ready": data["ready"],
                     "routes": [{k: r[k] for k in ("method", "route", "ready", "reason")}
                                for r in data["routes"]]})
    else:
        console = make_console()
        for line in verdict_lines(data):
            console.print(line)
    return 0 if data["ready"] else 1


# ---------------------------------------------------------------- demo

def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return _run(run_demo(args, settings))


async def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

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
            with _progress(console) as progress:
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
        await _until_signal()
        return 0
    finally:
        await sup.stop()
        for runner in runners:
            await runner.cleanup()


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


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


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    return _run(run_replay(args, settings))


async def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from comparer import open_store
    from shadow.compare import compare
    from shadow.filters import parse_filters
    from shadow.model import Comparison
    from shadow.rules import load_rules_file
    from shadow.verify import verification_report
    from subscriber.client import ReplayClient

    if not args.stored:
        settings.require("v2")
    query = {k: str(v) for k, v in (("route", args.route), ("signature", args.signature),
                                     ("since", args.since)) if v is not None}
    filters = parse_filters(query, time.time(),
                            default_outcome="mismatch" if args.only == "mismatches" else None)
    rules = load_rules_file(settings.rules)
    store = open_store(settings.store)
    client = None if args.stored else ReplayClient(settings)
    console = make_console()
    progress_console = Console(stderr=True)  # stdout stays clean for --json
    await store.open()
    if client is not None:
        await client.start()
    try:
        before: list[dict[str, Any]] = []
        cursor = None
        while len(before) < args.limit:
            page, cursor = await store.list_exchanges(
                dataclasses.replace(filters, cursor=cursor, limit=min(1000, args.limit - len(before))))
            before += [x for x in page if x["outcome"] in ("match", "mismatch")]
            if cursor is None:
                break
        after: dict[str, Comparison] = {}
        sem = asyncio.Semaphore(settings.replay_concurrency)
        today = datetime.date.today()
        doing = (f"re-comparing {len(before)} stored exchanges under "
                 f"{settings.rules or 'no rules'}" if client is None else
                 f"re-sending {len(before)} stored requests to {settings.v2}")
        with _progress(progress_console) as progress:
            task = progress.add_task(doing, total=len(before))

            async def one(summary: dict[str, Any]) -> None:
                async with sem:
                    x = await store.get(summary["id"])
                    v2 = None
                    if x is None or x.request is None or x.v1 is None:
                        pass
                    elif client is None:
                        v2 = x.v2
                    elif client.policy.decision(x.request, x.id) is None:  # as the subscriber
                        v2 = await client.call(str(settings.v2).rstrip("/"), x.request,
                                               x.request_id or x.id)
                    if x is not None and x.v1 is not None and v2 is not None:
                        after[x.id] = compare(x.request, x.v1, v2, x.route,
                                              rules.active(x.method, x.route, today))
                    progress.advance(task)

            await asyncio.gather(*(one(x) for x in before))
        report = verification_report(before, after)
    finally:
        if client is not None:
            await client.stop()
        await store.close()
    if args.json:
        _print_json(report)
    else:
        print_verification(report, console, stored=args.stored)
    still = any(c["verdict"] != "fixed" for c in report["classes"]) or report["new_regressions"]
    return 1 if still else 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "up": cmd_up, "proxy": cmd_proxy, "subscriber": cmd_subscriber, "comparer": cmd_comparer,
    "demo": cmd_demo, "replay": cmd_replay,
}


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {name: getattr(args, name) for name in field_names() if hasattr(args, name)}
    try:
        settings = load_settings(flags, config_file=args.config)
        if args.command in ("up", "comparer"):  # they create the store (and up Redis's files)
            check_writable(settings, embedded_redis=args.command == "up" and not settings.redis)
        _configure_logging(settings.log_level)
        return args.func(args, settings)
    except ShadowError as e:
        print(f"shadow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


