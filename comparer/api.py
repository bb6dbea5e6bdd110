"""The reports API: JSON over HTTP, served by the comparer."""

from __future__ import annotations

import datetime
import hmac
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from comparer import export, openapi
from comparer.firehose import FirehoseHub
from comparer.store import Store, default_verdict_window
from comparer.timeline import TimelineError, parse_step, view
from shadow import codec, metrics
from shadow.bus import keys_for, stats_totals, stream_health, streams_health
from shadow.codec import exchange_for_display
from shadow.deploys import (
    MAX_TEXT,
    TARGETS,
    Deploy,
    DeployError,
    deploy,
    fixed_in,
)
from shadow.filters import FilterError, Filters, parse_filters
from shadow.firehose import wanted
from shadow.ids import new_id
from shadow.keys import (
    COMPARERS,
    DROPPED_EVENTS,
    TRIMMED_UNPROCESSED,
    TRIMMED_UNREAD,
    UNCONFIRMED_EVENTS,
    Keys,
)
from shadow.model import CLASS_FIXED, CLASS_STATUSES, LIVE
from shadow.protection import RAW, parse_capture_bodies
from shadow.rules import RuleSet, load_rules_file
from shadow.segments import MAX_CHARS, OTHER, asked
from shadow.serve import start_site
from shadow.settings import Settings, check_access, is_loopback
from shadow.stats import (
    LATENCY_FLOOR_MS,
    MAX_LATENCY_RATIO,
    MAX_V2_ERROR_RATE,
    MIN_MATCH_PCT,
    MIN_SAMPLES,
    parse_rate,
    verdict,
)
from shadow.suggest import suggest, to_toml
from shadow.windows import Window, WindowError, parse_instant, parse_window

log = logging.getLogger("shadow.api")

STORE_KEY = web.AppKey("store", Store)
REDIS_KEY = web.AppKey("redis", aioredis.Redis)
KEYS_KEY = web.AppKey("keys", Keys)
RAW_BODIES_KEY = web.AppKey("raw_bodies", list[str])
RulesSource = Callable[[], RuleSet]  # the rules in force, read when asked (they can be reloaded)
RULES_KEY: web.AppKey[RulesSource] = web.AppKey("rules")
HUB_KEY = web.AppKey("firehose", FirehoseHub)
SEGMENTING_KEY = web.AppKey("segmenting", dict[str, Any])  # --segment-by, --max-segments
OUTCOMES = frozenset(LIVE)
KEEPALIVE_S = 15.0
MAX_MIN_SAMPLES = 10**9  # larger whole numbers are no JSON number every client reads


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=codec.dumps(data), status=status, content_type="application/json")


