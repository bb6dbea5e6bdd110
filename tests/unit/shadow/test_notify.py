"""shadow/notify.py: what is told, when, and in which shape (pure)."""

from __future__ import annotations

import orjson
import pytest

from shadow import notify
from shadow.errors import ConfigError
from shadow.model import CLASS_BUG, CLASS_FIXED, CLASS_NEW
from shadow.notify import Changes, ClassBook, Debounce
from shadow.settings import load_settings

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"


def test_urls_are_checked_without_quoting_their_secret_part() -> None:
    assert notify.parse_urls(f" {SLACK} , http://127.0.0.1:9/hook ") == \
        [SLACK, "http://127.0.0.1:9/hook"]
    assert notify.parse_urls(None) == [] and notify.parse_urls("") == []
    for bad in ("hooks.slack.com/services/T/B/secretXYZ", "ftp://host/secretXYZ",
                "https:///secretXYZ", "https://host:99999/secretXYZ"):
        with pytest.raises(ConfigError) as e:
            notify.parse_urls(f"{SLACK},{bad}")
        assert "URL #2" in str(e.value) and "secret" not in str(e.value)
    assert notify.endpoint(SLACK) == "https://hooks.slack.com/***"
    assert notify.endpoint("http://u:pw@127.0.0.1:8080/x?token=1") == "http://127.0.0.1:8080/***"


def test_the_url_setting_is_a_secret_and_the_format_is_checked() -> None:
    s = load_settings({"notify_url": SLACK}, env={}, config_file=None)
    assert "XXXXsecretXXXX" not in repr(s) and "notify_url='***'" in repr(s)
    env = load_settings({}, env={"SHADOW_NOTIFY_URL": SLACK}, config_file=None)
    assert env.notify_url == SLACK and env.notify_format == "slack"
    with pytest.raises(ConfigError, match="--notify-format: expected slack"):
        load_settings({"notify_format": "xml"}, env={}, config_file=None)


def class_notice(**kw: object) -> notify.Notice:
    args: dict[str, object] = {"signature": "c0ffee", "method": "GET", "route": "/users/{id}",
                               "paths": ["$.name", "$.title"], "v1_status": 200,
                               "v2_status": 200, "example": "ex1", "ts": 1_800_000_000.0,
                               "reopened": False}
    args.update(kw)
    return notify.class_notice(**args)  # type: ignore[arg-type]


def test_slack_format_is_an_incoming_webhook_message_with_escaped_text() -> None:
    n = class_notice(paths=["$.a<b>", "$.c&d", "$.e", "$.f"], v2_status=500)
    doc = orjson.loads(notify.payload(n, notify.SLACK))
    assert list(doc) == ["text"]
    assert doc["text"] == ("shadow: new mismatch class c0ffee on GET /users/{id} (V1 200, V2 "
                           "500): $.a&lt;b&gt;, $.c&amp;d, $.e and 1 more; example exchange ex1")


def test_json_format_is_the_documented_object() -> None:
    doc = orjson.loads(notify.payload(class_notice(reopened=True), notify.JSON))
    assert doc == {"event": "reopened_class", "text": doc["text"],
                   "time": "2027-01-15T08:00:00Z", "ts": 1_800_000_000.0,
                   "signature": "c0ffee", "method": "GET", "route": "/users/{id}",
                   "paths": ["$.name", "$.title"], "v1_status": 200, "v2_status": 200,
                   "example": "ex1", "class_status": "new"}
    assert doc["text"].startswith("shadow: mismatch class marked fixed is back c0ffee")
    v = orjson.loads(notify.payload(notify.verdict_notice("GET", "/a", False, "too few", 0.0),
                                    notify.JSON))
    assert v["event"] == "verdict_changed" and v["ready"] is False and v["was_ready"] is True
    assert v["reason"] == "too few" and "no longer ready for cutover: too few" in v["text"]
    b = orjson.loads(notify.payload(notify.behind_notice("shadow:v1", "replayers", 412.5, 300,
                                                         0.0, behind=True), notify.JSON))
    assert b["event"] == "pipeline_behind" and b["behind_s"] == 412.5 and b["threshold_s"] == 300
    assert "412 s behind on shadow:v1" in b["text"]


def test_debounce_allows_one_per_key_per_window() -> None:
    d = Debounce(600)
    assert d.allow("class:a", 0) and d.allow("class:b", 1)
    assert not d.allow("class:a", 599) and not d.allow("class:b", 600.5)
    assert d.allow("class:a", 600) and not d.allow("class:a", 1199)


def test_changes_tell_each_change_once_and_the_state_in_force_after_the_window() -> None:
    c: Changes[str] = Changes(600)  # the first update is a baseline
    assert c.update({"a": True, "b": False}, 0) == []
    assert c.update({"a": False, "b": False, "new": True}, 10) == [("a", False), ("new", True)]
    assert c.update({"a": True}, 20) == []  # within the window: held back
    assert c.update({"a": False}, 30) == []  # and undone: nothing to tell
    assert c.update({"a": True}, 620) == [("a", True)]  # the state in force, once allowed
    assert c.update({"a": True}, 2000) == []
    behind: Changes[str] = Changes(600, default=False)  # no baseline: behind at start is told
    assert behind.update({"g": True}, 0) == [("g", True)]
    assert behind.update({"g": True, "h": False}, 1) == []


def test_class_book_tells_new_and_reopened_classes_once() -> None:
    book = ClassBook()
    book.refresh(book.begin_refresh(), [("known", CLASS_BUG, False), ("done", CLASS_FIXED, False)])
    assert book.seen("known") is None
    assert book.seen("fresh") == notify.NEW_CLASS and book.seen("fresh") is None
    assert book.seen("done") == notify.REOPENED_CLASS and book.seen("done") is None
    assert len(book) == 3


def test_class_book_refresh_keeps_what_was_seen_while_the_store_was_read() -> None:
    book = ClassBook()
    book.refresh(book.begin_refresh(), [("a", CLASS_FIXED, False)])
    token = book.begin_refresh()  # the store is read: "a" still fixed there, "b" unknown
    assert book.seen("a") == notify.REOPENED_CLASS
    assert book.seen("b") == notify.NEW_CLASS
    assert book.refresh(token, [("a", CLASS_FIXED, False)]) == []
    assert book.seen("a") is None and book.seen("b") is None  # not told twice
    # marked fixed in the store since: the next sighting reopens it
    book.refresh(book.begin_refresh(), [("a", CLASS_FIXED, False)])
    assert book.seen("a") == notify.REOPENED_CLASS


def test_class_book_reports_reopenings_it_did_not_see() -> None:
    book = ClassBook()
    book.refresh(book.begin_refresh(), [("a", CLASS_FIXED, False), ("b", CLASS_FIXED, False)])
    # another comparer saw "a" again (the store reopened it); "b" was set back to bug by hand
    assert book.refresh(book.begin_refresh(), [("a", CLASS_NEW, True),
                                               ("b", CLASS_BUG, False)]) == ["a"]
    assert book.seen("a") is None and book.seen("b") is None
