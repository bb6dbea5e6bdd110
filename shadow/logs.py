"""Log lines: plain text (default) or JSON lines (`--log-format json`) for central log systems.

A JSON line is one object: `time` (UTC, ISO 8601 with milliseconds), `level`, `component` (the
logger's name: shadow.proxy, shadow.comparer, ...), `message`, `pid`, and when there is one
`exchange_id` / `request_id` and `exception` (the traceback). The ids come from
`extra={"exchange_id": ...}` or from the house convention of per-exchange messages: a message
that starts with "exchange %s" (the exchange id) or "request %s" (the request id), or holds
"(request id %s)".
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
_ID_FIELDS = ("exchange_id", "request_id")
_json = False  # configured for JSON lines


def _ids(record: logging.LogRecord) -> dict[str, str]:
    """The exchange and request ids a record names (extra= first, else the message's
    convention)."""
    out = {name: str(getattr(record, name)) for name in _ID_FIELDS
           if getattr(record, name, None) is not None}
    template, args = record.msg, record.args
    if not isinstance(template, str) or not isinstance(args, tuple) or not args:
        return out
    wanted: list[tuple[int, str]] = []  # (the character offset of its %s, field)
    for prefix, name in (("exchange %s", "exchange_id"), ("request %s", "request_id")):
        if template.startswith(prefix):
            wanted.append((len(prefix) - 2, name))
    at = template.find("(request id %s")
    if at >= 0:
        wanted.append((at + len("(request id "), "request_id"))
    if not wanted:
        return out
    index = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.group() == "%%":
            continue
        for offset, name in wanted:
            if match.start() == offset and index < len(args):
                out.setdefault(name, str(args[index]))
        index += 1
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "component": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **_ids(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def configure(level: str, fmt: str = "text") -> None:
    """The process's logging: to stderr, at `level`, as `fmt` (text or json). Python's
    warnings go through it too, so in JSON mode every line on stderr is an object."""
    global _json
    _json = fmt == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])  # no-op if already set up
    logging.captureWarnings(fmt == "json")


def fatal(message: str) -> None:
    """What stops a command, on stderr: as the text it is, or as a JSON line when logs are."""
    if _json:
        logging.getLogger("shadow").error("%s", message)
    else:
        print(message, file=sys.stderr)
