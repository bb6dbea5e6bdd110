"""Exporting stored exchanges as a file: HAR 1.2 (shadow.har) or JSON lines, streamed.

`GET /api/export?format=har|jsonl&...` takes the filters of /api/mismatches (shadow.filters;
every outcome unless `outcome` is given) and `limit` (at most that many exchanges, default
all). The store is read a page at a time (PAGE_SIZE summaries by cursor, then each exchange's
document), and each page's output is written before the next page is read: memory stays the
same for any number of exchanges, and a slow client slows the reading (the response's own
flow control). An export that fails half-way ends the connection without the end of the
chunked body, so a client never mistakes a cut file for a whole one.

JSON lines: one exchange per line, as /api/exchanges/{id} shows it (bodies decoded for
display). Both are exported as stored: redacted at the source, never un-redacted.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from comparer.store import Store
from shadow import __version__, codec, har
from shadow.filters import FilterError, Filters, parse_filters
from shadow.model import Exchange
from shadow.windows import iso

log = logging.getLogger("shadow.api")

PAGE_SIZE = 100  # exchange summaries read from the store at a time
FLUSH_BYTES = 64 * 1024  # output handed to the response at least this often


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    content_type: str
    suffix: str


HAR = Format("har", "application/json", "har")
JSONL = Format("jsonl", "application/x-ndjson", "jsonl")
FORMATS = {f.name: f for f in (HAR, JSONL)}


@dataclass(frozen=True, slots=True)
class ExportQuery:
    format: Format
    filters: Filters  # its `limit` is the page size
    limit: int | None  # at most this many exchanges; None: all


def parse_export(query: Mapping[str, str], now: float, *,
                 page_size: int = PAGE_SIZE) -> ExportQuery:
    """The export asked for (pure). Raises FilterError with a message for the user."""
    rest = dict(query)
    name = rest.pop("format", "har")
    fmt = FORMATS.get(name)
    if fmt is None:
        raise FilterError(f"format: expected one of {', '.join(FORMATS)}, got {name!r}")
    limit: int | None = None
    if "limit" in rest:
        text = rest.pop("limit")
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if limit < 1:
            raise FilterError(f"limit: expected a whole number of exchanges >= 1, got {text!r}")
    try:
        filters = parse_filters(rest, now)
    except FilterError as e:
        raise FilterError(f"{e} (and format, limit)" if str(e).startswith("unknown filter")
                          else str(e)) from None
    return ExportQuery(fmt, dataclasses.replace(filters, limit=page_size), limit)


def described(f: Filters) -> dict[str, Any]:
    """The filters an export was made with, for the HAR log's `_shadow` (None left out)."""
    shown = {k: v for k, v in dataclasses.asdict(f).items()
             if v is not None and k not in ("limit", "cursor")}
    for name in ("since", "until"):
        if name in shown:
            shown[name] = iso(shown[name])
    return shown


def jsonl_line(x: Exchange) -> bytes:
    return codec.dumps(codec.exchange_for_display(x)) + b"\n"


def opening(q: ExportQuery) -> bytes:
    """What the file starts with: HAR's log head, up to its entries (JSON lines: nothing)."""
    if q.format is not HAR:
        return b""
    return har.log_head(__version__, {"exported_at": iso(time.time()),
                                      "filters": described(q.filters)})


Write = Callable[[bytes], Awaitable[Any]]


async def stream(store: Store, q: ExportQuery, write: Write, *,
                 head: bytes | None = None) -> int:
    """Write the export to `write`, a page of the store at a time; returns the exchanges
    written. An exchange listed but gone before it is read (retention) is left out. `head`:
    the opening, if already made."""
    out: list[bytes] = [opening(q) if head is None else head]
    size = 0

    async def flush() -> None:
        nonlocal size
        if out:
            chunk = b"".join(out)
            out.clear()
            size = 0
            await write(chunk)

    n = 0
    f = q.filters
    while q.limit is None or n < q.limit:
        page, cursor = await store.list_exchanges(f)
        for summary in page:
            x = await store.get(summary["id"])
            if x is None or x.id != summary["id"]:
                continue
            line = har.entry_line(x, first=n == 0) if q.format is HAR else jsonl_line(x)
            out.append(line)
            size += len(line)
            n += 1
            if size >= FLUSH_BYTES:
                await flush()
            if q.limit is not None and n >= q.limit:
                break
        await flush()  # this page is out before the next one is read
        if cursor is None:
            break
        f = dataclasses.replace(f, cursor=cursor)
    if q.format is HAR:
        out.append(har.LOG_TAIL)
    await flush()
    return n


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message}).decode(),
                              content_type="application/json")


async def respond(request: web.Request, store: Store) -> web.StreamResponse:
    """GET /api/export: the file, streamed (chunked), as an attachment."""
    try:
        q = parse_export(request.query, time.time())
    except FilterError as e:
        raise _bad_request(str(e)) from e
    head = opening(q)  # anything that can fail before the first byte: a JSON error still
    response = web.StreamResponse(headers={
        "Content-Type": q.format.content_type,
        "Content-Disposition": f'attachment; filename="shadow.{q.format.suffix}"',
        "Cache-Control": "no-store"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        n = await stream(store, q, response.write, head=head)
    except ConnectionError as e:  # the client went away
        log.info("reports API: export cut short: %s", e)
        _abort(request)
        return response
    except Exception:
        log.exception("reports API: export failed half-way; the connection is ended so the "
                      "client sees an incomplete file")
        _abort(request)
        return response
    log.info("reports API: exported %d exchanges as %s", n, q.format.name)
    await response.write_eof()
    return response


def _abort(request: web.Request) -> None:
    """End the connection now: the chunked body never gets its last chunk."""
    transport = request.transport
    if transport is not None:
        transport.abort()
