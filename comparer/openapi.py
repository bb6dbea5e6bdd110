"""The reports API described in OpenAPI 3.1: every endpoint, parameter, error and response
schema, served at /api/openapi.json (with the same access rule as every /api route).

Built from the same constants the API checks its input with (outcomes, class statuses,
deploy targets, limits), so the two cannot drift apart on those; tests/test_openapi.py checks
that every route the API serves is described here, and tests/system/test_api_contract.py
checks with schemathesis, against a running `shadow up`, that every answer conforms.

Response objects are open (additionalProperties allowed): fields are added freely, never
renamed (DESIGN.md), and the ones listed as required are the ones clients can count on.
"""

from __future__ import annotations

import functools
from typing import Any

from shadow import __version__, codec
from shadow.deploys import MAX_TEXT, TARGETS
from shadow.filters import KNOWN, MAX_LIMIT, MAX_URL_TEXT
from shadow.model import CLASS_STATUSES, LIVE, OUTCOMES
from shadow.segments import MAX_CHARS, NONE_NAME, OTHER
from shadow.stats import (
    LATENCY_FLOOR_MS,
    MAX_LATENCY_RATIO,
    MAX_V2_ERROR_RATE,
    MIN_MATCH_PCT,
    MIN_SAMPLES,
)
from shadow.windows import ACCEPTED

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}


def null(schema: Schema) -> Schema:
    """`schema` or null."""
    if "$ref" in schema or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def mapping(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
        description: str | None = None) -> Schema:
    out: Schema = {"type": "object", "required": list(required),
                   "properties": {**required, **(optional or {})}}
    if description:
        out["description"] = description
    return out


