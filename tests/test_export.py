"""Exporting stored exchanges (comparer/export.py, GET /api/export): HAR 1.2 that validates
and that a HAR parser opens, JSON lines that read back as /api/exchanges/{id} shows each
exchange, the filters of /api/mismatches, and streaming: a page of the store at a time, each
page on the wire before the next is read."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from haralyzer import HarParser

from comparer import ReportsApi, export, open_store
from comparer.store import Store
from shadow import codec
from shadow.filters import Filters
from shadow.model import Answer
from tests.test_store_contract import answer, exchange_events, ingest, store, xid  # noqa: F401

SCHEMA = json.loads((Path(__file__).parent / "data" / "har-1.2.schema.json").read_text())


def valid_har(doc: Any) -> Any:
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(doc))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    return doc


async def seed(s: Store, n: int, now: float | None = None) -> None:
    """`n` exchanges: every third a mismatch (the `id` comes back as text), on two routes;
    with `now`, one a second, the last a second ago."""
    events = []
    for i in range(n):
        v2 = answer({"id": str(i)}) if i % 3 == 0 else None
        path = f"/items/{i}" if i % 2 else f"/users/{i}"
        events += exchange_events(i, path=path, v2=v2, ts=None if now is None else now - n + i)
        if len(events) >= 600:
            await ingest(s, events)
            events = []
    if events:
        await ingest(s, events)


class Recording:
    """A real store whose page reads are noted in `log`, beside what the export wrote; a
    page read can be held until `gate` opens."""

    def __init__(self, inner: Store, log: list[tuple[str, int]]) -> None:
        self.inner, self.log = inner, log
        self.gate: asyncio.Event | None = None

    async def list_exchanges(self, f: Filters) -> Any:
        if self.gate is not None and any(kind == "page" for kind, _ in self.log):
            await self.gate.wait()
        items, cursor = await self.inner.list_exchanges(f)
        self.log.append(("page", f.limit))
        self.log.append(("listed", len(items)))
        return items, cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("fmt", ["har", "jsonl"])
async def test_each_page_is_written_before_the_next_is_read(store: Store, fmt: str) -> None:  # noqa: F811
    await seed(store, 230)
    log: list[tuple[str, int]] = []

    async def write(chunk: bytes) -> None:
        log.append(("lines", chunk.count(b"\n")))

    recording = Recording(store, log)
    q = export.parse_export({"format": fmt}, time.time(), page_size=20)
    assert await export.stream(recording, q, write) == 230  # type: ignore[arg-type]
    head = 1 if fmt == "har" else 0
    written = listed = 0
    pages = 0
    for kind, n in log:
        if kind == "page":
            assert n == 20  # never more than a page asked of the store
            assert written == listed + head or listed == 0  # the last page is all out
            pages += 1
        elif kind == "listed":
            listed += n
        else:
            written += n
    assert pages == 12 and listed == 230 and written == 230 + 2 * head


async def test_jsonl_reads_back_as_the_api_shows_each_exchange(store: Store) -> None:  # noqa: F811
    await seed(store, 40)
    chunks: list[bytes] = []

    async def write(chunk: bytes) -> None:
        chunks.append(chunk)

    q = export.parse_export({"format": "jsonl", "outcome": "mismatch"}, time.time(),
                            page_size=7)
    assert await export.stream(store, q, write) == 14
    lines = b"".join(chunks).splitlines()
    assert len(lines) == 14
    for line in lines:
        doc = orjson.loads(line)
        x = await store.get(doc["id"])
        assert x is not None and x.outcome == "mismatch"
        assert doc == orjson.loads(codec.dumps(codec.exchange_for_display(x)))
        assert doc["v1"]["body"]["text"] and doc["v2"]["body"]["text"]  # both answers


def test_bad_export_queries_say_what_is_accepted() -> None:
    now = time.time()
    for query, words in (({"format": "pcap"}, "format: expected one of har, jsonl"),
                         ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                         ({"outcome": "nope"}, "outcome"), ({"since": "soon"}, "since"),
                         ({"colour": "red"}, "unknown filter 'colour'")):
        with pytest.raises(export.FilterError, match=words):
            export.parse_export(query, now)
    q = export.parse_export({"limit": "5000", "route": "/users/{id}"}, now)
    assert q.format is export.HAR and q.limit == 5000 and q.filters.limit == export.PAGE_SIZE
    assert q.filters.outcome is None and q.filters.route == "/users/{id}"


@pytest.fixture
async def api_on(settings_factory, redis, keys):
    """A real reports API serving a given store."""
    started: list[ReportsApi] = []

    async def start(s: Any) -> str:
        api = ReportsApi(settings_factory(), s, redis, keys=keys)
        await api.start()
        started.append(api)
        return f"http://127.0.0.1:{api.port}"

    yield start
    for api in started:
        await api.stop()


async def test_two_thousand_exchanges_stream_a_page_at_a_time(api_on, settings_factory) -> None:
    settings = settings_factory()
    inner = open_store(settings.store)
    await inner.open()
    try:
        await seed(inner, 2000, now=time.time())
        log: list[tuple[str, int]] = []
        recording = Recording(inner, log)
        base = await api_on(recording)
        async with aiohttp.ClientSession() as client:
            # JSON lines, with the second page held back until the client has the first:
            # a server that buffered the export would never send it, and this would time out
            recording.gate = asyncio.Event()
            got = bytearray()
            async with client.get(f"{base}/api/export?format=jsonl") as r:
                assert r.status == 200 and r.content_type == "application/x-ndjson"
                assert r.headers.get("Transfer-Encoding") == "chunked"
                assert "Content-Length" not in r.headers
                assert 'filename="shadow.jsonl"' in r.headers["Content-Disposition"]
                while got.count(b"\n") < export.PAGE_SIZE:  # the first page, by itself
                    got.extend(await asyncio.wait_for(r.content.readany(), 60))
                assert got.count(b"\n") == export.PAGE_SIZE  # the second is not read yet
                recording.gate.set()
                got.extend(await r.content.read())
            lines = bytes(got).splitlines()
            assert len(lines) == 2000
            ids = [orjson.loads(line)["id"] for line in lines]
            assert ids == sorted(ids, reverse=True) and len(set(ids)) == 2000  # newest first
            pages = [n for kind, n in log if kind == "page"]
            assert pages == [export.PAGE_SIZE] * 20  # the handler never asks for more
            # one exchange read back through the API is the same document
            async with client.get(f"{base}/api/exchanges/{ids[5]}") as r:
                assert orjson.loads(lines[5]) == await r.json()

            # HAR: validates against the HAR 1.2 schema, and a HAR parser opens it
            recording.gate = None
            async with client.get(f"{base}/api/export?format=har") as r:
                assert r.status == 200 and r.content_type == "application/json"
                raw = await r.read()
            assert raw.count(b"\n") == 2002
            doc = valid_har(orjson.loads(raw))
            entries = HarParser(doc).pages[0].entries
            assert len(entries) == 2000
            first = entries[0]
            assert first.request.method == "GET" and first.response.status == 200
            assert first.request.url.startswith("http://x/")  # the Host the client sent
            assert first.startTime is not None
            by_outcome = {e["_shadow"]["outcome"] for e in doc["log"]["entries"]}
            assert by_outcome == {"match", "mismatch"}
            mismatch = next(e for e in doc["log"]["entries"] if e["_shadow"]["outcome"]
                            == "mismatch")
            assert mismatch["_shadow"]["diff"][0]["kind"] == "type"
            assert orjson.loads(mismatch["response"]["content"]["text"])["id"] == \
                int(orjson.loads(mismatch["_v2"]["content"]["text"])["id"])
    finally:
        await inner.close()


async def test_the_filters_of_mismatches_select_the_same_exchanges(reports_api) -> None:
    from comparer.api import STORE_KEY

    api = await reports_api()
    await seed(api.app[STORE_KEY], 300, now=time.time())
    base = f"http://127.0.0.1:{api.port}/api"
    async with aiohttp.ClientSession() as client:
        async def listed(query: str) -> list[str]:
            ids: list[str] = []
            cursor = ""
            while True:
                async with client.get(f"{base}/mismatches?{query}&limit=1000{cursor}") as r:
                    assert r.status == 200, await r.text()
                    page = await r.json()
                ids += [item["id"] for item in page["items"]]
                if not page["next"]:
                    return ids
                cursor = f"&cursor={page['next']}"

        async def exported(query: str) -> list[str]:
            async with client.get(f"{base}/export?format=jsonl&{query}") as r:
                assert r.status == 200, await r.text()
                return [orjson.loads(line)["id"] for line in (await r.read()).splitlines()]

        signature = (await (await client.get(f"{base}/classes")).json())["classes"][0]
        for query in ("outcome=mismatch", "outcome=mismatch&route=/users/{id}",
                      f"outcome=mismatch&signature={signature['signature']}",
                      "outcome=mismatch&since=2m", "outcome=match&method=get&v1_status=200",
                      "outcome=mismatch&path=id"):
            expected = await listed(query)
            assert expected and await exported(query) == expected, query
        everything = await exported("")
        assert len(everything) == 300  # every outcome unless one is asked for
        assert await exported("limit=7") == everything[:7]
        async with client.get(f"{base}/export?format=har&limit=3&outcome=mismatch") as r:
            doc = valid_har(await r.json())
        assert [e["_shadow"]["outcome"] for e in doc["log"]["entries"]] == ["mismatch"] * 3
        assert doc["log"]["_shadow"]["filters"] == {"outcome": "mismatch"}
        for query in ("format=xml", "limit=-1", "signature=XYZ", "since=tomorrow",
                      "cursor=../../etc"):
            async with client.get(f"{base}/export?{query}") as r:
                assert r.status == 400 and r.content_type == "application/json", query
                assert (await r.json())["error"], query


class FailingAfter:
    """A real store whose reads fail after `n` exchanges (a store fault half-way)."""

    def __init__(self, inner: Store, n: int) -> None:
        self.inner, self.left = inner, n

    async def get(self, key: str) -> Any:
        self.left -= 1
        if self.left < 0:
            raise OSError("disk I/O error")
        return await self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_failure_half_way_never_looks_like_a_whole_file(api_on, settings_factory,
                                                               caplog) -> None:
    settings = settings_factory()
    inner = open_store(settings.store)
    await inner.open()
    try:
        await seed(inner, 250)
        base = await api_on(FailingAfter(inner, 150))
        async with aiohttp.ClientSession() as client:
            for fmt in ("har", "jsonl"):
                async with client.get(f"{base}/api/export?format={fmt}") as r:
                    assert r.status == 200  # the head was sent before the fault
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await r.read()  # the chunked body never ends properly
        assert "export failed half-way" in caplog.text
    finally:
        await inner.close()


async def test_secrets_are_exported_as_stored(store: Store) -> None:  # noqa: F811
    """The export shows what the store holds (redacted by the proxy), byte for byte: it never
    has anything to un-redact, and never alters a token."""
    token = "shadow:hmac:5f0c2a"  # what redaction leaves in place of a secret
    v1 = Answer(200, [("Content-Type", "application/json"), ("Set-Cookie", f"sid={token}")],
                orjson.dumps({"password": token}), 22, latency_ms=1.0)
    events = exchange_events(1, v1=v1)
    events[0].request.headers.append(("Authorization", f"Bearer {token}"))
    await ingest(store, events)
    out: list[bytes] = []

    async def write(chunk: bytes) -> None:
        out.append(chunk)

    await export.stream(store, export.parse_export({}, time.time()), write)
    (e,) = orjson.loads(b"".join(out))["log"]["entries"]
    assert {"name": "Authorization", "value": f"Bearer {token}"} in e["request"]["headers"]
    assert e["response"]["cookies"] == [{"name": "sid", "value": token}]
    assert orjson.loads(e["response"]["content"]["text"]) == {"password": token}
    assert e["_shadow"]["id"] == xid(1)
