"""Sealing and keys (shadow/sealing.py): authenticated encryption, rotation, derived subkeys,
and key material that never shows."""

from __future__ import annotations

import base64
import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.errors import ConfigError, SealError
from shadow.sealing import (
    HMAC_INFO,
    KEY_BYTES,
    SEAL_INFO,
    Keyring,
    Sealer,
    SecretKey,
)

OLD, NEW = SecretKey(bytes(range(32))), SecretKey(bytes(range(100, 132)))


def _flip(sealed: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_a_sealed_value_is_compact_ascii_and_opens_with_the_same_key_and_aad() -> None:
    sealer = Sealer(Keyring(NEW))
    sealed = sealer.seal(b"Bearer s3cret", b"exchange-1")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", sealed)  # base64url, unpadded: fits JSON and headers
    # key id (4) + nonce (12) + ciphertext (13) + tag (16)
    assert len(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))) == 4 + 12 + 13 + 16
    assert b"s3cret" not in sealed.encode() and "s3cret" not in sealed
    assert sealer.open(sealed, b"exchange-1") == b"Bearer s3cret"
    # another process with the same key (the subscriber) opens it too
    assert Sealer(Keyring(SecretKey(bytes(range(100, 132))))).open(sealed, b"exchange-1") == \
        b"Bearer s3cret"
    # a fresh nonce each time: equal secrets do not give equal sealed values
    assert sealer.seal(b"Bearer s3cret", b"exchange-1") != sealed
    assert Sealer.key_id_of(sealed) == NEW.key_id


@given(st.binary(max_size=512), st.binary(max_size=64))
def test_any_plaintext_round_trips(plaintext: bytes, aad: bytes) -> None:
    sealer = Sealer(Keyring(NEW))
    assert sealer.open(sealer.seal(plaintext, aad), aad) == plaintext


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_altered_byte_is_refused(plaintext: bytes, data: st.DataObject) -> None:
    sealer = Sealer(Keyring(NEW))
    sealed = sealer.seal(plaintext, b"aad")
    size = 4 + 12 + len(plaintext) + 16
    index = data.draw(st.integers(0, size - 1))  # key id, nonce, ciphertext or tag
    with pytest.raises(SealError):
        sealer.open(_flip(sealed, index), b"aad")


def test_wrong_aad_wrong_key_truncation_and_garbage_are_clear_seal_errors() -> None:
    sealer = Sealer(Keyring(NEW))
    sealed = sealer.seal(b"cookie=abc", b"exchange-1")
    with pytest.raises(SealError, match="failed authentication.*another event"):
        sealer.open(sealed, b"exchange-2")  # moved to another event
    with pytest.raises(SealError, match=f"key id {NEW.key_id}.*does not have.*{OLD.key_id}.*"
                                        "SHADOW_SECRET_KEY.*previous_secret_key_files"):
        Sealer(Keyring(OLD)).open(sealed, b"exchange-1")  # a subscriber with another key
    with pytest.raises(SealError, match="too short"):
        sealer.open(sealed[:30], b"exchange-1")
    with pytest.raises(SealError, match="failed authentication"):
        sealer.open(sealed[:-2], b"exchange-1")  # tag cut
    for garbage in ("not base64!", "é", ""):
        with pytest.raises(SealError, match="not a sealed value"):
            sealer.open(garbage, b"exchange-1")


def test_rotation_new_key_seals_previous_keys_still_open() -> None:
    before = Sealer(Keyring(OLD)).seal(b"in the stream before the rotation", b"x")
    rotated = Sealer(Keyring(NEW, [OLD]))
    assert rotated.open(before, b"x") == b"in the stream before the rotation"
    after = rotated.seal(b"new event", b"y")
    assert Sealer.key_id_of(after) == NEW.key_id
    with pytest.raises(SealError):
        Sealer(Keyring(OLD)).open(after, b"y")  # an old process cannot open new events
    # the current key is never listed twice; the redaction tokens follow the current key
    assert Keyring(NEW, [OLD, NEW, OLD]).previous == (OLD,)
    assert rotated.keys.hmac_key == Keyring(NEW).hmac_key != Keyring(OLD).hmac_key
    assert rotated.keys.hmac_key_for(OLD.key_id) == Keyring(OLD).hmac_key
    with pytest.raises(SealError, match="no key with id"):
        rotated.keys.hmac_key_for("00000000")


def test_subkeys_are_derived_separately_and_stably_from_one_master_secret() -> None:
    ring = Keyring(NEW)
    raw = bytes(range(100, 132))
    assert len(ring.hmac_key) == KEY_BYTES
    assert ring.hmac_key == Keyring(SecretKey(raw)).hmac_key  # proxy and subscriber agree
    assert len({raw, ring.hmac_key, NEW.subkey(SEAL_INFO), NEW.subkey(HMAC_INFO)}) == 3
    assert NEW.subkey(HMAC_INFO) == ring.hmac_key != NEW.subkey(SEAL_INFO)
    assert raw not in (ring.hmac_key, NEW.subkey(SEAL_INFO))


def test_key_text_round_trips_and_bad_text_is_refused_without_echoing_it() -> None:
    text = NEW.to_text()
    assert SecretKey.from_text(text + "\n", "x") == NEW
    assert SecretKey.from_text(base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
                               .rstrip("="), "x") == NEW
    for bad in ("short", text[:-4], text + "AAAA", "!" * 44):
        with pytest.raises(ConfigError, match="the-file does not hold a shadow key.*keygen") as e:
            SecretKey.from_text(bad, "the-file")
        assert bad not in str(e.value)
    with pytest.raises(ConfigError, match="32 random bytes"):
        SecretKey(b"x" * 16)
    assert SecretKey.generate() != SecretKey.generate()


def _material(key: SecretKey) -> list[str]:
    """Every form the key's secret bytes could take in text."""
    out = []
    for secret in (base64.b64decode(key.to_text()), key.subkey(SEAL_INFO), key.subkey(HMAC_INFO)):
        out += [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
                base64.urlsafe_b64encode(secret).decode().rstrip("="), repr(secret),
                secret.hex()[:16]]
    return out


def test_no_repr_str_or_error_shows_key_material() -> None:
    ring = Keyring(NEW, [OLD])
    sealer = Sealer(ring)
    shown = [repr(NEW), str(NEW), repr(ring), str(ring), repr(sealer), str(sealer),
             f"{ring}", f"{sealer!s:>10}", repr([NEW, OLD])]
    with pytest.raises(SealError) as wrong_key:
        Sealer(Keyring(SecretKey.generate())).open(sealer.seal(b"x", b"a"), b"a")
    with pytest.raises(SealError) as tampered:
        sealer.open(_flip(sealer.seal(b"x", b"a"), 20), b"a")
    shown += [str(wrong_key.value), str(tampered.value)]
    text = "\n".join(shown)
    for key in (NEW, OLD):
        assert key.key_id in text  # what is shown: the id, to tell keys apart
        for form in _material(key):
            assert form not in text, form
    for thing in (NEW, ring, sealer):
        with pytest.raises(TypeError, match="not pickled"):
            pickle.dumps(thing)
