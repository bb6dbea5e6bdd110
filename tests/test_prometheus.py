"""deploy/prometheus (recording rules, alerts and their promtool tests) and deploy/grafana's board,
checked against what shadow really exports: a live /metrics of a real pipeline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
BOARD = ROOT / "deploy" / "grafana" / "shadow.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's `prometheus` package has it: "
                    "./scripts/test installs it when it runs as root with apt-get)")
    return found


# ---------------------------------------------------------------- PromQL: the names it reads

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_OFFSET = re.compile(r"\boffset\s+-?(?:\d+[smhdwy]+)+|@\s*\S+")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w:])")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads: identifiers that are not
    functions, aggregations, keywords, labels, numbers or durations."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group() in _KEYWORDS:
            continue  # a function or an aggregation
        names.add(m.group())
    return names


def test_metric_names_finds_what_an_expression_reads() -> None:
    assert metric_names('sum by (le) (rate(shadow_x_bucket{a="b(c)"}[$__rate_interval])) / '
                        'on(stream) group_left shadow:y:rate5m > 0.5e3 or vector(0)') == \
        {"shadow_x_bucket", "shadow:y:rate5m"}
    assert metric_names("histogram_quantile(0.99, sum(rate(m_bucket[5m])) offset 1h)") == \
        {"m_bucket"}


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics text declares: its families (counters with _total,
    histograms with _bucket/_sum/_count) and its samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        names |= {sample.name for sample in family.samples}
    return names


def rule_docs() -> dict[str, Any]:
    return {name: yaml.safe_load((PROMETHEUS / name).read_text())
            for name in ("rules.yml", "alerts.yml")}


def rules_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["groups"] for rule in group["rules"]]


def board_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the Grafana board, rows' panels included."""
    board = json.loads(BOARD.read_text())
    out = []
    stack = list(board["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


# ---------------------------------------------------------------- promtool

def test_rules_and_alerts_pass_promtool_check() -> None:
    tool = promtool()
    run = subprocess.run([tool, "check", "rules", str(PROMETHEUS / "rules.yml"),
                          str(PROMETHEUS / "alerts.yml")], check=False, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_alerts_fire_as_their_promtool_tests_say() -> None:
    """tests.yml: every alert fires when it should, with its annotations, and not before or
    after; the recording rules give the values they promise."""
    tool = promtool()
    run = subprocess.run([tool, "test", "rules", "tests.yml"], cwd=PROMETHEUS,
                         check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    tested = {t["alertname"] for test in yaml.safe_load((PROMETHEUS / "tests.yml").read_text())
              ["tests"] for t in test.get("alert_rule_test", []) if t["exp_alerts"]}
    assert tested == {rule["alert"] for rule in rules_of(rule_docs()["alerts.yml"])}, \
        "every alert has a test in which it fires"


def test_every_board_query_is_valid_promql(tmp_path: Path) -> None:
    """The board's queries as recording rules (Grafana's $__rate_interval as 5m): promtool
    parses each of them."""
    tool = promtool()
    rules = [{"record": f"board:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, expr) in enumerate(board_exprs())]
    path = tmp_path / "board.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "board", "rules": rules}]}))
    run = subprocess.run([tool, "check", "rules", str(path)], check=False, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------- against a live /metrics

def v1_app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"id": n, "name": f"item {n}"})

    app = web.Application()
    app.router.add_get("/items/{n}", item)
    return app


def v2_app() -> web.Application:
    """Odd items renamed: a mismatch class."""

    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        key = "title" if n % 2 else "name"
        return web.json_response({"id": n, key: f"item {n}"})

    app = web.Application()
    app.router.add_get("/items/{n}", item)
    return app


async def test_board_and_rules_read_only_metrics_shadow_exports(http_server,
                                                                settings_factory) -> None:
    """A real pipeline takes traffic; its reports API's /metrics declares every metric the
    Grafana board, the recording rules and the alerts read (the board may read the recording
    rules too), and the comparer really sets the series the rules are built on."""
    settings = settings_factory(v1=await http_server(v1_app()), v2=await http_server(v2_app()))
    pipeline = Pipeline(settings)
    pipeline.comparer.notifier.interval_s = 0.1  # the verdict gauges, without waiting 30 s
    async with pipeline as p, aiohttp.ClientSession() as client:
        for n in range(20):
            async with client.get(f"{p.url}/items/{n}") as r:
                assert r.status == 200
        await wait_for(lambda: p.comparer.completed == 20, what="20 exchanges compared")

        async def scrape() -> str:
            async with client.get(p.api_url + "/metrics") as r:
                assert r.status == 200
                return await r.text()

        async def verdict_seen() -> bool:
            return 'shadow_route_ready{method="GET",route="/items/{id}"} 0.0' in await scrape()

        await wait_for(verdict_seen, what="the verdict of /items/{id} in /metrics")
        text = await scrape()
    exported = exported_names(text)
    docs = rule_docs()
    recorded = {rule["record"] for rule in rules_of(docs["rules.yml"])}
    assert not {name for name in recorded if not name.startswith("shadow:")}

    unknown = {}
    for title, expr in board_exprs():
        names = metric_names(expr)
        assert names, f"board panel {title!r}: no metric found in {expr!r}"
        if names - exported - recorded:
            unknown[f"board panel {title!r}: {expr}"] = sorted(names - exported - recorded)
    for file, doc in docs.items():
        for rule in rules_of(doc):
            names = metric_names(rule["expr"])
            assert names, f"{file}: {rule}: no metric found"
            if names - exported - recorded:
                unknown[f"{file}: {rule.get('record') or rule.get('alert')}"] = \
                    sorted(names - exported - recorded)
    assert not unknown, f"names shadow does not export: {unknown}"

    used = set().union(*(metric_names(expr) for _, expr in board_exprs()))
    assert len(used & exported) >= 20 and len(used & recorded) >= 10  # the check checked much
    # what the rules are built on is set, not only declared
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    for name in ("shadow_proxy_events_total", "shadow_proxy_events_published_total",
                 "shadow_stream_max_length", "shadow_stream_memory_bytes",
                 "shadow_stream_oldest_age_seconds", "shadow_verdict_ready",
                 "shadow_stream_behind_seconds"):
        assert name in samples, f"{name} has no sample in /metrics"
    assert samples["shadow_mismatch_classes_new_total"].value >= 1