def _schemas() -> dict[str, Schema]:
    window = {
        "since": null(STR), "until": null(STR), "since_ts": null(INT), "until_ts": null(INT),
        "bucket_s": INT, "since_bucket_s": INT, "until_bucket_s": INT, "rounding": STR}
    counts = {name: COUNT for name in (
        "total", "compared", "matched", "mismatched", "skipped", "v2_errors", "pending",
        "v1_only", "v1_missing", "compare_errors")}
    counts["match_rate"] = null(NUM)
    noise = obj({"path": STR, "count": COUNT, "observed": COUNT, "rate": null(NUM)})
    headers = array({"type": "array", "items": STR, "minItems": 2, "maxItems": 3,
                     "description": "[name, value], or [name, value shown with U+FFFD, base64 "
                                    "of the exact bytes] for a value that is not UTF-8"})
    answer_flags = {"skipped": STR, "target": STR, "incomplete": STR, "digest": STR}
    return {
        "Error": obj({"error": {**STR, "description": "what went wrong and what to do"}},
                     description="Every error of the API, whatever its status."),
        "Window": obj(window, description="The time window a report covers (null: open on "
                                          "that side), exact to its buckets: " + ACCEPTED),
        "Percentiles": {"type": "object", "description": "milliseconds; null without samples",
                        "properties": {q: null(NUM) for q in ("p50", "p95", "p99")},
                        "additionalProperties": null(NUM)},
        "RouteSummary": obj({
            **counts, "method": STR, "route": STR, "v1_latency_ms": ref("Percentiles"),
            "v2_latency_ms": ref("Percentiles"), "classes": COUNT,
            "status_pairs": array(obj({"v1": null(INT), "v2": null(INT), "count": COUNT})),
            "top_diffs": array(obj({"path": STR, "kind": STR, "count": COUNT})),
            "noise": array(noise), "suspected_noise": array(noise)},
            {"kept": COUNT}),
        "Summary": obj({
            **counts, "stale": COUNT, "routes_overflowed": COUNT,
            "routes": array(ref("RouteSummary")), "window": ref("Window")}, {
            "kept": COUNT,
            "dropped_events": {**null(COUNT), "description": "null when Redis is unreachable"},
            "trimmed_unprocessed": mapping(COUNT), "trimmed_unread": mapping(COUNT),
            "raw_bodies": array(STR), "streams": mapping(ANY), "warnings": array(STR),
            "segment": {**STR, "description": "the segment counted (segment=): counts, rates "
                        "and classes are its own; latency, status pairs, noise and documents "
                        "held the route's over every segment"}}),
        "Routes": obj({"routes": array(ref("RouteSummary")), "window": ref("Window")},
                      {"segment": STR}),
        "SegmentSummary": obj({**counts, "segment": STR, "routes": COUNT}),
        "Segments": obj({
            "segments": array(ref("SegmentSummary")), "window": ref("Window"),
            "segment_by": {**null(STR), "description": "--segment-by (null: not set)"},
            "max_segments": COUNT,
            "overflowed": {**COUNT, "description": f"exchanges counted as {OTHER} (past "
                                                   "--max-segments)"}},
            description=f"Each segment counted in the window. {NONE_NAME}: exchanges without "
                        f"a segment value; {OTHER}: the values past --max-segments."),
        "Point": obj({**counts, "ts": {**INT, "description": "the step's start, unix seconds"}}),
        "Timeline": obj({
            "window": ref("Window"), "step_s": INT, "from_ts": null(INT), "until_ts": null(INT),
            "points": array(ref("Point")),
            "routes": array(obj({"method": STR, "route": STR, "total": COUNT,
                                 "mismatched": COUNT, "points": array(ref("Point"))})),
            "classes": array(obj({
                "signature": STR, "method": STR, "route": STR, "status": STR,
                "paths": array(ref("PathKind")), "count": COUNT, "count_all_time": COUNT,
                "first_seen": null(NUM), "last_seen": null(NUM), "reopened_at": null(NUM),
                "points": {**array({"type": "array", "items": INT, "minItems": 2,
                                    "maxItems": 2}),
                           "description": "[step start, mismatches of this class]"}})),
            "classes_left_out": COUNT},
            description="The window's counts over time, overall, per route and per class "
                        "(only steps with traffic are listed)."),
        "PathKind": obj({"path": STR, "kind": STR}),
        "MismatchClass": obj({
            "signature": STR, "method": STR, "route": STR, "count": COUNT,
            "paths": array(ref("PathKind")), "status": {"enum": list(CLASS_STATUSES)},
            "examples": {**array(STR), "description": "exchange ids"},
            "first_seen": null(NUM), "last_seen": null(NUM), "ticket": null(STR),
            "note": null(STR), "reopened": BOOL, "reopened_at": null(NUM)},
            {"fixed_in": {**null(ref("FixedIn")), "description": "marked fixed: the V2 deploy "
                          "its fix is expected in"},
             "reopened_after": {**null(ref("FixedIn")), "description": "reopened: the deploy "
                                "that was expected to fix it"}}),
        "FixedIn": obj({"id": null(STR), "version": null(STR),
                        "ts": {**null(NUM), "description": "when that deploy went live (null: "
                               "no marker for that version yet)"}}),
        "Classes": obj({"classes": array(ref("MismatchClass")), "window": ref("Window")},
                       {"segment": STR}),
        "ClassTriage": obj({"status": {"enum": list(CLASS_STATUSES)}},
                           {"ticket": null(STR), "note": null(STR),
                            "in_deploy": {**null({**STR, "minLength": 1, "maxLength": MAX_TEXT}),
                                          "description": "with status fixed: the V2 version "
                                          "expected to fix it (default: the latest V2 deploy)"}}),
        "ExchangeSummary": obj({
            "id": STR, "request_id": null(STR), "ts": null(NUM), "method": null(STR),
            "url": null(STR), "route": null(STR), "outcome": null(STR),
            "v1_status": null(INT), "v2_status": null(INT), "signature": null(STR),
            "flags": array(STR), "compared_at": null(NUM), "replay_delay_ms": null(NUM),
            "diff": {**array(ref("PathKind")), "description": "the first ten differences"}}),
        "ExchangePage": obj({
            "items": array(ref("ExchangeSummary")),
            "next": {**null(STR), "description": "pass as `cursor` for the next page; null: "
                                                 "this was the last"}}),
        "Difference": obj({"path": STR, "kind": STR, "v1": ANY, "v2": ANY}),
        "Body": obj({"encoding": {"enum": ["utf-8", "base64"]}, "truncated": BOOL},
                    {"text": STR, "base64": STR},
                    description="`text` when the body is UTF-8, else `base64`"),
        "RequestPart": obj({
            "method": STR, "url": STR, "headers": headers, "body": ref("Body"),
            "body_size": COUNT, "body_truncated": BOOL}, {"client": STR, "scheme": STR}),
        "AnswerPart": obj({
            "status": null(INT), "headers": headers, "body": ref("Body"), "body_size": COUNT,
            "body_truncated": BOOL, "latency_ms": null(NUM), "error": null(STR)},
            answer_flags),
        "Exchange": obj({
            "id": STR, "request_id": null(STR), "ts": null(NUM), "method": null(STR),
            "url": null(STR), "route": null(STR), "outcome": {"enum": list(OUTCOMES)},
            "signature": null(STR), "flags": array(STR), "compared_at": null(NUM),
            "request": null(ref("RequestPart")), "v1": null(ref("AnswerPart")),
            "v2": null(ref("AnswerPart")), "v1_secondary": null(ref("AnswerPart")),
            "diff": array(ref("Difference")), "noise": array(ref("Difference")),
            "replay_delay_ms": null(NUM)},
            description="One exchange, bodies decoded for display (as stored: redacted)."),
        "VerdictRoute": obj({
            "method": STR, "route": STR, "ready": BOOL, "reason": STR, "reasons": array(STR),
            "samples": COUNT, "compared": COUNT, "matched": COUNT, "accepted": COUNT,
            "match_rate": null(NUM), "match_rate_lower_bound": NUM,
            "clean_samples_needed": null(INT), "v2_errors": COUNT,
            "v2_error_kinds": mapping(COUNT), "v2_error_rate": NUM, "compare_errors": COUNT,
            "latency": obj({"v1_ms": ref("Percentiles"), "v2_ms": ref("Percentiles"),
                            "p95_ratio": null(NUM), "p99_ratio": null(NUM), "judged": BOOL}),
            "classes": array(obj({"signature": STR, "count": COUNT, "status": STR,
                                  "ticket": null(STR)}))}),
        "Verdict": obj({
            "ready": BOOL, "routes": array(ref("VerdictRoute")), "min_match": NUM,
            "min_samples": COUNT, "max_v2_error_rate": NUM, "max_latency_ratio": NUM,
            "latency_floor_ms": NUM,
            "window": {"allOf": [ref("Window"), obj({"from_deploy": null(ref("Deploy"))})]}},
            {"segment": STR}),
        "Deploy": obj({"id": STR, "ts": NUM, "at": null(STR), "target": {"enum": list(TARGETS)},
                       "version": null(STR), "note": null(STR)}),
        "DeployInput": obj({}, {
            "target": {"enum": list(TARGETS), "default": "v2"},
            "version": null({**STR, "maxLength": MAX_TEXT}),
            "note": null({**STR, "maxLength": MAX_TEXT}),
            "at": {"type": ["string", "number"], "description": "when it went live (default "
                   "now, never in the future): " + ACCEPTED}}),
        "Deploys": obj({"deploys": array(ref("Deploy"))}),
        "Rules": obj({
            "source": null(STR), "routes": array(STR),
            "rules": array(obj({
                "id": STR, "line": INT, "route": STR, "method": null(STR), "reason": null(STR),
                "owner": null(STR), "expires": null(STR), "expired": BOOL,
                "suppressed": COUNT}))}),
        "Suggestions": obj({
            "suggestions": array(obj({"method": STR, "route": STR, "path": STR,
                                      "rule": {"enum": ["ignore", "normalize"]},
                                      "evidence": STR}, {"pattern": STR})),
            "toml": STR}),
        "HarResponse": obj({
            "status": INT, "statusText": STR, "httpVersion": STR, "cookies": array(ANY),
            "headers": array(obj({"name": STR, "value": STR})),
            "content": obj({"size": INT, "mimeType": STR}, {"text": STR, "encoding": STR}),
            "redirectURL": STR, "headersSize": INT, "bodySize": INT}),
        "HarEntry": obj({
            "startedDateTime": STR, "time": NUM, "request": obj({
                "method": STR, "url": STR, "httpVersion": STR, "cookies": array(ANY),
                "headers": array(obj({"name": STR, "value": STR})),
                "queryString": array(obj({"name": STR, "value": STR})), "headersSize": INT,
                "bodySize": INT}),
            "response": ref("HarResponse"), "cache": {"type": "object"},
            "timings": obj({"send": NUM, "wait": NUM, "receive": NUM}),
            "_v2": {**ref("HarResponse"), "description": "V2's answer"},
            "_shadow": obj({"id": STR, "outcome": STR, "diff": array(ref("Difference"))})}),
        "Har": obj({"log": obj({
            "version": {"const": "1.2"}, "creator": obj({"name": STR, "version": STR}),
            "entries": array(ref("HarEntry"))})},
            description="HAR 1.2: V1's answer as each entry's `response`, V2's as `_v2`, the "
                        "outcome and differences as `_shadow`."),
    }


