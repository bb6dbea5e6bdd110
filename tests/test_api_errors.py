"""The reports API answers every error in JSON: bad credentials in any bytes, unknown routes and
methods, and a store that fails; never a 500 for a header, never a traceback to the client.

Raw sockets (tests/rawhttp.py), so the exact bytes of the Authorization header are ours."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from comparer.api import STORE_KEY
from shadow.settings import sqlite_path
from tests.rawhttp import exchange

TOKEN = "s3cret-token"


async def get(port: int, path: str = "/api/summary", *, method: bytes = b"GET",
              headers: bytes = b"") -> tuple[int, bytes, dict[str, object]]:
    """(status, response head, JSON body) of one raw request; fails if the body is not JSON."""
    raw = (method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
           + b"Connection: close\r\n\r\n")
    head, body = await exchange(port, raw)
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), (head, body)
    data = json.loads(body)
    assert isinstance(data, dict) and isinstance(data.get("error", ""), str), data
    assert b"Traceback" not in body and b"File \"" not in body
    return status, head, data


@pytest.mark.parametrize("authorization", [
    b"Bearer \xe9t\xe9",  # Latin-1
    b"Bearer \xff\xfe\x80",  # not UTF-8 at all
    b"Bearer s3cret-token\xc3",  # the right token and a cut UTF-8 sequence
    b"\xc3\xa9 s3cret-token",  # a scheme that is not a word
    b"Bearer",  # no credentials
    b"Basic czNjcmV0LXRva2Vu",  # another scheme
    b"",
])
async def test_any_authorization_bytes_are_a_json_401(reports_api, authorization: bytes) -> None:
    api = await reports_api(api_token=TOKEN)
    status, _, data = await get(api.port, headers=b"Authorization: " + authorization + b"\r\n")
    assert status == 401 and "Bearer" in str(data["error"])


async def test_the_scheme_is_case_insensitive_and_the_token_is_not(reports_api) -> None:
    api = await reports_api(api_token=TOKEN)
    for scheme in (b"Bearer", b"bearer", b"BEARER", b"bEaReR"):
        for sep in (b" ", b"   "):
            status, _, data = await get(api.port,
                                        headers=b"Authorization: " + scheme + sep
                                        + TOKEN.encode() + b"\r\n")
            assert status == 200 and data["total"] == 0, (scheme, sep)
    status, _, _ = await get(api.port, headers=b"Authorization: Bearer S3CRET-TOKEN\r\n")
    assert status == 401
    # two Authorization headers: ambiguous, refused even if one of them is right
    status, _, _ = await get(api.port, headers=b"Authorization: Bearer x\r\n"
                                               b"Authorization: Bearer " + TOKEN.encode() + b"\r\n")
    assert status == 401


async def test_unknown_routes_and_methods_are_json(reports_api) -> None:
    api = await reports_api()
    status, _, data = await get(api.port, "/api/nothing-here")
    assert status == 404 and "/api/nothing-here" in str(data["error"])
    status, head, data = await get(api.port, "/api/summary", method=b"DELETE")
    assert status == 405 and "GET" in str(data["error"])
    assert b"allow: get" in head.lower()
    status, _, data = await get(api.port, "/api/mismatches?limit=0")  # handlers' own 400s
    assert status == 400 and "limit" in str(data["error"])
    # with a token, the same answers once authorised
    api = await reports_api(api_token=TOKEN)
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    status, _, _ = await get(api.port, "/api/nothing-here", headers=auth)
    assert status == 404


async def test_a_failing_store_is_a_json_500_logged_by_the_server(
        reports_api, caplog: pytest.LogCaptureFixture) -> None:
    api = await reports_api()
    caplog.set_level(logging.ERROR, logger="shadow.api")
    # the database loses a table under the running API (sqlite3.OperationalError)
    with sqlite3.connect(sqlite_path(api.settings.store)) as db:
        db.execute("DROP TABLE route_counts")
    status, _, data = await get(api.port, "/api/summary")
    assert status == 500 and "comparer's log" in str(data["error"])
    assert "route_counts" not in str(data["error"])  # details stay on the server
    assert any("GET /api/summary" in r.getMessage() and r.exc_info for r in caplog.records)
    # the store closed under the API (StoreError): every store-backed endpoint answers JSON
    await api.app[STORE_KEY].close()
    for path in ("/api/summary", "/api/routes", "/api/mismatches", "/api/classes",
                 "/api/verdict", "/api/rules", "/api/exchanges/abc"):
        status, _, data = await get(api.port, path)
        assert status == 500, path
    status, _, data = await get(api.port, "/api/nothing-here")
    assert status == 404  # the API itself still answers
