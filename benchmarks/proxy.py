#!/usr/bin/env python3
"""Proxy benchmark: shadow's proxy against nginx, under the same load generator, in one run.

    .venv/bin/python benchmarks/proxy.py [--duration 10] [--connections 8,64]

Targets, all on 127.0.0.1 (this machine's 2 cores are shared by everything):
  v1-direct        nginx serving a ~1 KB JSON file (V1; fast, so V1 is not the bottleneck)
  nginx-proxy      nginx as a plain reverse proxy to V1
  nginx-mirror     nginx reverse proxy + the mirror module copying every request to V2
  shadow-nopub     shadow's proxy with publishing off (what the proxying alone costs)
  shadow-1w        shadow's proxy publishing every request and response to a real Redis
  shadow-2w        the same with --workers 2
and one fault run: shadow-1w while Redis is frozen (SIGSTOP) for the middle third of the run.
Redaction's cost (#11): POST of a ~1 KB JSON body answered with ~1 KB of JSON (the payload,
which holds an e-mail address the default policy tokenizes), shadow-1w with the default
policy (shadow-redact) against --redaction false (shadow-noredact), interleaved like the rest.
`--only redaction` runs just that pair.
All-in-one (#16): `shadow up` on its defaults (a proxy worker per core, the subscriber and the
comparer niced, the embedded Redis, SQLite) with the whole pipeline replaying to V2 and
comparing while wrk runs; afterwards, how long the pipeline took to catch up.
`--only all-in-one` runs it with the nginx references.

shadow-nopub and shadow-1w run --repeat times (default 3), interleaved (off, on, off, on, ...),
and their medians are reported with the range: one 10 s run varies by 5-10% here, which is
as large as the publishing cost being measured.

Load: wrk (Debian's package; installed here when missing and running as root).
Prints a markdown table with req/s, p50 and p99 and the ratios the README quotes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shadow.cli.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.nginxctl import Nginx, free_port, wait_port  # noqa: E402

PAYLOAD = ('{"id": 12345, "name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", '
           '"tags": ["math", "engines", "poetry"], "address": {"street": "12 St James Square", '
           '"city": "London", "zip": "SW1Y 4JH", "country": "GB"}, "orders": [' +
           ", ".join(f'{{"id": {i}, "total": {i * 3.5:.2f}, "currency": "GBP", "state": "shipped"}}'
                     for i in range(8)) + '], "created_at": "1843-07-01T00:00:00Z"}\n')


def ensure_tools() -> None:
    missing = [t for t in ("wrk", "nginx") if shutil.which(t) is None and not
               os.path.exists(f"/usr/sbin/{t}")]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"benchmark needs {', '.join(missing)} (Debian: apt-get install wrk nginx-light)")
    pkgs = ["wrk" if t == "wrk" else "nginx-light" for t in missing]
    print(f"installing {' '.join(pkgs)} from Debian's packages ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, connections: int, duration_s: int, during: object = None,
        script: Path | None = None) -> dict[str, float]:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration_s}s", "--latency",
           *(["-s", str(script)] if script else []), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if callable(during):
        during()
    out, _ = proc.communicate()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    dist = out.split("Latency Distribution", 1)[1]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", dist, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", dist, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


def main() -> int:
    global PAYLOAD
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--connections", default="8,64", help="comma-separated (default 8,64)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved runs of shadow-nopub and shadow-1w; medians reported "
                         "(default 3)")
    ap.add_argument("--clean-payload", action="store_true",
                    help="the redaction pair on a payload with nothing to redact (no e-mail)")
    ap.add_argument("--only", choices=("all", "redaction", "all-in-one"), default="all",
                    help="redaction: only the redaction on/off pair; all-in-one: only shadow up "
                         "and the nginx references (default all)")
    args = ap.parse_args()
    if args.clean_payload:
        PAYLOAD = PAYLOAD.replace("ada@example.com", "ada at example")
    conns = [int(c) for c in args.connections.split(",")]
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    (work / "www").mkdir()
    (work / "www" / "user.json").write_text(PAYLOAD)
    key_file = work / "secret.key"
    subprocess.run([sys.executable, "-m", "shadow", "keygen", "-o", str(key_file)], cwd=REPO,
                   check=True)
    post_lua = work / "post.lua"
    post_lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                        f"wrk.body = [[{PAYLOAD.strip()}]]\n")
    ports = {name: free_port() for name in ("v1", "v2", "nginx_proxy", "nginx_mirror")}
    servers = f"""
    server {{ listen 127.0.0.1:{ports['v1']}; location / {{ root {work}/www; }}
             location = /user {{ default_type application/json; return 200 '{PAYLOAD.strip()}'; }} }}
    server {{ listen 127.0.0.1:{ports['v2']}; location / {{ root {work}/www; }} }}
    upstream v1 {{ server 127.0.0.1:{ports['v1']}; keepalive 128; }}
    upstream v2 {{ server 127.0.0.1:{ports['v2']}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{ports['nginx_proxy']};
        location / {{ proxy_pass http://v1; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{ports['nginx_mirror']};
        location / {{ mirror /mirror; proxy_pass http://v1; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
        location = /mirror {{ internal; proxy_pass http://v2$request_uri; proxy_http_version 1.1;
                             proxy_set_header Connection ""; }}
    }}
    """
    nginx = Nginx(work / "nginx", servers, worker_processes=2)
    nginx.start(*[ports[k] for k in ("v1", "v2", "nginx_proxy", "nginx_mirror")])
    redis = EmbeddedRedis(work / "redis", appendonly=False).start()
    results: dict[tuple[str, int], dict[str, float]] = {}
    spread: dict[tuple[str, int], list[float]] = {}
    shadow_bin = [sys.executable, "-m", "shadow", "proxy", "--v1",
                  f"http://127.0.0.1:{ports['v1']}", "--redis", redis.url,
                  "--stream-maxlen", "200000", "--log-level", "warning",
                  "--secret-key-file", str(key_file)]

    def report(name: str, c: int, r: dict[str, float]) -> None:
        print(f"{name:14} c={c:<3} {r['rps']:>9.0f} req/s  p50 {r['p50']:6.2f} ms  "
              f"p99 {r['p99']:6.2f} ms  errors {r['errors']:.0f}", flush=True)

    def run(name: str, port: int) -> None:
        url = f"http://127.0.0.1:{port}/user.json"
        wrk(url, 8, 2)  # warm-up
        for c in conns:
            results[(name, c)] = r = wrk(url, c, args.duration)
            report(name, c, r)

    def run_interleaved(targets: dict[str, int], path: str = "/user.json",
                        script: Path | None = None) -> None:
        """Each target --repeat times, alternating; the run with the median req/s is kept."""
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for port in targets.values():
            wrk(f"http://127.0.0.1:{port}{path}", 8, 2, script=script)  # warm-up
        for i in range(args.repeat):
            for c in conns:
                for name, port in targets.items():
                    r = wrk(f"http://127.0.0.1:{port}{path}", c, args.duration, script=script)
                    runs.setdefault((name, c), []).append(r)
                    report(f"{name} #{i + 1}", c, r)
        for key, rs in runs.items():
            rs.sort(key=lambda r: r["rps"])
            results[key] = rs[len(rs) // 2]
            spread[key] = [r["rps"] for r in rs]

    @contextlib.contextmanager
    def shadow(extra: list[str]) -> Iterator[int]:
        # chosen now, not at start: minutes of load later, a port picked early may have been
        # taken as the source port of some connection
        port = free_port()
        proc = subprocess.Popen([*shadow_bin, "--listen", f"127.0.0.1:{port}", *extra], cwd=REPO,
                                stdin=subprocess.DEVNULL)
        try:
            wait_port(port, 20, what="shadow's proxy")
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    def freeze_middle_third() -> None:
        def job() -> None:
            time.sleep(args.duration / 3)
            os.kill(redis.pid, signal.SIGSTOP)  # type: ignore[arg-type]
            time.sleep(args.duration / 3)
            os.kill(redis.pid, signal.SIGCONT)  # type: ignore[arg-type]
        threading.Thread(target=job, daemon=True).start()

    @contextlib.contextmanager
    def shadow_up() -> Iterator[tuple[int, int]]:
        port, api = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shadow", "up", "--v1", f"http://127.0.0.1:{ports['v1']}",
             "--v2", f"http://127.0.0.1:{ports['v2']}", "--listen", f"127.0.0.1:{port}",
             "--api", f"127.0.0.1:{api}", "--data-dir", str(work / "up"),
             "--store", f"sqlite:///{work / 'up' / 'shadow.db'}", "--log-level", "warning"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            wait_port(port, 60, what="shadow up's proxy")
            wait_port(api, 60, what="shadow up's reports API")
            yield port, api
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)

    def caught_up(api: int, timeout_s: float = 600) -> float:
        """Seconds until every request sent so far is compared (the pipeline caught up)."""
        import json
        import urllib.request
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            with urllib.request.urlopen(f"http://127.0.0.1:{api}/api/summary") as r:
                summary = json.load(r)
            if summary.get("total") and not summary.get("pending"):
                return time.monotonic() - started
            time.sleep(0.5)
        return float("nan")

    try:
        if args.only in ("all", "redaction"):
            with shadow([]) as on, shadow(["--redaction", "false"]) as off:
                run_interleaved({"shadow-noredact": off, "shadow-redact": on}, "/user", post_lua)
        if args.only == "redaction":
            return summarize(args, conns, results, spread)
        run("v1-direct", ports["v1"])
        run("nginx-proxy", ports["nginx_proxy"])
        run("nginx-mirror", ports["nginx_mirror"])
        with shadow_up() as (port, api):
            run("all-in-one", port)
            catch_up = caught_up(api)
            print(f"all-in-one: the pipeline caught up {catch_up:.0f} s after the load stopped",
                  flush=True)
        if args.only == "all-in-one":
            return summarize(args, conns, results, spread)
        with shadow(["--publish", "false"]) as off, shadow([]) as on:
            run_interleaved({"shadow-nopub": off, "shadow-1w": on})
        with shadow(["--workers", "2"]) as port:
            run("shadow-2w", port)
        with shadow([]) as port:
            url = f"http://127.0.0.1:{port}/user.json"
            wrk(url, 8, 2)
            for c in conns:
                r = wrk(url, c, args.duration, during=freeze_middle_third)
                results[("shadow-1w-redis-frozen", c)] = r
                report("shadow-1w-redis-frozen", c, r)
    finally:
        nginx.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    return summarize(args, conns, results, spread)


def summarize(args: argparse.Namespace, conns: list[int],
              results: dict[tuple[str, int], dict[str, float]],
              spread: dict[tuple[str, int], list[float]]) -> int:
    today = datetime.date.today().isoformat()
    print(f"\n### Proxy benchmark ({today}, {os.cpu_count()} cores, wrk -t2, "
          f"{args.duration} s per run, ~{len(PAYLOAD)} B JSON; shadow-nopub and shadow-1w: "
          f"median of {args.repeat} interleaved runs, req/s range in brackets)\n")
    print("| target | conns | req/s | p50 ms | p99 ms | errors | vs nginx-mirror |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (name, c), r in results.items():
        ref = results.get(("nginx-mirror", c))
        ratio = f"{r['rps'] / ref['rps']:.2f}×" if ref else "-"
        rng = f" [{min(spread[(name, c)]):.0f}–{max(spread[(name, c)]):.0f}]" \
            if (name, c) in spread else ""
        print(f"| {name} | {c} | {r['rps']:.0f}{rng} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['errors']:.0f} | {ratio} |")
    print()
    for c in conns:
        on, off = results.get(("shadow-1w", c)), results.get(("shadow-nopub", c))
        frozen = results.get(("shadow-1w-redis-frozen", c))
        mirror = results.get(("nginx-mirror", c))
        if on and off:
            print(f"- c={c}: publishing costs {100 * (1 - on['rps'] / off['rps']):.1f}% of "
                  f"throughput (target <= 15%)")
        allin = results.get(("all-in-one", c))
        if allin and mirror:
            print(f"- c={c}: all-in-one (shadow up, pipeline working) vs nginx-mirror: "
                  f"{allin['rps'] / mirror['rps']:.2f}× req/s (target >= 1.0 at 64), p99 "
                  f"{allin['p99'] - mirror['p99']:+.2f} ms (target <= +1 ms at 8)")
        two = results.get(("shadow-2w", c))
        if on and mirror and two:
            print(f"- c={c}: throughput vs nginx-mirror: shadow-1w {on['rps'] / mirror['rps']:.2f}, "
                  f"shadow-2w {two['rps'] / mirror['rps']:.2f} (target >= 0.50 at 64); "
                  f"p99 shadow-1w {on['p99'] - mirror['p99']:+.2f} ms vs nginx-mirror "
                  f"(target <= +1 ms at 8)")
        red, nored = results.get(("shadow-redact", c)), results.get(("shadow-noredact", c))
        if red and nored:
            print(f"- c={c}: redaction (default policy, ~1 KB JSON POST and answer) costs "
                  f"{100 * (1 - red['rps'] / nored['rps']):.1f}% of throughput (target <= 5%)")
        if on and frozen:
            print(f"- c={c}: Redis frozen mid-run: {frozen['errors']:.0f} errors, p99 "
                  f"{frozen['p99'] - on['p99']:+.2f} ms vs Redis up (target: 0 errors, <= +10 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
