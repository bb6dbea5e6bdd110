"""What an event may carry once it leaves the proxy: redacted, with what the replay needs
sealed (shadow/protection.py), on the real policy and cipher."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.errors import ConfigError, SealError
from shadow.model import Answer, Request, RequestEvent
from shadow.protection import (
    NONE,
    RAW,
    REDACTED,
    Protection,
    parse_capture_bodies,
    parse_restore,
    restore,
)
from shadow.redact import Policy
from shadow.sealing import Keyring, Sealer, SecretKey
from shadow.sealing import SealError as SealingError

KEYRING = Keyring(SecretKey.generate())
POLICY = Policy.build(key=KEYRING.hmac_key)
SEALER = Sealer(KEYRING)
SECRET = "Bearer s3cr3tTokenValue0123456789"
LOGIN = b'{"user": "ann", "password": "hunter2-Secret"}'


def event(url: str = "/login?api_key=K3yValue99&x=1", body: bytes = LOGIN) -> RequestEvent:
    return RequestEvent(id="x1", request_id="r1", ts=1.0, request=Request(
        "POST", url, [("Host", "v1"), ("Authorization", SECRET), ("Cookie", "sid=abc123def; t=1"),
                      ("Content-Type", "application/json")], body, len(body)))


def protection(**kw: object) -> Protection:
    return Protection(POLICY, SEALER, **kw)  # type: ignore[arg-type]


def test_the_event_is_redacted_and_the_replay_gets_back_exactly_what_v1_got() -> None:
    original = event()
    shown = protection().request_event(original)
    text = repr(shown.request)
    for secret in ("s3cr3tTokenValue", "abc123def", "K3yValue99", "hunter2-Secret"):
        assert secret not in text and secret not in (shown.sealed or "")
    assert shown.sealed is not None
    assert restore(shown, SEALER) == original.request


def test_an_event_without_secrets_is_the_same_object_and_carries_nothing_sealed() -> None:
    plain = RequestEvent(id="x2", request_id="r2", ts=1.0,
                         request=Request("GET", "/users/1?page=2", [("Accept", "*/*")]))
    assert protection().request_event(plain) is plain
    assert restore(plain, None) is plain.request


def test_sealed_parts_are_bound_to_their_exchange_and_key() -> None:
    shown = protection().request_event(event())
    moved = dataclasses.replace(shown, id="another")
    with pytest.raises(SealError):
        restore(moved, SEALER)
    with pytest.raises(SealError):
        restore(shown, Sealer(Keyring(SecretKey.generate())))
    with pytest.raises(ConfigError, match="key"):
        restore(shown, None)
    assert SealError is SealingError


def test_rotation_previous_keys_still_open_events_sealed_before() -> None:
    shown = protection().request_event(event())
    rotated = Sealer(Keyring(SecretKey.generate(), previous=[KEYRING.current]))
    assert restore(shown, rotated) == event().request


def test_restoring_named_headers_only() -> None:
    p = protection(restore=parse_restore("Authorization"))
    shown = p.request_event(event())
    back = restore(shown, SEALER)
    assert ("Authorization", SECRET) in back.headers
    assert "abc123def" not in repr(back.headers)  # the cookie stays redacted
    assert "K3yValue99" not in back.url


def test_body_modes_by_path_glob() -> None:
    p = protection(bodies=parse_capture_bodies("/login*=none, /public/*=raw"))
    assert (p.body_mode("/login?x=1"), p.body_mode("/public/a"), p.body_mode("/other")) == \
        (NONE, RAW, REDACTED)
    kept_out = p.request_event(event(), p.body_mode(event().request.url))
    assert kept_out.request.body == b"" and kept_out.request.body_size == len(LOGIN)
    assert restore(kept_out, SEALER).body == LOGIN  # V2 still gets the body
    raw = p.request_event(event("/public/a?api_key=K3yValue99"), RAW)
    assert raw.request.body == LOGIN and "K3yValue99" not in raw.request.url
    answer = Answer(200, [("Set-Cookie", "sid=abc123def")], b'{"token": "tOk3nValue"}', 22)
    assert p.answer(answer, NONE).body == b""
    assert p.answer(answer, RAW).body == answer.body
    assert b"tOk3nValue" not in p.answer(answer, REDACTED).body
    assert all("abc123def" not in v for _, v in p.answer(answer, RAW).headers)


def test_an_error_message_quoting_a_url_is_redacted() -> None:
    failed = Answer(None, error="V2 unreachable: 400, url='http://v2/x?api_key=K3yValue99'")
    assert "K3yValue99" not in (protection().answer(failed).error or "")


@pytest.mark.parametrize("bad", ["login=none", "/x=everything", "/x"])
def test_bad_capture_bodies_say_what_to_write(bad: str) -> None:
    with pytest.raises(ConfigError, match="PATH_GLOB=none|redacted|raw"):
        parse_capture_bodies(bad)


@given(st.binary(max_size=300), st.text(max_size=40))
def test_any_body_and_query_round_trip_through_the_seal(body: bytes, query: str) -> None:
    from urllib.parse import quote

    original = event(f"/login?api_key={quote(query)}x", body)
    assert restore(protection().request_event(original), SEALER) == original.request


def test_raw_bodies_need_their_own_opt_in() -> None:
    from shadow.settings import Settings, validate

    with pytest.raises(ConfigError, match="--allow-raw-bodies"):
        validate(Settings(capture_bodies="/pay/*=raw"))
    validate(Settings(capture_bodies="/pay/*=raw", allow_raw_bodies=True))
    validate(Settings(capture_bodies="/login*=none"))
