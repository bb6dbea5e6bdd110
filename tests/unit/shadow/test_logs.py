"""shadow/logs.py: JSON log lines (one object per line) and where their ids come from."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from shadow.errors import ConfigError
from shadow.logs import JsonFormatter
from shadow.settings import load_settings


def record(msg: str, *args: object, level: int = logging.WARNING, exc: bool = False,
           **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    r = logging.LogRecord("shadow.comparer", level, __file__, 1, msg, args, exc_info)
    r.created = 1_800_000_000.25
    for name, value in extra.items():
        setattr(r, name, value)
    return r


def line(r: logging.LogRecord) -> dict[str, object]:
    text = JsonFormatter().format(r)
    assert "\n" not in text
    doc = json.loads(text)
    assert isinstance(doc, dict)
    return doc


def test_a_line_is_one_object_with_time_level_component_and_message() -> None:
    doc = line(record("stored %d events in %.1f s", 3, 0.25, level=logging.INFO))
    assert doc == {"time": "2027-01-15T08:00:00.250Z", "level": "INFO",
                   "component": "shadow.comparer", "message": "stored 3 events in 0.2 s",
                   "pid": doc["pid"]}


def test_ids_come_from_extra_or_the_message_convention() -> None:
    assert line(record("done", exchange_id="x1"))["exchange_id"] == "x1"
    doc = line(record("exchange %s (request id %s): %s failed; recorded as compare_error",
                      "0193ab", "req-7", "diff"))
    assert doc["exchange_id"] == "0193ab" and doc["request_id"] == "req-7"
    assert line(record("request %s: V1 timed out", "abc"))["request_id"] == "abc"
    # placeholders before the id are counted, %% is not one
    doc = line(record("100%% of %d: exchange %s", 5, "nope"))
    assert "exchange_id" not in doc and doc["message"] == "100% of 5: exchange nope"
    doc = line(record("%d exchanges (request id %s)", 2, "r9"))
    assert doc["request_id"] == "r9" and "exchange_id" not in doc
    assert "request_id" not in line(record("requests %s", "x"))


def test_exceptions_are_in_the_object() -> None:
    doc = line(record("batch failed", exc=True, level=logging.ERROR))
    assert doc["level"] == "ERROR" and doc["message"] == "batch failed"
    assert isinstance(doc["exception"], str)
    assert doc["exception"].startswith("Traceback") and "ValueError: boom" in doc["exception"]


def test_odd_values_never_break_a_line() -> None:
    doc = line(record("value %r", b"\xff\x00", exchange_id=object()))
    assert doc["message"] == "value b'\\xff\\x00'"
    assert str(doc["exchange_id"]).startswith("<object")


def test_the_setting_takes_text_or_json() -> None:
    assert load_settings({}, env={}, config_file=None).log_format == "text"
    assert load_settings({"log_format": "json"}, env={}, config_file=None).log_format == "json"
    with pytest.raises(ConfigError, match="--log-format: expected text or json"):
        load_settings({"log_format": "JSON lines"}, env={}, config_file=None)
