"""Terminal views of the reports API's answers (rich on a terminal, plain text otherwise),
JSON for scripts, and the progress bar of the long-running commands.

Every string that comes from traffic (paths, routes, headers, bodies, diff paths and values,
class paths, reasons) goes into a `rich.text.Text` through `_t()`: never parsed as Rich markup,
its control characters shown as escapes (shadow.safetext.visible). Markup strings here are
only ever this module's own constants.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console, JustifyMethod
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from shadow.deploys import describe
from shadow.model import CLASS_ACCEPTED, CLASS_BUG, CLASS_FIXED, CLASS_KNOWN, CLASS_NEW
from shadow.safetext import visible


def _t(*parts: Any, style: str = "") -> Text:
    """Plain text from traffic-derived parts (each made visible; never parsed as markup). A
    part may be a (value, style) pair."""
    text = Text(style=style)
    for part in parts:
        value, part_style = part if isinstance(part, tuple) else (part, "")
        text.append(visible(value), style=part_style)
    return text


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def describe_diffs(top: list[dict[str, Any]], limit: int = 3) -> Text:
    return Text("\n").join(_t(f"{d['path']} {d['kind']} ×{d['count']}") for d in top[:limit]) \
        or Text("-")


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="shadow: V1 vs V2 per route", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("route", "left"), ("requests", "right"), ("compared", "right"), ("match", "right"),
        ("mismatched", "right"), ("skipped/errors", "right"), ("p50 ms v1/v2", "right"),
        ("top differing fields", "left"), ("noise (V1 vs itself)", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for r in summary.get("routes", []):
        rate = r.get("match_rate")
        color = "green" if rate == 1 else ("red" if rate is not None and rate < 0.99 else "yellow")
        v1, v2 = r.get("v1_latency_ms") or {}, r.get("v2_latency_ms") or {}
        lat = f"{_num(v1.get('p50'))}/{_num(v2.get('p50'))}"
        noise = Text("\n").join(_t(f"{n['path']} {n['rate'] * 100:.0f}%")
                                for n in r.get("noise", [])[:3] if n.get("rate") is not None)
        table.add_row(_t(f"{r['method']} {r['route']}"), _t(r["total"]), _t(r["compared"]),
                      Text(_pct(rate), style=color) if rate is not None else "-",
                      _t(r["mismatched"]), _t(f"{r.get('skipped', 0)}/{r.get('v2_errors', 0)}"),
                      lat, describe_diffs(r.get("top_diffs", [])), noise or Text("-"))
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def totals_line(summary: dict[str, Any]) -> str:  # figures only; print it as _t(...)
    dropped = summary.get("dropped_events")
    return (f"{summary['total']} exchanges: {summary['compared']} compared, "
            f"{summary['matched']} matched ({_pct(summary.get('match_rate'))}), "
            f"{summary['mismatched']} mismatched, "
            + (f"{summary['compare_errors']} compare errors, "
               if summary.get("compare_errors") else "")
            + f"{summary['skipped']} skipped, "
            f"{summary['v2_errors']} V2 errors, {summary['pending']} pending, "
            f"{summary.get('v1_only', 0)} without V2 answer"
            + (f", {summary['v1_missing']} without V1 answer" if summary.get("v1_missing") else "")
            + (f"; {summary['kept']} kept as documents (the evidence; every exchange is counted)"
               if summary.get("kept") is not None else "")
            + f"; {'unknown' if dropped is None else dropped} events dropped by the proxy"
            + _behind(summary.get("streams"))
            + (f"; {summary['routes_overflowed']} exchanges counted as route (other): "
               "--max-routes reached" if summary.get("routes_overflowed") else ""))


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


def print_json(data: Any) -> None:
    """JSON for scripts, equal to the API's, with no raw control or bidi character left for a
    terminal to act on (each becomes its \\uXXXX escape, which JSON reads back the same)."""
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    sys.stdout.write(visible(text, multiline=True) + "\n")


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or make_console()
    console.print(summary_table(summary))
    console.print(_t(totals_line(summary)))
    for w in summary.get("warnings", []):
        console.print(_t(("warning:", "yellow"), " ", w))


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
        table.add_row(_t(x["id"]), _when(x.get("ts")), _t(f"{x.get('method')} {x.get('url')}"),
                      _t(f"{x.get('v1_status')}→{x.get('v2_status')}"),
                      _t(x.get("signature") or "-"),
                      _t(diffs + (f" (+{more})" if more > 0 else "")))
    return table


def classes_table(classes: list[dict[str, Any]]) -> Table:
    table = Table(title="mismatch classes (one line per bug)", title_justify="left")
    for name in ("signature", "route", "count", "status", "differences", "examples"):
        table.add_column(name, overflow="fold")
    colors = {CLASS_NEW: "red", CLASS_BUG: "red", CLASS_KNOWN: "yellow", CLASS_ACCEPTED: "green",
              CLASS_FIXED: "green"}
    for c in classes:
        after = c.get("reopened_after") or {}
        status = c["status"] + ((f" (reopened after V2 {after['version']})" if after.get("version")
                                 else " (reopened)") if c.get("reopened") else "")
        if (c.get("fixed_in") or {}).get("version"):
            status += f" in V2 {c['fixed_in']['version']}"
        if c.get("ticket"):
            status += f" {c['ticket']}"
        table.add_row(_t(c["signature"]), _t(f"{c['method']} {c['route']}"), _t(c["count"]),
                      _t(status, style=colors.get(c["status"], "white")),
                      Text("\n").join(_t(f"{p['path']} {p['kind']}") for p in c["paths"][:5]),
                      Text("\n").join(_t(e) for e in c["examples"][:2]))
    return table


def segments_table(data: dict[str, Any]) -> Table:
    """/api/segments: one line per segment, most counted first."""
    title = f"segments ({data['segment_by']})" if data.get("segment_by") else "segments"
    table = Table(title=title, title_justify="left")
    for name in ("segment", "total", "compared", "match rate", "mismatched", "V2 errors",
                 "routes"):
        table.add_column(name, overflow="fold", justify="left" if name == "segment" else "right")
    for x in data["segments"]:
        table.add_row(_t(x["segment"]), _t(x["total"]), _t(x["compared"]),
                      _t(_pct(x.get("match_rate"))), _t(x["mismatched"]), _t(x["v2_errors"]),
                      _t(x["routes"]))
    return table


def verdict_lines(v: dict[str, Any]) -> list[Text]:
    lines = []
    for r in v["routes"]:
        mark = ("ready    ", "green") if r["ready"] else ("not ready", "red")
        lines.append(_t(mark, f" {r['method']} {r['route']}: {r['reason']}"))
    head = (("READY for cutover", "bold green") if v["ready"] else
            ("NOT ready for cutover", "bold red"))
    return [*lines, _t(head, ": no traffic compared yet" if not v["routes"] else "",
                       f" ({gates_text(v)})")]


def gates_text(v: dict[str, Any]) -> str:
    """The verdict's gates, for people."""
    text = (f"min match {v['min_match'] * 100:g}% at 95% confidence, "
            f"min samples {v['min_samples']}")
    if v.get("max_v2_error_rate") is not None:
        text += f", max V2 errors {v['max_v2_error_rate'] * 100:g}%"
    if v.get("max_latency_ratio") is not None:
        text += (f", V2 p99 latency at most {v['max_latency_ratio']:g}× V1's "
                 f"(from {v.get('latency_floor_ms', 0):g} ms)")
    return text


