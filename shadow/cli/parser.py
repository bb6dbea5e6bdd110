"""The `shadow` command line's arguments: every command, its flags and its help text.

Builds the parser only; `shadow.cli.entry` dispatches on `args.command`.
"""

from __future__ import annotations

import argparse

from shadow import __version__
from shadow.deploys import TARGETS
from shadow.model import CLASS_STATUSES, LIVE, OUTCOMES
from shadow.settings import env_only_names, options
from shadow.stats import (
    LATENCY_FLOOR_MS,
    MAX_LATENCY_RATIO,
    MAX_V2_ERROR_RATE,
    MIN_MATCH_PCT,
    MIN_SAMPLES,
    parse_rate,
)

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
    "demo-app": "Serve one of the demo's sample services alone: v1 (the old system) or v2 (the "
                "'rewrite' with deliberate differences), e.g. for docker-compose.yml. SIGTERM or "
                "Ctrl-C stops it.",
    "report": "Print the per-route summary from a running comparer's reports API.",
    "replay": "Re-verify stored traffic against today's V2: re-send stored requests (all, only "
              "mismatches, or by route, class or time), compare with the stored V1 answers, and "
              "report per mismatch class: fixed, still failing, or changed; plus new regressions. "
              "Reads the store directly (run it where the comparer's --store is reachable). "
              "The policy settings apply: only safe methods unless --allow-side-effects. "
              "With --stored nothing is sent: the stored V2 answers are compared again under "
              "--rules, a preview of what a rules change would hide.",
}


SECRET_VALUES = "secret_values"  # (name, value) given to each flag that can carry a credential


class _Secret(argparse.Action):
    """Stores a value like the default action, and notes it in `SECRET_VALUES`: `shadow`
    moves these values off its command line (entry.py), where `ps` would show them."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        seen = getattr(namespace, SECRET_VALUES, None) or []
        setattr(namespace, SECRET_VALUES, [*seen, (self.dest, str(values))])


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_window(parser: argparse.ArgumentParser) -> None:
    """--since/--until: the report's time window (shadow.windows), passed to the API."""
    parser.add_argument("--since", metavar="T",
                        help="only exchanges received from T: ISO 8601 UTC "
                             "(2026-12-02T11:00:00Z, or a date), a duration ago (15m, 24h, 7d) "
                             "or unix seconds; rounds down to the minute")
    parser.add_argument("--until", metavar="T",
                        help="only exchanges received before T (same forms as --since); rounds "
                             "up to the minute")


def _add_segment(parser: argparse.ArgumentParser) -> None:
    """--segment: one segment's figures (the comparer's --segment-by), passed to the API."""
    parser.add_argument("--segment", metavar="NAME",
                        help="only this segment (e.g. a tenant, as `shadow segments` lists "
                             "them; '(none)': the exchanges without one)")


