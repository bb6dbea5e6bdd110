"""Render the /api/summary object for people (rich on a terminal, plain text otherwise)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def describe_diffs(top: list[dict[str, Any]], limit: int = 3) -> str:
    return "\n".join(f"{d['path']} {d['kind']} ×{d['count']}" for d in top[:limit]) or "-"


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="shadow: V1 vs V2 per route", title_justify="left")
    for name, justify in (("route", "left"), ("requests", "right"), ("compared", "right"),
                          ("match", "right"), ("mismatched", "right"), ("skipped/errors", "right"),
                          ("p50 ms v1/v2", "right"), ("top differing fields", "left"),
                          ("noise (V1 vs itself)", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in summary.get("routes", []):
        rate = r.get("match_rate")
        color = "green" if rate == 1 else ("red" if rate is not None and rate < 0.99 else "yellow")
        v1, v2 = r.get("v1_latency_ms") or {}, r.get("v2_latency_ms") or {}
        lat = f"{_num(v1.get('p50'))}/{_num(v2.get('p50'))}"
        table.add_row(f"{r['method']} {r['route']}", str(r["total"]), str(r["compared"]),
                      f"[{color}]{_pct(rate)}[/]" if rate is not None else "-",
                      str(r["mismatched"]), f"{r.get('skipped', 0)}/{r.get('v2_errors', 0)}",
                      lat, describe_diffs(r.get("top_diffs", [])),
                      "\n".join(f"{n['path']} {n['rate'] * 100:.0f}%" for n in r.get("noise", [])[:3]
                                if n.get("rate") is not None) or "-")
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def totals_line(summary: dict[str, Any]) -> str:
    dropped = summary.get("dropped_events")
    return (f"{summary['total']} exchanges: {summary['compared']} compared, "
            f"{summary['matched']} matched ({_pct(summary.get('match_rate'))}), "
            f"{summary['mismatched']} mismatched, {summary['skipped']} skipped, "
            f"{summary['v2_errors']} V2 errors, {summary['pending']} pending, "
            f"{summary.get('v1_only', 0)} without V2 answer; "
            f"{'unknown' if dropped is None else dropped} events dropped by the proxy"
            + _behind(summary.get("streams")))


def behind(streams: dict[str, Any] | None) -> tuple[float, float] | None:
    """(replay, compare): seconds each stage trails the traffic; None when unknown."""
    if not streams:
        return None
    groups = [(s.get("groups") or {}) for s in streams.values()]
    replay = (streams.get("v1") or {}).get("groups", {}).get("replayers", {}).get("behind_s", 0.0)
    compare = max((g.get("comparers", {}).get("behind_s", 0.0) for g in groups), default=0.0)
    return float(replay), float(compare)


def _behind(streams: dict[str, Any] | None) -> str:
    b = behind(streams)
    return "" if b is None else f"; replay {b[0]:.1f} s behind, compare {b[1]:.1f} s behind"


def make_console() -> Console:
    """Rich on a terminal; wide plain lines when piped, so tables stay readable in logs."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or make_console()
    console.print(summary_table(summary))
    console.print(totals_line(summary))
    for w in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def mismatches_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title="mismatches (newest first)", title_justify="left")
    for name in ("id", "time (UTC)", "request", "v1→v2", "class", "differences"):
        table.add_column(name, overflow="fold")
    for x in items:
        diffs = ", ".join(f"{d['path']} {d['kind']}" for d in x["diff"][:3])
        more = len(x["diff"]) - 3
        table.add_row(x["id"], _when(x.get("ts")), f"{x.get('method')} {x.get('url')}",
                      f"{x.get('v1_status')}→{x.get('v2_status')}", x.get("signature") or "-",
                      diffs + (f" (+{more})" if more > 0 else ""))
    return table


def classes_table(classes: list[dict[str, Any]]) -> Table:
    table = Table(title="mismatch classes (one line per bug)", title_justify="left")
    for name in ("signature", "route", "count", "status", "differences", "examples"):
        table.add_column(name, overflow="fold")
    colors = {"new": "red", "bug": "red", "known": "yellow", "accepted": "green", "fixed": "green"}
    for c in classes:
        status = c["status"] + (" (reopened)" if c.get("reopened") else "")
        if c.get("ticket"):
            status += f" {c['ticket']}"
        table.add_row(c["signature"], f"{c['method']} {c['route']}", str(c["count"]),
                      f"[{colors.get(c['status'], 'white')}]{status}[/]",
                      "\n".join(f"{p['path']} {p['kind']}" for p in c["paths"][:5]),
                      "\n".join(c["examples"][:2]))
    return table


def verdict_lines(v: dict[str, Any]) -> list[str]:
    lines = []
    for r in v["routes"]:
        mark = "[green]ready[/]    " if r["ready"] else "[red]not ready[/]"
        lines.append(f"{mark} {r['method']} {r['route']}: {r['reason']}")
    head = ("[bold green]READY for cutover[/]" if v["ready"] else
            "[bold red]NOT ready for cutover[/]")
    if not v["routes"]:
        head += ": no traffic compared yet"
    return [*lines, head + f" (min match {v['min_match'] * 100:g}% at 95% confidence, "
                           f"min samples {v['min_samples']})"]