# Markdown: traffic-derived text (routes, signatures, tickets, reasons) has its control
# characters escaped (visible) and every character Markdown or a table could act on escaped
_MD = str.maketrans({c: f"\\{c}" for c in "\\`*_[]<|~#&{}!"})


def _md(value: object) -> str:
    return visible(value).translate(_MD)


def _md_ticket(ticket: str) -> str:
    plain = visible(ticket)
    if plain.startswith(("https://", "http://")) and not any(c in plain for c in " <>|\\`"):
        return f"<{plain}>"  # an autolink: clickable where the ticket is pasted
    return _md(ticket)


def _md_ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def verdict_markdown(v: dict[str, Any]) -> str:
    """The verdict as Markdown a lead can paste into a ticket: per route, samples, match
    rate and its 95% Wilson lower bound, errors, V2/V1 latency, open classes (status,
    ticket), and the window the figures cover."""
    w = v.get("window") or {}
    since, until = w.get("since"), w.get("until")
    covered = "all time" if since is None and until is None else \
        f"{since or 'the beginning'} to {until or 'now'} (UTC, by arrival, to the minute)"
    verdict = "READY" if v["ready"] else "NOT ready"
    segment = f" (segment {_md(v['segment'])})" if v.get("segment") is not None else ""
    out = [f"## shadow verdict: {verdict} for cutover{segment}", "",
           f"Window: {_md(covered)}" + (f", from the latest deploy: {_md(describe(w['from_deploy']))}"
                                         if w.get("from_deploy") else ""),
           "", f"Gates: {_md(gates_text(v))}.", ""]
    if not v["routes"]:
        out.append("No traffic compared in this window.")
        return "\n".join(out) + "\n"
    out += ["| Route | Ready | Samples | Match rate (95% lower bound) | V2 errors "
            "| Compare errors | Latency p99 V2/V1 | Open classes |",
            "|---|---|--:|---|---|--:|---|--:|"]
    for r in v["routes"]:
        rate = r.get("match_rate")
        match = "-" if rate is None else \
            f"{rate * 100:.3f}% (≥ {r['match_rate_lower_bound'] * 100:.3f}%)"
        errors = str(r.get("v2_errors", 0))
        if r.get("v2_errors"):
            errors += f" ({r['v2_error_rate'] * 100:.3g}%: " + ", ".join(
                f"{_md(kind)} ×{n}" for kind, n in sorted(
                    r["v2_error_kinds"].items(), key=lambda kv: (-kv[1], kv[0]))) + ")"
        lat = r.get("latency") or {}
        ratio = lat.get("p99_ratio")
        latency = "-" if ratio is None else (
            f"{ratio:.2f}× ({_md_ms(lat['v2_ms'].get('p99'))} / "
            f"{_md_ms(lat['v1_ms'].get('p99'))} ms)")
        out.append(f"| {_md(r['method'])} {_md(r['route'])} | "
                   f"{'yes' if r['ready'] else '**no**'} | {r.get('samples', r['compared'])} | "
                   f"{match} | {errors} | {r.get('compare_errors', 0)} | {latency} | "
                   f"{len(r.get('classes', []))} |")
    for r in v["routes"]:
        if r["ready"] and not r.get("classes"):
            continue
        out += ["", f"### {_md(r['method'])} {_md(r['route'])}: "
                    f"{'ready' if r['ready'] else 'not ready'}", ""]
        if not r["ready"]:
            out += [f"- {_md(reason)}" for reason in r.get("reasons") or [r["reason"]]]
        classes = r.get("classes", [])
        if classes:
            out.append("- Open classes:")
            for c in classes:
                ticket = f", {_md_ticket(c['ticket'])}" if c.get("ticket") else ""
                sig = visible(c["signature"]).replace("`", "")  # a code span: no escapes
                out.append(f"  - `{sig}` ×{c['count']}: "
                           f"{_md(c['status'])}{ticket}")
    return "\n".join(out) + "\n"


