"""/api/openapi.json (comparer/openapi.py): a valid OpenAPI 3.1 document that describes every
route the reports API serves, and no other, served with the API's own access rule. Whether
the API's answers conform is tests/system/test_api_contract.py (schemathesis)."""

from __future__ import annotations

import aiohttp
import orjson
from openapi_spec_validator import validate

from comparer import openapi
from shadow.filters import KNOWN


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert orjson.loads(openapi.document_bytes()) == orjson.loads(orjson.dumps(doc))


def parameters(path: str, method: str = "get") -> set[str]:
    return {p["name"] for p in openapi.document()["paths"][path][method].get("parameters", [])}


def test_every_filter_window_and_error_is_described() -> None:
    assert set(KNOWN) <= parameters("/api/mismatches") == parameters("/api/exchanges")
    assert set(KNOWN) | {"format"} == parameters("/api/export")
    for path in ("/api/summary", "/api/routes", "/api/classes", "/api/verdict",
                 "/api/timeline"):
        assert {"since", "until"} <= parameters(path), path
    assert {"min_match", "min_samples", "max_v2_error_rate", "max_latency_ratio",
            "latency_floor_ms", "exclude", "all_time", "segment"} <= parameters("/api/verdict")
    for path in ("/api/summary", "/api/routes", "/api/classes"):
        assert "segment" in parameters(path), path
    assert {"since", "until"} == parameters("/api/segments")
    responses = openapi.document()["components"]["responses"]
    for path, item in openapi.document()["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"400", "403", "405", "500"} <= codes, (path, method)
            assert "401" in codes or path == "/", (path, method)  # the page needs no token
    for name in ("BadRequest", "Unauthorized", "Forbidden", "NotFound", "MethodNotAllowed",
                 "ServerError"):
        schema = responses[name]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    # aiohttp itself refuses a request line over 8190 bytes, before the API sees it
    assert set(responses["BadRequest"]["content"]) == {"application/json", "text/plain"}
    assert openapi.document()["components"]["schemas"]["Error"]["required"] == ["error"]


async def test_every_route_the_api_serves_is_described_and_only_those(reports_api) -> None:
    api = await reports_api()
    served: set[tuple[str, str]] = set()
    for route in api.app.router.routes():
        if route.method != "HEAD":  # aiohttp adds HEAD to every GET
            served.add((route.resource.canonical, route.method.lower()))
    described = {(path, method) for path, item in openapi.document()["paths"].items()
                 for method in item}
    assert served == described


async def test_it_is_served_by_the_api_with_the_same_access_rule(reports_api) -> None:
    api = await reports_api(api_token="s3cret")
    url = f"http://127.0.0.1:{api.port}/api/openapi.json"
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as r:
            assert r.status == 401 and "Bearer" in (await r.json())["error"]
        async with client.get(url, headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == orjson.loads(openapi.document_bytes())


async def test_inputs_the_contract_found_are_400s_not_500s_or_strings(reports_api) -> None:
    """Windows out of any date's range were a 500 (an overflow deep in every report), and a
    huge min_samples came back as a string: both are now refused, as the document says."""
    api = await reports_api()
    base = f"http://127.0.0.1:{api.port}/api"
    async with aiohttp.ClientSession() as client:
        for path in ("/summary?since=1e300", "/routes?until=1e18", "/classes?since=-1e15",
                     "/verdict?since=99999999999999w", "/timeline?since=1e300",
                     "/mismatches?since=1e300", "/export?since=-1e300",
                     "/verdict?min_samples=99999999999999999999999"):
            async with client.get(base + path) as r:
                assert r.status == 400, (path, await r.text())
                assert (await r.json())["error"], path
        async with client.get(f"{base}/verdict?min_samples=1000000000") as r:
            assert r.status == 200 and (await r.json())["min_samples"] == 10**9
