"""`shadow export`: stored exchanges as a HAR 1.2 file or JSON lines, from the reports API's
GET /api/export, streamed to the file as it arrives (constant memory, any size).

With -o FILE the export is written beside FILE under a temporary name and renamed to FILE
only once complete: a cut transfer (the API ends the connection when it fails half-way)
leaves no FILE that looks whole, and an existing FILE is replaced only by a complete export.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from shadow.cli.reports import _api_error, _api_request, _api_url
from shadow.errors import ShadowError
from shadow.safetext import visible
from shadow.settings import Settings

FORMATS = ("har", "jsonl")
CHUNK_BYTES = 64 * 1024
READ_TIMEOUT_S = 120.0  # between two reads: the API writes at least once per page it reads


def format_for(output: str | None) -> str | None:
    """The format a file name implies: .har -> har, .jsonl/.ndjson -> jsonl."""
    if not output:
        return None
    suffix = Path(output).suffix.lower()
    return {".har": "har", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix)


def export_query(args: argparse.Namespace, fmt: str) -> list[tuple[str, str]]:
    query = [("format", fmt)]
    for name in ("outcome", "route", "method", "signature", "path", "url", "since", "until",
                 "limit"):
        value = getattr(args, name, None)
        if value is not None:
            query.append((name, str(value)))
    return query


def _copy(resp: BinaryIO, out: BinaryIO) -> int:
    """Copy the body; returns its lines (one per exchange, plus HAR's first and last)."""
    lines = 0
    while chunk := resp.read(CHUNK_BYTES):
        out.write(chunk)
        lines += chunk.count(b"\n")
    return lines


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    output = None if args.output in (None, "-") else args.output
    fmt = args.format or format_for(output) or "har"
    if args.limit is not None and args.limit < 1:
        raise ShadowError("shadow export: --limit must be at least 1")
    url = f"{_api_url(args, settings)}/api/export?" \
          f"{urllib.parse.urlencode(export_query(args, fmt))}"
    accept = "application/json" if fmt == "har" else "application/x-ndjson"
    request = _api_request(url, settings.api_token, accept)
    target = Path(output).resolve() if output else None
    if target is not None and not target.parent.is_dir():
        raise ShadowError(f"shadow export: cannot write {output}: no folder {target.parent}")
    tmp: Path | None = None
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as resp:
            if target is None:
                lines = _copy(resp, sys.stdout.buffer)
                sys.stdout.flush()
            else:
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                            dir=target.parent)
                tmp = Path(name)
                with os.fdopen(fd, "wb") as out:
                    lines = _copy(resp, out)
                os.replace(tmp, target)
                tmp = None
    except BrokenPipeError:  # `shadow export ... | head`: the reader has what it wanted
        return 0
    except http.client.HTTPException as e:  # IncompleteRead: the API ended it half-way
        raise ShadowError(f"the export from {url} was cut short ({type(e).__name__}); nothing "
                          "was written to the file: see the comparer's log, then run it "
                          "again") from e
    except (urllib.error.URLError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, urllib.error.URLError) \
                and e.filename is not None:
            raise ShadowError(f"shadow export: cannot write {e.filename}: {e.strerror}") from e
        raise _api_error(url, e, "export from the reports API") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    exchanges = max(lines - 2, 0) if fmt == "har" else lines
    where = output if output else "standard output"
    print(visible(f"exported {exchanges} exchange{'' if exchanges == 1 else 's'} as {fmt} to "
                  f"{where}"), file=sys.stderr)
    return 0