def _error(description: str) -> Schema:
    return {"description": description,
            "content": {"application/json": {"schema": ref("Error")}}}


def _json(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description, **extra}


TIME_EXAMPLES = {"relative": {"value": "24h"}, "iso": {"value": "2026-12-02T11:00:00Z"}}
# the forms shadow.windows.parse_instant reads (it also takes what Python's float() and
# datetime.fromisoformat() do): unix seconds, a duration ago, an ISO 8601 date or time
TIME: Schema = {"type": "string", "pattern": (
    r"^(-?[0-9]+(\.[0-9]+)?|[0-9]+(\.[0-9]+)? ?[smhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)$")}
SEGMENT = _query("segment", {"type": "string", "minLength": 1, "maxLength": MAX_CHARS},
                 "only this segment (--segment-by), as /api/segments names it; "
                 f"{NONE_NAME}: the exchanges without one", examples={"tenant": {"value": "acme"}})
WINDOW = [
    _query("since", TIME, "only exchanges received from this time on (rounded down to the "
                          "bucket): " + ACCEPTED, examples=TIME_EXAMPLES),
    _query("until", TIME, "only exchanges received before this time (rounded up to the "
                          "bucket); same forms as since", examples=TIME_EXAMPLES),
]


def _filters(outcome_default: str | None, *, paged: bool = True) -> list[Schema]:
    """The listing filters (shadow.filters.KNOWN, in its order); without `paged`, no limit."""
    outcome: Schema = {"enum": list(OUTCOMES)}
    if outcome_default:
        outcome["default"] = outcome_default
    window = {p["name"]: p for p in WINDOW}
    described = {
        "outcome": _query("outcome", outcome, "only this outcome" + (
            f" (default {outcome_default})" if outcome_default else " (default: every one)")),
        "route": _query("route", STR, "only this route template, e.g. /users/{id}"),
        "method": _query("method", {"type": "string", "pattern": "^[A-Za-z]{1,20}$"},
                         "only this HTTP method (any case)"),
        "v1_status": _query("v1_status", {"type": "integer", "minimum": 100, "maximum": 599},
                            "only exchanges V1 answered with this status"),
        "v2_status": _query("v2_status", {"type": "integer", "minimum": 100, "maximum": 599},
                            "only exchanges V2 answered with this status"),
        "path": _query("path", STR, "only exchanges with a differing path containing this text"),
        "url": _query("url", {"type": "string", "maxLength": MAX_URL_TEXT},
                      "only exchanges whose URL (path and query, as stored) contains this text"),
        "signature": _query("signature", {"type": "string", "pattern": "^[0-9a-f]{4,64}$"},
                            "only this mismatch class"),
        "since": window["since"], "until": window["until"],
        "cursor": _query("cursor", {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,64}$"},
                         "the `next` of the previous page: items older than it"),
        "limit": _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                  "default": 50}, "items per page"),
    }
    # a filter added to shadow.filters without a description here is still documented
    return [described.get(name, _query(name, STR, f"the {name} filter"))
            for name in KNOWN if paged or name != "limit"]


