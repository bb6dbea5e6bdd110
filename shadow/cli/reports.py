"""The reports-API client: one way to reach a running comparer (fetch_json, the SSE firehose)
and the commands that read it: report, mismatches, show, tail, classes, mark, rules, verdict,
segments."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from shadow import firehose
from shadow.cli.views import (
    classes_table,
    make_console,
    mismatches_table,
    print_json,
    print_summary,
    rules_table,
    segments_table,
    show_exchange,
    verdict_lines,
    verdict_markdown,
)
from shadow.deploys import describe
from shadow.errors import ShadowError
from shadow.safetext import visible
from shadow.settings import Settings


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


def _window_query(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The report window (--since/--until) as query parameters: the API parses them."""
    return [(name, value) for name in ("since", "until")
            if (value := getattr(args, name, None)) is not None]


def _with_window(url: str, args: argparse.Namespace, query: list[tuple[str, str]] | None = None,
                 ) -> str:
    """`url` with `query`, the report window and the segment (--segment) as parameters."""
    params = [*(query or []), *_window_query(args)]
    if getattr(args, "segment", None) is not None:
        params.append(("segment", args.segment))
    return f"{url}?{urllib.parse.urlencode(params)}" if params else url


def window_line(window: dict[str, Any] | None) -> str | None:
    """What a windowed report covers, for people (None: all time)."""
    if not window or (window.get("since") is None and window.get("until") is None):
        return None
    return (f"window: {window.get('since') or 'the beginning'} to {window.get('until') or 'now'} "
            "(exchanges by arrival time; since rounds down and until rounds up to the minute)")


def _print_window(data: dict[str, Any]) -> None:
    line = window_line(data.get("window"))
    if line:
        print(visible(line))
    if data.get("segment") is not None:
        print(visible(f"segment: {data['segment']} (its counts and classes; latency is the "
                      "route's over every segment)"))


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    summary = fetch_json(_with_window(_api_url(args, settings) + "/api/summary", args),
                         settings.api_token)
    if args.json:
        print_json(summary)
    else:
        _print_window(summary)
        print_summary(summary)
    return 0


def cmd_mismatches(args: argparse.Namespace, settings: Settings) -> int:
    query = {k: str(v) for k, v in (("route", args.route), ("method", args.method),
                                     ("since", args.since), ("until", args.until),
                                     ("signature", args.signature), ("path", args.path),
                                     ("limit", args.limit)) if v is not None}
    url = f"{_api_url(args, settings)}/api/mismatches?{urllib.parse.urlencode(query)}"
    data = fetch_json(url, settings.api_token)
    if args.json:
        print_json(data)
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
        print_json(data)
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
    data = fetch_json(_with_window(f"{_api_url(args, settings)}/api/classes", args),
                      settings.api_token)
    if args.json:
        print_json(data)
    else:
        _print_window(data)
        make_console().print(classes_table(data["classes"]))
    return 0


def cmd_mark(args: argparse.Namespace, settings: Settings) -> int:
    if args.in_deploy is not None and args.status != "fixed":
        raise ShadowError("shadow mark: --in-deploy goes with the status fixed")
    body = {"status": args.status, "ticket": args.ticket, "note": args.note}
    if args.in_deploy is not None:
        body["in_deploy"] = args.in_deploy
    data = fetch_json(f"{_api_url(args, settings)}/api/classes/{args.signature}",
                      settings.api_token, body=body)
    if args.json:
        print_json(data)
    else:
        print(visible(f"class {data['signature']} ({data['method']} {data['route']}): "
                      f"{data['status']}" + (f" {data['ticket']}" if data.get("ticket") else "")
                      + fix_text(data.get("fixed_in"))))
    return 0


def fix_text(fixed: dict[str, Any] | None) -> str:
    """For people: the deploy a class marked fixed expects its fix in ('' without one)."""
    if not fixed:
        return ""
    name = f"V2 {fixed['version']}" if fixed.get("version") else "the V2 deploy"
    if fixed.get("ts") is None:
        return f"; expected in {name} (not deployed yet: its mismatches until then are expected)"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fixed["ts"]))
    return f"; expected in {name} (live since {at}: a mismatch received after it reopens it)"


def cmd_segments(args: argparse.Namespace, settings: Settings) -> int:
    data = fetch_json(_with_window(f"{_api_url(args, settings)}/api/segments", args),
                      settings.api_token)
    if args.json:
        print_json(data)
        return 0
    _print_window(data)
    if not data.get("segment_by"):
        print("the comparer has no --segment-by: every exchange is in the segment (none)")
    make_console().print(segments_table(data))
    return 0


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "suggest":
        found = fetch_json(f"{_api_url(args, settings)}/api/suggestions", settings.api_token)
        if args.json:
            print_json(found)
        elif found["toml"]:
            sys.stdout.write("# Suggested by shadow. Review each one, then add the ones you agree "
                             "with to your --rules file.\n\n"
                             + visible(found["toml"], multiline=True))
        else:
            print("no suggestions: no noisy paths or UUID/timestamp differences found yet")
        return 0
    data = fetch_json(f"{_api_url(args, settings)}/api/rules", settings.api_token)
    if args.json:
        print_json(data)
    else:
        make_console().print(rules_table(data))
    return 0


def cmd_verdict(args: argparse.Namespace, settings: Settings) -> int:
    if args.json and args.markdown:
        raise ShadowError("shadow verdict: --json or --markdown, not both")
    query = [("min_match", str(args.min_match)), ("min_samples", str(args.min_samples)),
             ("max_v2_error_rate", repr(args.max_v2_error_rate)),
             ("max_latency_ratio", repr(args.max_latency_ratio)),
             ("latency_floor_ms", repr(args.latency_floor_ms)),
             *(("exclude", r) for r in args.exclude)]
    if args.all_time:
        query.append(("all_time", "true"))
    data = fetch_json(_with_window(f"{_api_url(args, settings)}/api/verdict", args, query),
                      settings.api_token)
    if args.markdown:
        sys.stdout.write(verdict_markdown(data))
    elif args.json:
        print_json({"ready": data["ready"],
                     "routes": [{k: r[k] for k in ("method", "route", "ready", "reason")}
                                for r in data["routes"]],
                     "window": data.get("window"),
                     **({"segment": data["segment"]} if "segment" in data else {})})
    else:
        _print_window(data)
        since = (data.get("window") or {}).get("from_deploy")
        if since:
            print(visible(f"from the latest deploy: {describe(since)} (--all-time: everything)"))
        console = make_console()
        for line in verdict_lines(data):
            console.print(line)
    return 0 if data["ready"] else 1


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    url = f"{_api_url(args, settings)}/api/deploys"
    if args.action == "list":
        query = {"target": args.target} if args.target else {}
        data = fetch_json(f"{url}?{urllib.parse.urlencode(query)}" if query else url,
                          settings.api_token)
        if args.json:
            print_json(data)
        else:
            for d in data["deploys"]:
                print(visible(describe(d)))
            if not data["deploys"]:
                print("no deploys marked yet: `shadow deploy mark v2 --version X` marks one")
        return 0
    body = {"target": args.target or "v2", "version": args.deploy_version, "note": args.note,
            "at": args.at}
    marked = fetch_json(url, settings.api_token, body={k: v for k, v in body.items()
                                                       if v is not None})
    if args.json:
        print_json(marked)
    else:
        print(visible(f"marked: {describe(marked)}; the verdict's default window starts at "
                      "the first whole minute after it"))
    return 0
