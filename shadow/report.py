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
                          ("p50 ms v1/v2", "right"), ("top differing fields", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in summary.get("routes", []):
        rate = r.get("match_rate")
        color = "green" if rate == 1 else ("red" if rate is not None and rate < 0.99 else "yellow")
        v1, v2 = r.get("v1_latency_ms") or {}, r.get("v2_latency_ms") or {}
        lat = f"{_num(v1.get('p50'))}/{_num(v2.get('p50'))}"
        table.add_row(f"{r['method']} {r['route']}", str(r["total"]), str(r["compared"]),
                      f"[{color}]{_pct(rate)}[/]" if rate is not None else "-",
                      str(r["mismatched"]), f"{r.get('skipped', 0)}/{r.get('v2_errors', 0)}",
                      lat, describe_diffs(r.get("top_diffs", [])))
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
            f"{'unknown' if dropped is None else dropped} events dropped by the proxy")


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