def _add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    main_group = parser.add_argument_group("main options")
    tuning = parser.add_argument_group("tuning (also SHADOW_<NAME> or shadow.toml)")
    for option in options():
        group = main_group if command in option.main else tuning
        group.add_argument(option.flag, default=None, metavar=option.metavar, help=option.help,
                           nargs="?" if option.boolean else None,  # `--flag` alone: true
                           const="true" if option.boolean else None,
                           action=_Secret if option.secret else "store")
    for name in env_only_names():  # no such flag (`ps` would show it): entry.py says what to do
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"refused_{name}", nargs="?",
                            const="", default=None, help=argparse.SUPPRESS)
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
        _add_settings(p, name)
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
    rp.add_argument("--per-class", type=int, default=None, metavar="N",
                    help="at most N of each class's kept examples, newest first (matches: of "
                         "each route); default: every document kept (see --keep)")
    rp.add_argument("--json", action="store_true", help="print the report as JSON")
    rp.add_argument("--stored", action="store_true",
                    help="send nothing: compare the stored V2 answers again under --rules, to "
                         "see what a rules change would hide before deploying it (no --v2)")
    kg = sub.add_parser("keygen", help="make a new secret key",
                        description="Print a new secret key (32 random bytes, base64), or write "
                                    "it to a new file only you can read (mode 0600) with -o. "
                                    "The key seals the credentials the replay needs and keys "
                                    "the redaction tokens; the proxy and the subscriber need "
                                    "the same one: --secret-key-file FILE or "
                                    "SHADOW_SECRET_KEY. `shadow up` makes its own when none "
                                    "is given.")
    kg.add_argument("-o", "--output", metavar="FILE",
                    help="write the key to FILE (created with mode 0600; an existing file is "
                         "never overwritten) instead of printing it")
    demo = sub.choices["demo"]
    demo.add_argument("--requests", type=int, default=3000, help="requests to send (default 3000)")
    demo.add_argument("--concurrency", type=int, default=16, help="parallel clients (default 16)")
    demo.add_argument("--exit", action="store_true",
                      help="stop after printing the report (default: keep serving the API)")
    app = sub.add_parser("demo-app", help="serve one demo sample service (v1 or v2) alone",
                         description=DESCRIPTIONS["demo-app"])
    app.add_argument("version", choices=("v1", "v2"), help="which sample service")
    app.add_argument("--listen", dest="app_listen", default="127.0.0.1:8000", metavar="HOST:PORT",
                     help="where it listens (default 127.0.0.1:8000)")
    app.add_argument("--config", default=None, metavar="FILE", help="TOML settings file")
    report = sub.add_parser("report", help="per-route summary from the reports API",
                            description=DESCRIPTIONS["report"])
    report.add_argument("--api", dest="api_url", default=None, metavar="URL",
                        help="reports API URL (default http://<api setting>, 127.0.0.1:8081)")
    report.add_argument("--json", action="store_true", help="print the /api/summary JSON")
    _add_window(report)
    _add_segment(report)
    report.add_argument("--config", default=None, metavar="FILE", help="TOML settings file")

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
    _add_window(mm)
    mm.add_argument("--signature", help="only this mismatch class")
    mm.add_argument("--path", help="only exchanges with a differing path containing this text")
    mm.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    show = reader("show", "one exchange, V1 and V2 side by side",
                  "Show one exchange (by exchange id or X-Request-Id): the request, V1's and "
                  "V2's answers side by side with the differing fields highlighted.")
    show.add_argument("id", help="exchange id or request id")
    cl = reader("classes", "mismatch classes: one line per bug",
                "List mismatch classes (exchanges grouped by route and shape of difference); "
                "with --since/--until, the ones seen in that window, counted there; with "
                "--segment, the ones seen in that segment, counted there.")
    _add_window(cl)
    _add_segment(cl)
    sg = reader("segments", "segments (--segment-by) with their counts",
                "List the segments the comparer counts apart (--segment-by, e.g. tenants), most "
                "counted first, with their counts and match rates; (none): exchanges without a "
                "segment value; (other): the values past --max-segments. Then `shadow verdict "
                "--segment NAME` judges one of them.")
    _add_window(sg)
    mark = reader("mark", "set a mismatch class's status",
                  "Triage a mismatch class: new, known, accepted (a deliberate change; it no "
                  "longer counts against the verdict), bug (with --ticket), fixed (reopens by "
                  "itself if it mismatches again after the deploy of its fix: the latest V2 "
                  "deploy marker, or --in-deploy VERSION's).")
    mark.add_argument("signature")
    mark.add_argument("status", choices=CLASS_STATUSES)
    mark.add_argument("--ticket", help="a link to the bug ticket")
    mark.add_argument("--note", help="free text")
    mark.add_argument("--in-deploy", metavar="VERSION",
                      help="with fixed: the V2 version that brings the fix (marked or not yet): "
                           "mismatches received before it goes live do not reopen the class "
                           "(default: the latest V2 deploy marker)")
    rl = reader("rules", "the comparison rules in force, and what each one hid",
                "List the rules of the comparer's --rules file with their reason, owner, expiry "
                "and in how many exchanges each one has hidden a difference, so suppressions stay "
                "visible and reviewed.")
    rl.add_argument("action", nargs="?", choices=("list", "suggest"), default="list",
                    help="list (default): the rules in force; suggest: print proposed rules as "
                         "TOML, from noise evidence and UUID/timestamp detectors (never applied)")
    vd = reader("verdict", "can we cut over? exit 0 = ready, 1 = not ready",
                "Ready only when every route seen has at least --min-samples clean samples, "
                "the lower bound of the 95% Wilson interval of its match rate is at least "
                "--min-match (V2 errors and compare errors count as failures, classes marked "
                "accepted as matches), its V2 error rate is at most --max-v2-error-rate, and "
                "V2's p99 latency is at most --max-latency-ratio times V1's. Prints the "
                "routes that hold the cutover back and why.")
    vd.add_argument("--min-match", type=float, default=MIN_MATCH_PCT, metavar="PCT",
                    help=f"required match rate, percent (default {MIN_MATCH_PCT:g})")
    vd.add_argument("--min-samples", type=int, default=MIN_SAMPLES, metavar="N",
                    help="clean samples (matches and accepted classes) required per route "
                         f"(default {MIN_SAMPLES})")
    vd.add_argument("--max-v2-error-rate", type=_rate, default=MAX_V2_ERROR_RATE,
                    metavar="RATE",
                    help="most V2 errors (timeouts, connections dropped, ...) per V2 error or "
                         "clean sample, as a fraction or a percentage: 0.001 or 0.1%% "
                         f"(default {MAX_V2_ERROR_RATE:g})")
    vd.add_argument("--max-latency-ratio", type=float, default=MAX_LATENCY_RATIO, metavar="X",
                    help="most V2 p99 latency as a multiple of V1's p99 "
                         f"(default {MAX_LATENCY_RATIO:g})")
    vd.add_argument("--latency-floor-ms", type=float, default=LATENCY_FLOOR_MS, metavar="MS",
                    help="the latency gate is ignored while V2's p99 is under this "
                         f"(default {LATENCY_FLOOR_MS:g})")
    vd.add_argument("--markdown", action="store_true",
                    help="print a Markdown report per route (samples, match rate and its "
                         "bound, errors, latency, open classes, window), to paste in a ticket")
    vd.add_argument("--exclude", action="append", default=[], metavar="ROUTE",
                    help="leave a route out ('/health' or 'GET /health'); repeatable")
    _add_window(vd)
    vd.add_argument("--all-time", action="store_true",
                    help="judge all the evidence; by default the verdict starts at the latest V2 "
                         "deploy marker (`shadow deploy mark v2`), and --since/--until override it")
    _add_segment(vd)
    dp = reader("deploy", "mark a V2 release: the verdict's window starts there",
                "Mark a deploy: `shadow deploy mark v2 --version 2.4.1` records that this V2 "
                "release went live now (or --at T). The verdict's default window starts at the "
                "latest V2 deploy, so a bug fixed in it stops counting once the fix is live "
                "(`shadow verdict --all-time` still shows everything). `shadow deploy list` "
                "shows the markers.", json_help="print JSON")
    dp.add_argument("action", choices=("mark", "list"))
    dp.add_argument("target", nargs="?", choices=TARGETS, default=None,
                    help="which service was deployed (mark: default v2; list: default all)")
    dp.add_argument("--version", dest="deploy_version", default=None, metavar="X",
                    help="the release's version, e.g. a tag or a commit")
    dp.add_argument("--note", default=None, help="free text, e.g. what the release fixes")
    dp.add_argument("--at", default=None, metavar="T",
                    help="when it went live, if not now: a time or a duration ago, as --since "
                         "takes them")
    ex = sub.add_parser(
        "export", help="stored exchanges as a HAR file or JSON lines",
        description="Write the stored exchanges (those the keep policy kept; all with --keep "
                    "all) as a HAR 1.2 file, for browser devtools, load generators and mocking "
                    "tools (V1's answer as each entry's response, V2's in `_v2`, the "
                    "differences in `_shadow`), or as JSON lines (one exchange per line, both "
                    "answers). Filters as `shadow mismatches`, every outcome unless --outcome. "
                    "Streamed: any number of exchanges in constant memory. Secrets are exported "
                    "as stored: redacted.")
    ex.add_argument("--format", choices=("har", "jsonl"), default=None,
                    help="har (default; jsonl when -o ends in .jsonl or .ndjson) or jsonl")
    ex.add_argument("-o", "--output", metavar="FILE",
                    help="write to FILE, replaced only once the export is complete (default: "
                         "standard output)")
    ex.add_argument("--outcome", choices=OUTCOMES, help="only this outcome (default: every one)")
    ex.add_argument("--route", help="only this route template, e.g. /users/{id}")
    ex.add_argument("--method", help="only this HTTP method")
    ex.add_argument("--signature", help="only this mismatch class")
    ex.add_argument("--path", help="only exchanges with a differing path containing this text")
    ex.add_argument("--url", help="only exchanges whose URL (path and query) contains this text")
    _add_window(ex)
    ex.add_argument("--limit", type=int, default=None, metavar="N",
                    help="at most N exchanges, newest first (default: every one)")
    ex.add_argument("--api", dest="api_url", default=None, metavar="URL",
                    help="reports API URL (default http://<api setting>, 127.0.0.1:8081)")
    ex.add_argument("--config", default=None, metavar="FILE", help="TOML settings file")
    tl = reader("tail", "the live firehose: one line per compared exchange",
                "Follow the comparisons as they happen (redacted: secrets named by "
                "--redact-headers / --redact-fields on the comparer are masked). One line per "
                "exchange: time, outcome, method, URL, V1 and V2 status and latency, and the "
                "first difference. Ctrl-C to stop.",
                json_help="print each item as one line of JSON (for scripts)")
    tl.add_argument("--outcome", help="only these outcomes, comma-separated "
                                      f"({', '.join(LIVE)})")
    tl.add_argument("--route", help="only routes matching this glob, e.g. '/users/*'")
    tl.add_argument("--method", help="only this HTTP method")
    tl.add_argument("--count", type=int, default=None, metavar="N",
                    help="stop after N exchanges (default: follow until Ctrl-C)")
    return parser

