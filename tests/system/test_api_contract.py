"""The reports API keeps the contract it publishes: schemathesis generates requests from
/api/openapi.json (valid ones and, in its negative mode, invalid ones) against a running
`shadow up` holding real compared traffic, and every answer must be documented (status,
content type, headers) and match its schema, and none may be a 500.

Bounded and deterministic: a fixed number of examples per operation and mode, derandomized
(the same requests every run), no deadline (a slow machine is never a failure), no example
database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shadow.cli import demo_apps
from tests.conftest import wait_for
from tests.procs import reap, start_up

EXAMPLES = 30  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# an endless server-sent event stream: no answer to validate ends (its 400s are tested in
# tests/system/test_firehose.py)
SKIPPED = {("GET", "/api/firehose")}


def contract_failures(api: str, doc: dict[str, Any] | None = None,
                      only: set[tuple[str, str]] | None = None) -> tuple[list[str], int]:
    """Run every operation's examples (of the document `api` serves, or of `doc`; of the
    operations `only`, or all but SKIPPED); returns what failed, one entry per operation and
    mode, and how many requests were sent."""
    schema = schemathesis.openapi.from_dict(doc) if doc is not None \
        else schemathesis.openapi.from_url(f"{api}/api/openapi.json")
    failures: list[str] = []
    ran = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            key = (operation.method.upper(), operation.path)
            if key in SKIPPED or (only is not None and key not in only):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    nonlocal ran
                    ran += 1
                    case.call_and_validate(base_url=api, session=session, checks=CHECKS,
                                           timeout=30)

                try:
                    run()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to negate: no parameters
                except (Exception, BaseExceptionGroup) as e:  # collected, reported below
                    # (schemathesis's FailureGroup is a BaseExceptionGroup)
                    failures.append(f"{key[0]} {key[1]} ({mode.value}): {str(e)[:3000]}")
    return failures, ran


async def test_every_answer_is_documented_and_conforms_and_none_is_a_500(
        http_server, tmp_path: Path) -> None:
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(2))
    proc, proxy, api = await start_up(
        "--v1", v1, "--v2", v2, "--data-dir", str(tmp_path / "data"), "--keep", "all",
        "--workers", "1", "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path)
    try:
        plan = demo_apps.traffic(120, seed=5)
        async with aiohttp.ClientSession() as client:
            for method, path, body in plan:
                async with client.request(method, proxy + path, data=body) as r:
                    await r.read()
            async with client.post(f"{api}/api/deploys", json={"version": "2.0"}) as r:
                assert r.status == 201

            async def compared() -> bool:
                async with client.get(f"{api}/api/summary") as r:
                    summary = await r.json()
                return summary["total"] == len(plan) and summary["pending"] == 0

            await wait_for(compared, 60, "the traffic to be compared")
        failures, ran = await asyncio.to_thread(contract_failures, api)
        assert not failures, "\n\n".join(failures)
        assert ran > 300, f"only {ran} requests were generated"

        # the checks are live: a document that asks more than the API answers is caught
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{api}/api/openapi.json") as r:
                doc = await r.json()
        doc["components"]["schemas"]["Summary"]["required"].append("no_such_field")
        failures, _ = await asyncio.to_thread(contract_failures, api, doc,
                                              {("GET", "/api/summary")})
        assert failures and '"no_such_field" is a required property' in failures[0]
    finally:
        await reap(proc)