COMMON = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
    "500": {"$ref": "#/components/responses/ServerError"},
}
BAD = {"400": {"$ref": "#/components/responses/BadRequest"}}


def _op(op_id: str, summary: str, responses: dict[str, Schema], *,
        parameters: list[Schema] | None = None, description: str | None = None,
        body: Schema | None = None, tag: str = "reports", secured: bool = True) -> Schema:
    out: Schema = {"operationId": op_id, "summary": summary, "tags": [tag],
                   "responses": {**responses, **COMMON}}
    if description:
        out["description"] = description
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": body}}}
        out["responses"]["415"] = _error("the body was not sent as application/json")
    if not secured:
        out["security"] = []
        for status in ("401",):
            out["responses"].pop(status)
    return out


def _paths() -> dict[str, Schema]:
    verdict_params = [
        _query("min_match", {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                             "default": MIN_MATCH_PCT}, "required match rate, percent"),
        _query("min_samples", {"type": "integer", "minimum": 0, "maximum": 10**9,
                               "default": MIN_SAMPLES},
               "clean samples required per route"),
        _query("max_v2_error_rate", {"type": "string", "default": str(MAX_V2_ERROR_RATE)},
               "most V2 errors per V2 error or clean sample, a fraction (0.001) or a "
               "percentage (0.1%)", examples={"fraction": {"value": "0.001"},
                                              "percent": {"value": "0.1%"}}),
        _query("max_latency_ratio", {"type": "number", "minimum": 0,
                                     "default": MAX_LATENCY_RATIO},
               "most V2 p99 latency as a multiple of V1's"),
        _query("latency_floor_ms", {"type": "number", "minimum": 0,
                                    "default": LATENCY_FLOOR_MS},
               "the latency gate is ignored while V2's p99 is under this"),
        _query("exclude", array(STR), "leave routes out ('/health' or 'GET /health')",
               style="form", explode=True),
        *WINDOW,
        _query("all_time", {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
               "judge all the evidence (by default the window starts at the latest V2 deploy "
               "marker; since/until override it)"),
        SEGMENT,
    ]
    not_found = {"404": _error("no such exchange, class or resource")}
    return {
        "/": {"get": _op("dashboard", "the dashboard (one static page that reads this API)",
                         {"200": {"description": "the page",
                                  "content": {"text/html": {"schema": STR}}}},
                         tag="pages", secured=False)},
        "/api/openapi.json": {"get": _op(
            "openapi", "this description of the API",
            {"200": _json({"type": "object"}, "OpenAPI 3.1")}, tag="meta")},
        "/api/summary": {"get": _op(
            "summary", "totals and per-route figures", {"200": _json(ref("Summary")), **BAD},
            parameters=[*WINDOW, SEGMENT], description="Counted from rollups: every exchange, "
                                                       "whether its document is kept or not.")},
        "/api/routes": {"get": _op(
            "routes", "per-route figures", {"200": _json(ref("Routes")), **BAD},
            parameters=[*WINDOW, SEGMENT])},
        "/api/segments": {"get": _op(
            "segments", "each segment (--segment-by) with its counts, most counted first",
            {"200": _json(ref("Segments")), **BAD}, parameters=WINDOW)},
        "/api/timeline": {"get": _op(
            "timeline", "counts over time: overall, per route and per mismatch class",
            {"200": _json(ref("Timeline")), **BAD},
            parameters=[*WINDOW,
                        _query("step", STR, "the points' step: seconds (300) or a duration "
                                            "(90s, 5m, 1h, 1d, 1w), at least a minute; default "
                                            "about 120 points",
                               examples={"duration": {"value": "5m"}}),
                        _query("route", STR, "only this route's series and classes: "
                                             "/users/{id} or GET /users/{id}")])},
        "/api/classes": {"get": _op(
            "classes", "mismatch classes, most counted first",
            {"200": _json(ref("Classes")), **BAD}, parameters=[*WINDOW, SEGMENT])},
        "/api/classes/{signature}": {"post": _op(
            "triageClass", "set a mismatch class's status (and ticket, note)",
            {"200": _json(ref("MismatchClass")), **BAD, **not_found},
            parameters=[{"name": "signature", "in": "path", "required": True, "schema": STR}],
            body=ref("ClassTriage"))},
        "/api/mismatches": {"get": _op(
            "mismatches", "mismatching exchanges, newest first (cursor pagination)",
            {"200": _json(ref("ExchangePage")), **BAD}, parameters=_filters("mismatch"))},
        "/api/exchanges": {"get": _op(
            "exchanges", "exchanges of any outcome, newest first (cursor pagination)",
            {"200": _json(ref("ExchangePage")), **BAD}, parameters=_filters(None))},
        "/api/exchanges/{id}": {"get": _op(
            "exchange", "one exchange by exchange id or X-Request-Id",
            {"200": _json(ref("Exchange")), **not_found},
            parameters=[{"name": "id", "in": "path", "required": True, "schema": STR}])},
        "/api/export": {"get": _op(
            "export", "stored exchanges as a HAR 1.2 file or JSON lines, streamed",
            {"200": {"description": "the file (chunked), as an attachment",
                     "content": {"application/json": {"schema": ref("Har")},
                                 "application/x-ndjson": {"schema": {
                                     **STR, "description": "one Exchange document (as "
                                                           "/api/exchanges/{id}) per line"}}}},
             **BAD},
            parameters=[_query("format", {"enum": ["har", "jsonl"], "default": "har"},
                               "har: HAR 1.2; jsonl: one exchange per line"),
                        *_filters(None, paged=False),
                        _query("limit", {"type": "integer", "minimum": 1},
                               "at most this many exchanges (default: every one)")],
            description="The filters of /api/mismatches, every outcome unless `outcome` is "
                        "given. Streamed a page of the store at a time: memory stays the same "
                        "for any number of exchanges. A failure half-way ends the connection "
                        "before the chunked body's end, so a cut file is never taken for a "
                        "whole one. Bodies as stored: redacted.")},
        "/api/verdict": {"get": _op(
            "verdict", "can we cut over? each route's readiness and the reasons",
            {"200": _json(ref("Verdict")), **BAD}, parameters=verdict_params)},
        "/api/deploys": {
            "get": _op("deploys", "deploy markers, latest first",
                       {"200": _json(ref("Deploys")), **BAD},
                       parameters=[_query("target", {"enum": list(TARGETS)}, "only this target"),
                                   _query("limit", {"type": "integer", "minimum": 1,
                                                    "maximum": 10_000, "default": 100},
                                          "at most this many")]),
            "post": _op("addDeploy", "mark a deploy: the verdict's window starts there",
                        {"201": _json(ref("Deploy"), "recorded"), **BAD},
                        body=ref("DeployInput"))},
        "/api/rules": {"get": _op("rules", "the comparison rules in force and what each hid",
                                  {"200": _json(ref("Rules"))})},
        "/api/suggestions": {"get": _op(
            "suggestions", "proposed rules from noise evidence (never applied)",
            {"200": _json(ref("Suggestions"))})},
        "/api/firehose": {"get": _op(
            "firehose", "the live, redacted comparisons (server-sent events)",
            {"200": {"description": "one `data:` line (an exchange summary as JSON) per "
                                    "compared exchange; `event: dropped` with a count when the "
                                    "client reads too slowly",
                     "content": {"text/event-stream": {"schema": STR}}},
             **BAD, "503": _error("too many live clients already")},
            parameters=[
                _query("outcome", STR, f"only these outcomes, comma-separated ({', '.join(LIVE)})"),
                _query("route", STR, "only routes matching this glob, e.g. /users/*"),
                _query("method", STR, "only this HTTP method")])},
        "/metrics": {"get": _op(
            "metrics", "Prometheus metrics",
            {"200": {"description": "the text exposition format",
                     "content": {"text/plain": {"schema": STR}}}},
            tag="meta", description="Needs the token like /api when one is set, unless the "
                                    "comparer runs with --metrics-open.")},
    }


DESCRIPTION = """\
The reports API of shadow's comparer: what V1 and V2 answered to the same live requests, \
how they differ, and whether V2 is ready for the cutover. JSON everywhere.

**Access.** With SHADOW_API_TOKEN set, every endpoint but the dashboard page needs \
`Authorization: Bearer <token>` (401 otherwise); without one the API listens on loopback \
only and answers only requests whose Host is a loopback name (403 otherwise).

**Windows.** `since`/`until` take unix seconds, ISO 8601 UTC (`2026-12-02T11:00:00Z`) or a \
duration ago (`15m`, `24h`, `7d`); reports are exact to their rollup bucket and say the \
window they cover.

**Pagination.** Listings return `{"items": [...], "next": cursor}`: pass `cursor=<next>` for \
the following page until `next` is null. New exchanges never shift a page.

**Errors.** Every error is `{"error": "..."}` saying what went wrong and what to do: 400 for \
a bad parameter, 401, 403, 404 for an unknown exchange, class or endpoint, 405 for a method \
an endpoint does not take (with `Allow`), 415 for a body that is not JSON, 500 with the \
reason in the comparer's log.

Everything shown is as stored: secrets redacted by the proxy at the source."""


@functools.cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "shadow reports API", "version": __version__,
                 "description": DESCRIPTION,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "servers": [{"url": "/", "description": "the comparer serving this document"}],
        "tags": [{"name": "reports", "description": "figures, classes, exchanges, verdict"},
                 {"name": "meta", "description": "this description and Prometheus metrics"},
                 {"name": "pages", "description": "the dashboard"}],
        "security": [{"bearerAuth": []}, {}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "the value of SHADOW_API_TOKEN; required whenever one is set"}},
            "responses": {
                "BadRequest": {
                    "description": "a parameter or the body is not valid: the message says "
                                   "which and what is accepted (text/plain only when the HTTP "
                                   "server itself cannot read the request: a request line or "
                                   "a header longer than 8190 bytes)",
                    "content": {"application/json": {"schema": ref("Error")},
                                "text/plain": {"schema": STR}}},
                "Unauthorized": _error("SHADOW_API_TOKEN is set and the request did not send "
                                       "it as a bearer token"),
                "Forbidden": _error("without a token, only requests for a loopback Host are "
                                    "answered (DNS rebinding guard)"),
                "NotFound": _error("no such endpoint"),
                "MethodNotAllowed": {**_error("the endpoint does not take this method"),
                                     "headers": {"Allow": {"schema": STR,
                                                           "description": "the methods it "
                                                                          "takes"}}},
                "ServerError": _error("the API could not answer; the reason is in the "
                                      "comparer's log"),
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    return codec.dumps(document())