def _pretty_body(part: dict[str, Any] | None) -> str:
    if part is None:
        return "(none)"
    body = part.get("body") or {}
    text = body.get("text")
    if text is None:
        return f"(binary, {part.get('body_size')} bytes, base64 {str(body.get('base64'))[:60]}...)"
    try:
        text = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except ValueError:
        pass
    return visible(text, multiline=True)


def show_exchange(x: dict[str, Any], console: Console) -> None:
    from rich.columns import Columns
    from rich.panel import Panel

    console.print(_t((f"{x['method']} {x['url']}", "bold"),
                     f"  id {x['id']}  request id {x['request_id']}  route {x['route']}  at "
                     f"{_when(x.get('ts'))} UTC"))
    outcome_color = {"match": "green", "mismatch": "red"}.get(x["outcome"], "yellow")
    console.print(_t("outcome ", (x["outcome"], outcome_color),
                     f"  class {x['signature']}" if x.get("signature") else "",
                     f"  flags {', '.join(x['flags'])}" if x.get("flags") else ""))
    differing = {d["path"].split(".")[-1].split("[")[0] for d in x["diff"]}

    def panel(title: str, part: dict[str, Any] | None) -> Panel:
        if part is None:
            return Panel("(no answer)", title=title)
        head = f"status {part.get('status')}" + (f"  error: {part['error']}" if part.get("error") else "")
        head += f"  skipped: {part['skipped']}" if part.get("skipped") else ""
        head += f"  incomplete: {part['incomplete']}" if part.get("incomplete") else ""
        head += f"  {part.get('latency_ms') or 0:.1f} ms"
        text = _t(head)
        text.append("\n")
        for k, v, *_ in part.get("headers", []):  # [name, value(, exact bytes in base64)]
            text.append(visible(f"{k}: {v}") + "\n",
                        style="yellow" if k.lower() in differing else "dim")
        text.append("\n")
        for line in _pretty_body(part).splitlines():
            key = line.strip().split(":")[0].strip('"')
            text.append(line + "\n", style="bold red" if key in differing else "")
        return Panel(text, title=title)

    console.print(Columns([panel("V1", x.get("v1")), panel("V2", x.get("v2"))], equal=True,
                          expand=True))
    if x.get("noise"):
        console.print(_t("noise (V1 disagrees with itself here, so these are not mismatches): ",
                         ", ".join(f"{d['path']}" for d in x["noise"])))
    if x["diff"]:
        table = Table(title="differences")
        for name in ("path", "kind", "v1", "v2"):
            table.add_column(name, overflow="fold")
        for d in x["diff"]:
            table.add_row(_t(d["path"]), _t(d["kind"]), _t(orjson.dumps(d["v1"]).decode()[:200]),
                          _t(orjson.dumps(d["v2"]).decode()[:200]))
        console.print(table)