def bearer_credentials(raw_headers: tuple[tuple[bytes, bytes], ...]) -> bytes | None:
    """The credentials of the request's one `Authorization: Bearer <token>` header, as bytes
    (any bytes: nothing here decodes them). The scheme is case-insensitive and followed by one
    or more spaces (RFC 7235). None when there is no such header, more than one, or another
    scheme."""
    values = [v for k, v in raw_headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, credentials = values[0].strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credentials.lstrip(b" ") or None


def _auth_middleware(token: str, metrics_open: bool) -> Any:
    expected = token.encode()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if metrics_open and request.path == "/metrics":
            return await handler(request)
        if request.path == "/" and request.method == "GET":
            return await handler(request)  # the dashboard page is static; its API calls are not
        given = bearer_credentials(request.raw_headers)
        # compared as bytes in constant time, whatever bytes the client sent
        if given is None or not hmac.compare_digest(given, expected):
            return json_response({"error": "unauthorized: send 'Authorization: Bearer <token>' "
                                           "(the value of SHADOW_API_TOKEN)"}, 401)
        return await handler(request)

    return auth


def _shown(text: str) -> str:
    """Request text as it can go into a JSON message (undecodable bytes as escapes)."""
    return text.encode("utf-8", "backslashreplace").decode()


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown route, wrong method, body too large...) in JSON."""
    where = f"{request.method} {_shown(request.path)}"
    if e.status == 404:
        endpoints = sorted({r.canonical for r in request.app.router.resources()})
        message = f"not found: {where} is not an endpoint of the reports API " \
                  f"(endpoints: {', '.join(endpoints)})"
    elif isinstance(e, web.HTTPMethodNotAllowed):
        message = f"method not allowed: {where}; this endpoint takes " \
                  f"{', '.join(sorted(e.allowed_methods))}"
    else:
        message = f"{e.reason}: {where}" + (f" ({_shown(e.text)})" if e.text else "")
    response = json_response({"error": message}, e.status)
    for name, value in e.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value  # Allow (405), ...
    return response


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error is JSON, {"error": ...}: aiohttp's refusals, and any failure of a handler
    (a store fault, a bug) as a 500 whose details and traceback stay in the server's log."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return _http_error(request, e)
    except Exception:
        log.exception("reports API: %s %s failed", request.method, _shown(request.path))
        return json_response({"error": "internal error: the reports API could not answer "
                                       f"{request.method} {_shown(request.path)}; the reason is "
                                       "in the comparer's log"}, 500)


@web.middleware
async def _loopback_host_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Without a token the API listens on loopback only; a Host that is not a loopback
    name means a web page reached it through DNS rebinding: refused."""
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    if not is_loopback(host):
        return json_response({"error": f"Host {request.host!r} is not a loopback name: without "
                                       "SHADOW_API_TOKEN the API answers only requests for "
                                       "127.0.0.1, localhost or ::1"}, 403)
    return await handler(request)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message}).decode(),
                              content_type="application/json")


def _window(request: web.Request) -> Window:
    """The report window asked for with `since`/`until` (shadow.windows: exact to the
    minute; the store rounds an edge in a compacted stretch to its bucket there, and each
    report says the window it covers); none: all time. A bad value is a 400 that says what
    is accepted."""
    try:
        return parse_window(request.query.get("since"), request.query.get("until"), time.time())
    except WindowError as e:
        raise _bad_request(str(e)) from e


def _segment(request: web.Request) -> str | None:
    """The segment asked for with `segment` (shadow.segments: "(none)" is the exchanges
    without one), as stored; None: every segment."""
    name = request.query.get("segment")
    if name is None:
        return None
    if not name or len(name) > MAX_CHARS:
        raise _bad_request(f"segment must be a segment's name (1 to {MAX_CHARS} characters, "
                           "as /api/segments lists them; (none): the exchanges without one)")
    return asked(name)


async def summary(request: web.Request) -> web.Response:
    data = await request.app[STORE_KEY].summary(_window(request), _segment(request))
    keys = request.app[KEYS_KEY]
    # --capture-bodies ...=raw: path globs whose bodies are stored unredacted (as configured
    # for this process; give every service the same --capture-bodies)
    data["raw_bodies"] = request.app[RAW_BODIES_KEY]
    try:
        r = request.app[REDIS_KEY]
        stats = await stats_totals(r, keys)  # every shard's counters, added up
        data["dropped_events"] = stats.get(DROPPED_EVENTS, 0)
        if UNCONFIRMED_EVENTS in stats:  # --publish-wait-replicas: events a failover may lose
            data["unconfirmed_events"] = stats[UNCONFIRMED_EVENTS]
        data["trimmed_unprocessed"] = {k.removeprefix(TRIMMED_UNPROCESSED): v
                                       for k, v in stats.items()
                                       if k.startswith(TRIMMED_UNPROCESSED)}
        data["trimmed_unread"] = {label: stats.get(TRIMMED_UNREAD + label, 0)
                                  for label in ("v1", "v2")}
        # over all shards (lengths and pending added up, the furthest behind), and each shard's
        data["streams"], shards = await streams_health(r, keys)
        data["stream_shards"] = keys.shards
        if keys.shards > 1:
            data["shards"] = shards
    except (RedisError, OSError):
        data["dropped_events"] = None
        data["warnings"] = ["Redis is unreachable: dropped_events unknown"]
    return json_response(data)


