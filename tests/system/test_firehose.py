"""The live firehose: redacted items, published only while listened to, streamed as SSE."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from comparer import ReportsApi, open_store
from comparer.api import HUB_KEY
from comparer.firehose import FirehoseHub, FirehosePublisher, Listener
from shadow import firehose
from shadow.bus import connect
from shadow.cli.embedded_redis import EmbeddedRedis
from shadow.model import Answer, Comparison, Difference, Exchange, Request
from shadow.redact import DEFAULT_FIELDS, DEFAULT_HEADERS, MASK, Redaction
from tests.conftest import wait_for
from tests.nginxctl import free_port
from tests.pipeline import Pipeline
from tests.procs import reap

SECRET = "hunter2-s3cr3t"
REDACTION = Redaction.from_settings(DEFAULT_HEADERS, DEFAULT_FIELDS)


def _exchange(url: str = f"/login?user=ada&token={SECRET}&x=%20y") -> Exchange:
    request = Request("POST", url, [("Authorization", f"Bearer {SECRET}"), ("Accept", "*/*"),
                                    ("cookie", f"sid={SECRET}")], b"", 0)
    return Exchange("id1", "rid1", 1_700_000_000.0, "POST", url, "/login", request,
                    Answer(200, [], b"{}", 2, latency_ms=1.5), Answer(200, [], b"{}", 2,
                                                                    latency_ms=2.5))


def test_items_never_carry_secrets_named_by_the_settings() -> None:
    diff = [Difference("$.user.password", "changed", SECRET, "other"),
            Difference("$.account", "changed", {"api_key": SECRET, "n": 1}, None),
            Difference("$.profile", "changed", {"deep": [{"Access_Token": SECRET}]}, {}),
            Difference("Set-Cookie", "header", f"sid={SECRET}", None),
            Difference("$.name", "changed", "Ada", "Ada L.")]
    it = firehose.item(_exchange(), Comparison("mismatch", diff, "sig", []), REDACTION)
    text = orjson.dumps(it).decode()
    assert SECRET not in text
    assert it["url"] == f"/login?user=ada&token={MASK}&x=%20y"  # the rest stays byte-exact
    assert dict(it["request_headers"])["Authorization"] == MASK
    assert dict(it["request_headers"])["Accept"] == "*/*"
    by_path = {d["path"]: d for d in it["diff"]}
    assert by_path["$.name"]["v1"] == "Ada"  # not a secret: shown
    assert by_path["$.account"]["v1"] == {"api_key": MASK, "n": 1}
    assert by_path["$.user.password"]["v2"] == MASK
    assert "body" not in text


def test_long_values_are_shortened_and_diffs_capped() -> None:
    diff = [Difference(f"$.a[{i}]", "changed", "x" * 1000, i) for i in range(50)]
    it = firehose.item(_exchange("/a"), Comparison("mismatch", diff, "s", []), REDACTION)
    assert it["diff_count"] == 50 and len(it["diff"]) == firehose.MAX_DIFFS
    assert len(it["diff"][0]["v1"]) == firehose.MAX_VALUE_CHARS + 1
    big = Difference("$.list", "changed", [{"k": "v" * 10}] * 30, [])
    shown = firehose.item(_exchange("/a"), Comparison("mismatch", [big], "s", []), REDACTION)
    assert shown["diff"][0]["v1"].startswith('[{"k":"vvvvvvvvvv"}')  # JSON text, cut


def test_filters_and_terminal_line() -> None:
    it = firehose.item(_exchange("/users/7"), Comparison(
        "mismatch", [Difference("$.name", "changed", "a", "b")], "s", []), REDACTION)
    it["route"] = "/users/{id}"
    assert firehose.wanted(it, outcomes=frozenset({"mismatch"}), route="/users/*", method="post")
    assert not firehose.wanted(it, outcomes=frozenset({"match"}))
    assert not firehose.wanted(it, route="/orders/*")
    assert not firehose.wanted(it, method="GET")
    line = firehose.line(it)
    assert "mismatch" in line and "/users/7" in line and "200→200" in line and "$.name" in line


def test_sse_parser() -> None:
    stream = [b": hello\n", b"\n", b"data: {\"a\":1}\n", b"\n", b"event: dropped\n",
              b"data: 3\n", b"\n", b"data: x\n", b"data: y\n", b"\n"]
    assert list(firehose.sse_events(stream)) == [("message", b'{"a":1}'), ("dropped", b"3"),
                                                  ("message", b"x\ny")]


def test_a_slow_reader_loses_the_oldest_items_counted() -> None:
    listener = Listener(capacity=3)
    for i in range(5):
        listener.put(b"%d" % i)
    assert list(listener.items) == [b"2", b"3", b"4"] and listener.dropped == 2


async def test_nothing_is_published_while_nobody_listens(redis, keys) -> None:
    publisher = FirehosePublisher(redis, keys.firehose, REDACTION)
    done = [(_exchange(), Comparison("match", [], None, []))]
    assert await publisher.publish(done) == 0
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.firehose)
    try:
        publisher._next_check = 0.0  # the listener count is cached for 2 s
        assert await publisher.publish(done) == 1
        msg = None
        for _ in range(50):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg:
                break
        assert msg is not None and orjson.loads(msg["data"])["id"] == "id1"
    finally:
        await pubsub.aclose()


def _apps() -> tuple[web.Application, web.Application]:
    async def v1(request: web.Request) -> web.Response:
        return web.json_response({"n": request.match_info["n"], "password": SECRET})

    async def v2(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"n": str(n), "password": SECRET if n % 2 else "changed"})

    a1, a2 = web.Application(), web.Application()
    a1.router.add_get("/things/{n}", v1)
    a2.router.add_get("/things/{n}", v2)
    return a1, a2


async def _read_items(api_url: str, query: str, n: int, items: list[dict[str, Any]],
                      ready: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{api_url}/api/firehose?{query}") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        ready.set()
        async for event, data in _sse(r):
            if event == "message":
                items.append(orjson.loads(data))
                if len(items) >= n:
                    return


async def _sse(r: aiohttp.ClientResponse) -> Any:
    lines = []
    async for raw in r.content:
        lines.append(raw)
        if raw in (b"\n", b"\r\n"):
            for pair in firehose.sse_events(lines):
                yield pair
            lines = []


async def test_live_stream_end_to_end_redacted_and_filtered(http_server, settings_factory):
    a1, a2 = _apps()
    settings = settings_factory(v1=await http_server(a1), v2=await http_server(a2))
    async with Pipeline(settings) as p:
        everything: list[dict[str, Any]] = []
        mismatches: list[dict[str, Any]] = []
        ready = [asyncio.Event(), asyncio.Event()]
        readers = [asyncio.create_task(_read_items(p.api_url, "", 20, everything, ready[0])),
                   asyncio.create_task(_read_items(p.api_url, "outcome=mismatch", 10,
                                                   mismatches, ready[1]))]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
        hub = p.api.app[HUB_KEY]
        await asyncio.wait_for(hub.subscribed.wait(), 10)
        p.comparer.firehose._next_check = 0.0  # see the new listeners now, not in 2 s
        async with aiohttp.ClientSession() as s:
            for i in range(20):
                headers = {"Authorization": f"Bearer {SECRET}"}
                async with s.get(f"{p.url}/things/{i}?api_key={SECRET}", headers=headers) as r:
                    assert r.status == 200
        await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert sorted(int(it["url"].split("/")[2].split("?")[0]) for it in everything) == \
        list(range(20))
    assert {it["outcome"] for it in everything} == {"match", "mismatch"}
    assert {it["outcome"] for it in mismatches} == {"mismatch"} and len(mismatches) == 10
    assert SECRET not in orjson.dumps(everything).decode()
    password_diffs = [d for it in mismatches for d in it["diff"] if d["path"] == "$.password"]
    assert password_diffs and all(d["v1"] == MASK for d in password_diffs)


async def test_shadow_tail_prints_the_stream(http_server, settings_factory):
    a1, a2 = _apps()
    settings = settings_factory(v1=await http_server(a1), v2=await http_server(a2))
    async with Pipeline(settings) as p:
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shadow", "tail", "--api", p.api_url, "--count", "4",
            "--outcome", "mismatch", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert tail.stderr is not None
            first = await asyncio.wait_for(tail.stderr.readline(), 30)
            assert b"following" in first
            hub = p.api.app[HUB_KEY]
            await asyncio.wait_for(hub.subscribed.wait(), 10)
            p.comparer.firehose._next_check = 0.0
            async with aiohttp.ClientSession() as s:
                for i in range(8):
                    async with s.get(f"{p.url}/things/{i}") as r:
                        assert r.status == 200
            out, _ = await asyncio.wait_for(tail.communicate(), 30)
        finally:
            await reap(tail)
    lines = out.decode().splitlines()
    assert tail.returncode == 0 and len(lines) == 4
    assert all(" mismatch " in line and "/things/" in line and "$.password" in line
               for line in lines)
    assert SECRET not in out.decode()


async def test_tail_explains_an_unreachable_api() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "tail", "--api", "http://127.0.0.1:1", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0 and b"cannot follow the firehose" in err


async def test_unknown_outcome_filter_is_a_clear_400(reports_api):
    api = await reports_api()
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{api.port}/api/firehose?outcome=bogus") as r:
        assert r.status == 400 and "outcome must be among" in (await r.json())["error"]


async def test_hub_resubscribes_after_redis_comes_back(keys, tmp_path):
    """Redis restarted under a connected client: the stream resumes by itself."""
    server = EmbeddedRedis(tmp_path / "own-redis", tcp_port=0, appendonly=False).start()
    redis, sender = connect(server.url, 1.0), connect(server.url, 1.0)
    hub = FirehoseHub(redis, keys.firehose)
    try:
        async with hub.listen() as listener:
            await asyncio.wait_for(hub.subscribed.wait(), 10)
            await sender.publish(keys.firehose, b'{"n": 1}')
            assert await listener.take(5) == [b'{"n": 1}']

            server.stop()
            await wait_for(lambda: (not hub.subscribed.is_set()), 20, "the loss noticed")
            server.start()
            await asyncio.wait_for(hub.subscribed.wait(), 30)
            await sender.aclose()
            sender = connect(server.url, 1.0)  # the old connection died with the server
            await sender.publish(keys.firehose, b'{"n": 2}')
            assert await listener.take(5) == [b'{"n": 2}']
    finally:
        await hub.close()
        await redis.aclose()
        await sender.aclose()
        server.stop()


async def test_live_clients_are_capped_with_a_clear_503(reports_api):
    """Each client may hold up to 1,000 queued items: the number of clients is bounded too."""
    api = await reports_api()
    api.app[HUB_KEY].max_clients = 2
    url = f"http://127.0.0.1:{api.port}/api/firehose"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as first, s.get(url) as second:
            for r in (first, second):
                assert r.status == 200 and (await r.content.readline()).startswith(b":")
            async with s.get(url) as third:
                assert third.status == 503
                assert "live clients" in (await third.json())["error"]
        await wait_for(lambda: not api.app[HUB_KEY].listeners, 10, "clients gone")
        async with s.get(url) as again:
            assert again.status == 200


async def test_tail_reconnects_when_the_api_restarts(settings_factory, redis, keys):
    port = free_port()
    settings = settings_factory(api=f"127.0.0.1:{port}")
    store = open_store(settings.store)
    await store.open()
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "tail", "--api", f"http://127.0.0.1:{port}", "--json",
        "--count", "2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert tail.stdout is not None and tail.stderr is not None

    async def serve_one_item(n: int) -> None:
        async with ReportsApi(settings, store, redis, keys=keys) as api:
            hub = api.app[HUB_KEY]
            await wait_for(lambda: (bool(hub.listeners) and hub.subscribed.is_set()), 30,
                           "tail connected")
            await redis.publish(keys.firehose, b'{"n": %d}' % n)
            line = await asyncio.wait_for(tail.stdout.readline(), 10)
            assert orjson.loads(line) == {"n": n}

    try:
        await serve_one_item(1)
        lost = await asyncio.wait_for(tail.stderr.readline(), 10)
        assert b"lost the firehose" in lost and b"reconnecting" in lost
        await serve_one_item(2)
        assert await asyncio.wait_for(tail.wait(), 10) == 0
    finally:
        await reap(tail)
        await store.close()


async def test_tail_sends_the_token_and_explains_a_401(reports_api, redis, keys):
    api = await reports_api(api_token="s3cret")
    url = f"http://127.0.0.1:{api.port}"
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "tail", "--api", url, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "SHADOW_API_TOKEN": ""})
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 2 and b"401" in err and b"Bearer" in err

    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "tail", "--api", url, "--json", "--count", "1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SHADOW_API_TOKEN": "s3cret"})
    hub = api.app[HUB_KEY]
    await wait_for(lambda: bool(hub.listeners) and hub.subscribed.is_set(), 30, "tail connected")
    await redis.publish(keys.firehose, b'{"n": 1}')
    out, err = await asyncio.wait_for(tail.communicate(), 30)
    assert tail.returncode == 0, err.decode()
    assert orjson.loads(out) == {"n": 1}


async def test_filters_run_in_the_hub_on_one_parse_per_item(redis, keys):
    """Ten dashboards filtering must not parse every item ten times, and what a client
    filtered out must not take room in its queue."""
    hub = FirehoseHub(redis, keys.firehose, per_client=2)
    seen: list[int] = []

    def mismatches(it: dict[str, Any]) -> bool:
        seen.append(id(it))
        return it.get("outcome") == "mismatch"

    async with hub.listen() as everything, hub.listen(mismatches) as a, \
            hub.listen(mismatches) as b:
        items = [b'{"outcome": "match"}', b'{"outcome": "mismatch", "n": 1}', b"not json",
                 b'{"outcome": "match"}', b'{"outcome": "mismatch", "n": 2}']
        for raw in items:
            hub._fan_out(raw)
        assert list(everything.items) == items[-2:] and everything.dropped == 3
        for filtered in (a, b):
            assert list(filtered.items) == [items[1], items[4]] and filtered.dropped == 0
        # each item parsed once: both filters got the very same object
        assert len(seen) == 10 and all(seen[i] == seen[i + 1] for i in range(0, 10, 2))
    await hub.close()