def rules_table(data: dict[str, Any]) -> Table:
    title = _t(f"rules from {data['source']}" if data.get("source") else "no rules file (--rules)")
    table = Table(title=title, title_justify="left")
    for name in ("rule", "line", "applies to", "suppressed", "reason", "owner", "expires"):
        table.add_column(name, overflow="fold")
    for r in data["rules"]:
        expires = _t(r["expires"] or "-")
        if r["expired"]:
            expires = _t(f"{r['expires']} (expired: not applied)", style="red")
        table.add_row(_t(r["id"]), _t(r["line"]), _t(f"{r['method'] or '*'} {r['route']}"),
                      _t(r["suppressed"]),
                      _t(r["reason"]) if r["reason"] else Text("(no reason given)", "yellow"),
                      _t(r["owner"] or "-"), expires)
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
        table.add_row(_t(c["signature"]), _t(f"{c['method']} {c['route']}"), _t(c["replayed"]),
                      _t(c["fixed"]), _t(c["still_failing"]), _t(c["changed"]),
                      _t(c["verdict"], style=colors[c["verdict"]]))
    console.print(table)
    for r in report["new_regressions"]:
        console.print(_t(("new regression", "red"),
                         f" {r['method']} {r['route']}: {r['count']} exchanges that matched now "
                         f"differ at {', '.join(r['paths'])} (class {r['signature']}, e.g. "
                         f"{r['examples'][0]})"))
    if not report["new_regressions"]:
        console.print("no new regressions among the "
                      + ("exchanges compared again" if stored else "re-sent exchanges"))