async def routes(request: web.Request) -> web.Response:
    data = await request.app[STORE_KEY].summary(_window(request), _segment(request))
    out: dict[str, Any] = {"routes": data["routes"], "window": data["window"]}
    if "segment" in data:
        out["segment"] = data["segment"]
    return json_response(out)


async def segments_endpoint(request: web.Request) -> web.Response:
    """Each segment counted in the window (--segment-by), most counted first."""
    store = request.app[STORE_KEY]
    window = await store.resolve(_window(request))  # as compacted
    listed = await store.segments(window)
    segmenting: dict[str, Any] = request.app[SEGMENTING_KEY]
    return json_response({**segmenting, "segments": listed,
                          "overflowed": sum(x["total"] for x in listed if x["segment"] == OTHER),
                          "window": window.doc()})


def _filters(request: web.Request, default_outcome: str | None) -> Filters:
    try:
        return parse_filters(dict(request.query), time.time(), default_outcome=default_outcome)
    except FilterError as e:
        raise _bad_request(str(e)) from e


async def mismatches(request: web.Request) -> web.Response:
    items, cursor = await request.app[STORE_KEY].list_exchanges(_filters(request, "mismatch"))
    return json_response({"items": items, "next": cursor})


async def exchanges(request: web.Request) -> web.Response:
    items, cursor = await request.app[STORE_KEY].list_exchanges(_filters(request, None))
    return json_response({"items": items, "next": cursor})


async def classes(request: web.Request) -> web.Response:
    window = await request.app[STORE_KEY].resolve(_window(request))  # as compacted
    segment = _segment(request)
    out: dict[str, Any] = {
        "classes": await request.app[STORE_KEY].classes(window=window, segment=segment),
        "window": window.doc()}
    if segment is not None:
        out["segment"] = request.query["segment"]
    return json_response(out)


async def set_class(request: web.Request) -> web.Response:
    signature = request.match_info["signature"]
    if request.content_type != "application/json":
        # a web page can send a cross-site form or text/plain POST without asking; JSON
        # needs a CORS preflight, which this API never grants
        return json_response({"error": "send the body as Content-Type: application/json"}, 415)
    try:
        body = await request.json()
    except ValueError:
        return json_response({"error": "expected a JSON body such as {\"status\": \"bug\", "
                                       "\"ticket\": \"https://...\"}"}, 400)
    status = body.get("status") if isinstance(body, dict) else None
    if status not in CLASS_STATUSES:
        return json_response({"error": f"status must be one of {', '.join(CLASS_STATUSES)}"}, 400)
    ticket, note, in_deploy = body.get("ticket"), body.get("note"), body.get("in_deploy")
    if not all(v is None or isinstance(v, str) for v in (ticket, note, in_deploy)):
        return json_response({"error": "ticket, note and in_deploy must be strings"}, 400)
    if in_deploy is not None and (status != CLASS_FIXED or not in_deploy
                                  or len(in_deploy) > MAX_TEXT):
        return json_response({"error": "in_deploy names the V2 version expected to fix the "
                                       "class: with status fixed only, 1 to "
                                       f"{MAX_TEXT} characters"}, 400)
    store = request.app[STORE_KEY]
    expected = None
    if status == CLASS_FIXED:  # the deploy it expects its fix in: that version's, else the latest
        found = await store.deploys("v2", limit=10_000, version=in_deploy) if in_deploy \
            else await store.deploys("v2", limit=1)
        first = min(found, key=lambda d: (d["ts"], d["id"])) if found else None
        expected = fixed_in(first, in_deploy)
    updated = await store.set_class_status(signature, status, ticket, note, expected)
    if updated is None:
        return json_response({"error": f"no mismatch class with signature {signature!r}"}, 404)
    return json_response(updated)


