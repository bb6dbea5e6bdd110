"""Shared plumbing (#10): retry backoff, capped body capture."""

from __future__ import annotations

from shadow.aio import Backoff
from shadow.http import Capture


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.05, 0.3)
    assert [b.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    b.reset()
    assert b.delay == 0.05


def test_capture_keeps_the_cap_and_counts_the_rest() -> None:
    c = Capture(5)
    for chunk in (b"abc", b"defg", b"hi"):
        c.add(chunk)
    assert (c.bytes(), c.size, c.truncated) == (b"abcde", 9, True)
    whole = Capture(5)
    whole.add(b"abc")
    assert (whole.bytes(), whole.truncated) == (b"abc", False)
    whole.whole = False  # a streamed body not yet read to its end
    assert whole.truncated


def test_path_errors_are_shadow_config_errors_and_still_value_errors() -> None:
    from shadow.errors import ConfigError
    from shadow.jsonpath import PathError, compile_pattern

    try:
        compile_pattern("items[*]")
    except PathError as e:
        assert isinstance(e, ConfigError) and isinstance(e, ValueError)
    else:
        raise AssertionError("a pattern without $ must not compile")