def _pretty_body(part: dict[str, Any] | None) -> str:
    if part is None:
        return "(none)"
    body = part.get("body") or {}
    text = body.get("text")
    if text is None:
        return f"(binary, {part.get('body_size')} bytes, base64 {str(body.get('base64'))[:60]}...)"
    try:
        import orjson

        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except ValueError:
        return text


def show_exchange(x: dict[str, Any], console: Console) -> None:
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.text import Text

    console.print(f"[bold]{x['method']} {x['url']}[/]  id {x['id']}  request id "
                  f"{x['request_id']}  route {x['route']}  at {_when(x.get('ts'))} UTC")
    outcome_color = {"match": "green", "mismatch": "red"}.get(x["outcome"], "yellow")
    console.print(f"outcome [{outcome_color}]{x['outcome']}[/]"
                  + (f"  class {x['signature']}" if x.get("signature") else "")
                  + (f"  flags {', '.join(x['flags'])}" if x.get("flags") else ""))
    differing = {d["path"].split(".")[-1].split("[")[0] for d in x["diff"]}

    def panel(title: str, part: dict[str, Any] | None) -> Panel:
        if part is None:
            return Panel("(no answer)", title=title)
        head = f"status {part.get('status')}" + (f"  error: {part['error']}" if part.get("error") else "")
        head += f"  skipped: {part['skipped']}" if part.get("skipped") else ""
        head += f"  {part.get('latency_ms') or 0:.1f} ms"
        text = Text(head + "\n")
        for k, v, *_ in part.get("headers", []):  # [name, value(, exact bytes in base64)]
            text.append(f"{k}: {v}\n", style="yellow" if k.lower() in differing else "dim")
        text.append("\n")
        for line in _pretty_body(part).splitlines():
            key = line.strip().split(":")[0].strip('"')
            text.append(line + "\n", style="bold red" if key in differing else "")
        return Panel(text, title=title)

    console.print(Columns([panel("V1", x.get("v1")), panel("V2", x.get("v2"))], equal=True,
                          expand=True))
    if x.get("noise"):
        console.print("noise (V1 disagrees with itself here, so these are not mismatches): "
                      + ", ".join(f"{d['path']}" for d in x["noise"]))
    if x["diff"]:
        table = Table(title="differences")
        for name in ("path", "kind", "v1", "v2"):
            table.add_column(name, overflow="fold")
        import orjson

        for d in x["diff"]:
            table.add_row(d["path"], d["kind"], orjson.dumps(d["v1"]).decode()[:200],
                          orjson.dumps(d["v2"]).decode()[:200])
        console.print(table)


def rules_table(data: dict[str, Any]) -> Table:
    title = f"rules from {data['source']}" if data.get("source") else "no rules file (--rules)"
    table = Table(title=title, title_justify="left")
    for name in ("rule", "line", "applies to", "suppressed", "reason", "owner", "expires"):
        table.add_column(name, overflow="fold")
    for r in data["rules"]:
        expires = r["expires"] or "-"
        if r["expired"]:
            expires = f"[red]{expires} (expired: not applied)[/]"
        table.add_row(r["id"], str(r["line"]), f"{r['method'] or '*'} {r['route']}",
                      str(r["suppressed"]), r["reason"] or "[yellow](no reason given)[/]",
                      r["owner"] or "-", expires)
    return table


def print_verification(report: dict[str, Any], console: Console, *, stored: bool = False) -> None:
    title = (f"rules preview: {report['replayed']} stored exchanges compared again (fixed = "
             "no longer a mismatch under these rules)" if stored else
             f"verification run: {report['replayed']} stored requests re-sent")
    table = Table(title=title, title_justify="left")
    for name in ("class", "route", "replayed", "fixed", "still failing", "changed", "verdict"):
        table.add_column(name, overflow="fold")
    colors = {"fixed": "green", "still failing": "red", "changed": "yellow", "errors": "yellow"}
    for c in report["classes"]:
        table.add_row(c["signature"], f"{c['method']} {c['route']}", str(c["replayed"]),
                      str(c["fixed"]), str(c["still_failing"]), str(c["changed"]),
                      f"[{colors[c['verdict']]}]{c['verdict']}[/]")
    console.print(table)
    for r in report["new_regressions"]:
        console.print(f"[red]new regression[/] {r['method']} {r['route']}: {r['count']} "
                      f"exchanges that matched now differ at {', '.join(r['paths'])} "
                      f"(class {r['signature']}, e.g. {r['examples'][0]})")
    if not report["new_regressions"]:
        console.print("no new regressions among the "
                      + ("exchanges compared again" if stored else "re-sent exchanges"))