async def rules_endpoint(request: web.Request) -> web.Response:
    ruleset: RuleSet = request.app[RULES_KEY]()
    hits = await request.app[STORE_KEY].rule_hits()
    today = datetime.date.today()
    return json_response({"source": ruleset.source or None, "routes": list(ruleset.routes),
                          "rules": [{**r.describe(), "expired": r.expired(today),
                                     "suppressed": hits.get(r.id, 0)} for r in ruleset.rules]})


async def suggestions_endpoint(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    summary = await store.summary()
    examples = []
    for cls in (await store.classes())[:50]:
        x = await store.get(cls["examples"][0]) if cls["examples"] else None
        if x is not None:
            examples.append((cls, x.diff))
    found = suggest(summary["routes"], examples)
    return json_response({"suggestions": found, "toml": to_toml(found)})


async def verdict_endpoint(request: web.Request) -> web.Response:
    q = request.query
    try:
        min_match = float(q.get("min_match", str(MIN_MATCH_PCT))) / 100
        min_samples = int(q.get("min_samples", str(MIN_SAMPLES)))
    except ValueError:
        return json_response({"error": "min_match must be a percentage (99.9) and min_samples "
                                       "a whole number"}, 400)
    if not 0 < min_match <= 1 or not 0 <= min_samples <= MAX_MIN_SAMPLES:
        return json_response({"error": "min_match must be in (0, 100] and min_samples from 0 to "
                                       f"{MAX_MIN_SAMPLES}"}, 400)
    try:
        gates = _verdict_gates(q)
    except ValueError as e:
        return json_response({"error": str(e)}, 400)
    segment = _segment(request)
    window, since = await _verdict_window(request)
    evidence = await request.app[STORE_KEY].route_evidence(window, segment)
    out = {**verdict(evidence, min_match=min_match, min_samples=min_samples,
                     exclude=q.getall("exclude", []), **gates),
           "window": {**window.doc(), "from_deploy": since}}
    if segment is not None:
        out["segment"] = q["segment"]
    return json_response(out)


async def _verdict_window(request: web.Request) -> tuple[Window, Deploy | None]:
    """The verdict's window: `since`/`until` when given, all time with `all_time=true`,
    else from the latest V2 deploy marker on (all time when there is none), and that deploy."""
    q, store = request.query, request.app[STORE_KEY]
    if q.get("since") or q.get("until") or q.get("all_time", "").lower() in ("1", "true", "yes"):
        return await store.resolve(_window(request)), None  # as compacted
    return await default_verdict_window(store)


async def add_deploy(request: web.Request) -> web.Response:
    """A deploy marker: {"target": "v2", "version": "2.4.1", "note": "...", "at": "..."}
    (target v2 by default; `at`: when it went live, as `since` takes it, default now)."""
    if request.content_type != "application/json":  # no cross-site form posts (set_class)
        return json_response({"error": "send the body as Content-Type: application/json"}, 415)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return json_response({"error": "expected a JSON body such as {\"target\": \"v2\", "
                                       "\"version\": \"2.4.1\", \"note\": \"fixes the totals\"}"},
                             400)
    now = time.time()
    try:
        at = body.get("at")
        ts = now if at is None else parse_instant(str(at), now, "at")
        if ts > now + 60:
            raise DeployError("a deploy marker cannot be in the future (at)")
        marker = deploy(new_id(), ts, str(body.get("target") or "v2"), body.get("version"),
                        body.get("note"))
    except (DeployError, WindowError) as e:
        return json_response({"error": str(e)}, 400)
    await request.app[STORE_KEY].add_deploy(marker)
    return json_response(marker, 201)


async def list_deploys(request: web.Request) -> web.Response:
    target = request.query.get("target") or None
    if target is not None and target not in TARGETS:
        return json_response({"error": f"target must be one of {', '.join(TARGETS)}"}, 400)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if not 0 < limit <= 10_000:
        return json_response({"error": "limit must be a whole number from 1 to 10000"}, 400)
    return json_response({"deploys": await request.app[STORE_KEY].deploys(target, limit)})


async def timeline_endpoint(request: web.Request) -> web.Response:
    """The window's counts over time (comparer.timeline): `step` (300, 5m, 1h; default about
    120 points), `route` (/users/{id} or GET /users/{id}: only that route's series and
    classes)."""
    try:
        step = parse_step(request.query.get("step"))
    except TimelineError as e:
        raise _bad_request(str(e)) from e
    data = await request.app[STORE_KEY].timeline(_window(request), step)
    return json_response(view(data, request.query.get("route") or None))


def _verdict_gates(q: Any) -> dict[str, float]:
    """The verdict's error and latency gates from the query (defaults: shadow.stats)."""
    gates = {"max_v2_error_rate": parse_rate(q.get("max_v2_error_rate", str(MAX_V2_ERROR_RATE)))}
    for name, default in (("max_latency_ratio", MAX_LATENCY_RATIO),
                          ("latency_floor_ms", LATENCY_FLOOR_MS)):
        try:
            value = float(q.get(name, str(default)))
        except ValueError:
            raise ValueError(f"{name} must be a number") from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be a number >= 0")
        gates[name] = value
    return gates


async def exchange(request: web.Request) -> web.Response:
    key = request.match_info["id"]
    x = await request.app[STORE_KEY].get(key)
    if x is None:
        return json_response({"error": f"no exchange with id or request id {key!r} (counted "
                                       "exchanges whose documents the keep policy dropped are "
                                       "not kept: --keep all keeps every one)"}, 404)
    return json_response(exchange_for_display(x))


async def openapi_endpoint(request: web.Request) -> web.Response:
    """This API described in OpenAPI 3.1 (comparer/openapi.py)."""
    return web.Response(body=openapi.document_bytes(), content_type="application/json")


async def export_endpoint(request: web.Request) -> web.StreamResponse:
    """Stored exchanges as HAR or JSON lines, streamed (comparer/export.py)."""
    return await export.respond(request, request.app[STORE_KEY])


async def firehose_endpoint(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `data:` line per compared exchange (redacted), live.

    Filters: outcome=mismatch,v2_error  route=/users/*  method=GET. A client that reads
    too slowly loses the oldest items and gets an `event: dropped` with the count."""
    q = request.query
    outcomes = frozenset(o.strip() for o in q.get("outcome", "").split(",") if o.strip())
    if outcomes - OUTCOMES:
        return json_response({"error": f"outcome must be among {', '.join(sorted(OUTCOMES))}"},
                             400)
    route, method = q.get("route") or None, q.get("method") or None
    filters = (lambda it: wanted(it, outcomes=outcomes, route=route, method=method)) \
        if outcomes or route or method else None
    hub = request.app[HUB_KEY]
    if hub.full:
        return json_response({"error": f"{hub.max_clients} live clients are already following "
                                       "the firehose; close one, or subscribe to the Redis "
                                       "channel directly"}, 503)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        async with hub.listen(filters) as listener:
            await response.write(b": shadow firehose: one event per compared exchange\n\n")
            quiet_since = time.monotonic()
            while not listener.closed:
                # wake every second: a client that went away frees its place within a second
                raw_items = await listener.take(1.0)
                if request.transport is None or request.transport.is_closing():
                    break
                out: list[bytes] = []
                if listener.dropped:
                    out.append(b"event: dropped\ndata: %d\n\n" % listener.dropped)
                    listener.dropped = 0
                out.extend(b"data: " + raw + b"\n\n" for raw in raw_items)
                if not out and time.monotonic() - quiet_since >= KEEPALIVE_S:
                    out.append(b": keepalive\n\n")
                if out:
                    await response.write(b"".join(out))
                    quiet_since = time.monotonic()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    except Exception:  # the head is sent: no JSON error can follow, the stream just ends
        log.exception("reports API: the firehose stream failed")
    return response


async def metrics_endpoint(request: web.Request) -> web.Response:
    r, keys = request.app[REDIS_KEY], request.app[KEYS_KEY]
    try:
        for stream in keys.event_streams:  # labelled by stream: each shard's apart
            health = await stream_health(r, stream)
            metrics.STREAM_LENGTH.labels(stream).set(health["length"])
            for name, g in health["groups"].items():
                metrics.STREAM_PENDING.labels(stream, name).set(g["pending"])
                metrics.STREAM_BEHIND.labels(stream, name).set(g["behind_s"])
                if g["lag"] is not None:
                    metrics.STREAM_LAG.labels(stream, name).set(g["lag"])
    except (RedisError, OSError):
        pass
    resp = web.Response(body=metrics.exposition())
    resp.content_type = metrics.CONTENT_TYPE
    return resp


DASHBOARD = (Path(__file__).parent / "static" / "dashboard.html").read_bytes()


async def index(request: web.Request) -> web.Response:
    """The dashboard: one static page that reads this API (the token stays in the browser)."""
    return web.Response(body=DASHBOARD, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})


def build_app(settings: Settings, store: Store, redis: aioredis.Redis, keys: Keys,
              rules: Callable[[], RuleSet] | None = None) -> web.Application:
    access = _auth_middleware(settings.api_token, settings.metrics_open) \
        if settings.api_token else _loopback_host_only
    app = web.Application(middlewares=[_json_errors, access])  # errors: outermost
    app[STORE_KEY] = store
    app[REDIS_KEY] = redis
    app[KEYS_KEY] = keys
    app[RAW_BODIES_KEY] = [glob for glob, mode in parse_capture_bodies(settings.capture_bodies)
                           if mode == RAW]
    if rules is None:
        loaded = load_rules_file(settings.rules)
        rules = lambda: loaded  # noqa: E731
    app[RULES_KEY] = rules
    app[HUB_KEY] = hub = FirehoseHub(redis, keys.firehose)
    app[SEGMENTING_KEY] = {"segment_by": settings.segment_by,
                           "max_segments": settings.max_segments}

    async def close_firehose(_: web.Application) -> None:
        await hub.close()  # long-lived streams end now, not after the shutdown timeout

    app.on_shutdown.append(close_firehose)
    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary)
    app.router.add_get("/api/routes", routes)
    app.router.add_get("/api/segments", segments_endpoint)
    app.router.add_get("/api/mismatches", mismatches)
    app.router.add_get("/api/exchanges", exchanges)
    app.router.add_get("/api/classes", classes)
    app.router.add_post("/api/classes/{signature}", set_class)
    app.router.add_get("/api/verdict", verdict_endpoint)
    app.router.add_get("/api/deploys", list_deploys)
    app.router.add_get("/api/timeline", timeline_endpoint)
    app.router.add_post("/api/deploys", add_deploy)
    app.router.add_get("/api/rules", rules_endpoint)
    app.router.add_get("/api/suggestions", suggestions_endpoint)
    app.router.add_get("/api/exchanges/{id}", exchange)
    app.router.add_get("/api/export", export_endpoint)
    app.router.add_get("/api/openapi.json", openapi_endpoint)
    app.router.add_get("/api/firehose", firehose_endpoint)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


class ReportsApi:
    """`async with ReportsApi(...) as api:` serves on `api.port`."""

    def __init__(self, settings: Settings, store: Store, redis: aioredis.Redis, *,
                 keys: Keys | None = None, sock: socket.socket | None = None,
                 rules: Callable[[], RuleSet] | None = None) -> None:
        check_access(settings)
        self.settings = settings
        self.app = build_app(settings, store, redis, keys or keys_for(settings), rules)
        self._sock = sock
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                                     shutdown_timeout=5.0)
        self.port = await start_site(self._runner, self._sock or self.settings.api, "--api")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ReportsApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["COMPARERS", "ReportsApi", "build_app"]
