"""Keys and sealing: authenticated encryption of what the replay needs (pure apart from the
cipher and the random nonces).

One master secret (`SecretKey`, 32 random bytes) yields, by HKDF-SHA256 with distinct labels,
independent subkeys: one seals (AES-256-GCM), one keys the redaction HMAC tokens, and a 4-byte
key id names the key without revealing it. A `Keyring` holds the current key, which seals and
keys tokens, and previous keys, which still open what they sealed (rotation: a new key applies
to new events; events already in the streams open with the old one).

A sealed value is compact ASCII: base64url, unpadded, of key id (4 bytes) + nonce (12) +
ciphertext and GCM tag (16). The associated data (`aad`, e.g. the exchange id and header name)
is authenticated but not stored: a value opens only with the same aad, so a sealed credential
cannot be moved to another event or header.

No key material ever appears in a repr, a str or an error message: only key ids.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Iterable
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shadow.errors import ConfigError, SealError

KEY_BYTES = 32
KEY_ID_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16

# HKDF labels: each subkey is independent of the others and of the master secret
SEAL_INFO = b"shadow/v1/seal/aes-256-gcm"
HMAC_INFO = b"shadow/v1/redact/hmac-sha256"
KEY_ID_INFO = b"shadow/v1/key-id"
DIGEST_INFO = b"shadow/v1/body-digest/blake2b"


def derive(master: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 of the master secret under one label."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


class SecretKey:
    """One master secret. Its repr and str show its id only; `to_text()` is the one way out
    (for the key file `shadow keygen` writes)."""

    __slots__ = ("_raw", "id")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ConfigError(f"a shadow key is {KEY_BYTES} random bytes, got {len(raw)}; "
                              "make one with `shadow keygen`")
        self._raw = bytes(raw)
        self.id: bytes = derive(self._raw, KEY_ID_INFO, KEY_ID_BYTES)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, where: str) -> SecretKey:
        """The base64 text of a key file or SHADOW_SECRET_KEY (standard or URL-safe alphabet,
        padding optional). The error names `where`, never the text."""
        compact = "".join(text.split()).replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != KEY_BYTES:
            raise ConfigError(f"{where} does not hold a shadow key (the base64 of {KEY_BYTES} "
                              "random bytes); make one with `shadow keygen -o FILE`")
        return cls(raw)

    def to_text(self) -> str:
        return base64.b64encode(self._raw).decode("ascii")

    def subkey(self, info: bytes) -> bytes:
        return derive(self._raw, info)

    @property
    def key_id(self) -> str:
        """The id as 8 hex digits (what logs and errors show)."""
        return self.id.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"SecretKey(id={self.key_id})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretKey is not pickled (it would copy key material)")


class Keyring:
    """The current key (seals, keys the redaction tokens) and the previous ones (still open
    what they sealed). Build it with `shadow.secretkey.load_keyring(settings)`."""

    __slots__ = ("current", "previous", "_hmac")

    def __init__(self, current: SecretKey, previous: Iterable[SecretKey] = ()) -> None:
        self.current = current
        self.previous = tuple(dict.fromkeys(k for k in previous if k != current))
        self._hmac = {k.id: k.subkey(HMAC_INFO) for k in (*reversed(self.previous), current)}

    @property
    def keys(self) -> tuple[SecretKey, ...]:
        """Every key, current first."""
        return (self.current, *self.previous)

    @property
    def key_id(self) -> str:
        """The current key's id (8 hex digits)."""
        return self.current.key_id

    @property
    def hmac_key(self) -> bytes:
        """The current key's subkey for the redaction policy's HMAC tokens."""
        return self._hmac[self.current.id]

    def hmac_key_for(self, key_id: str) -> bytes:
        """The HMAC subkey of the key with this id (current or previous): tokens of an event
        sealed before a rotation can be made with the key that sealed it."""
        try:
            return self._hmac[bytes.fromhex(key_id)]
        except (KeyError, ValueError):
            raise SealError(f"no key with id {key_id!r} in this keyring "
                            f"({_ids(self.keys)})") from None

    def __repr__(self) -> str:
        return f"Keyring(current={self.key_id}, previous=[{', '.join(k.key_id for k in self.previous)}])"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Keyring is not pickled (it would copy key material)")


def _ids(keys: Iterable[SecretKey]) -> str:
    return "key ids " + ", ".join(k.key_id for k in keys)


class Sealer:
    """Seal with the keyring's current key; open with any of its keys."""

    __slots__ = ("keys", "_id", "_seal", "_open")

    def __init__(self, keys: Keyring) -> None:
        self.keys = keys
        self._id = keys.current.id
        self._seal = AESGCM(keys.current.subkey(SEAL_INFO))
        self._open: dict[bytes, list[AESGCM]] = {}
        for key in keys.keys:  # two keys sharing an id (1 in 2**32): both are tried
            self._open.setdefault(key.id, []).append(
                self._seal if key is keys.current else AESGCM(key.subkey(SEAL_INFO)))

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        """Encrypt and authenticate `plaintext`, bound to `aad`: compact ASCII."""
        nonce = os.urandom(NONCE_BYTES)
        blob = self._id + nonce + self._seal.encrypt(nonce, plaintext, aad)
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def open(self, sealed: str, aad: bytes) -> bytes:
        """The plaintext, or SealError: not a sealed value, an unknown key id, or a value that
        fails authentication (altered, truncated, another aad, another key)."""
        blob = _decode(sealed)
        key_id, nonce, body = (blob[:KEY_ID_BYTES], blob[KEY_ID_BYTES:KEY_ID_BYTES + NONCE_BYTES],
                               blob[KEY_ID_BYTES + NONCE_BYTES:])
        ciphers = self._open.get(key_id)
        if not ciphers:
            raise SealError(
                f"sealed with key id {key_id.hex()}, which this process does not have "
                f"({_ids(self.keys.keys)}): give it the key the proxy seals with "
                "(secret_key_file or SHADOW_SECRET_KEY), and keep a rotated-out key in "
                "previous_secret_key_files until the events it sealed are replayed")
        for cipher in ciphers:
            try:
                return cipher.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise SealError(f"a value sealed with key id {key_id.hex()} failed authentication: it was "
                        "altered or truncated, or sealed for another event (other associated "
                        "data)")

    @staticmethod
    def key_id_of(sealed: str) -> str:
        """The id of the key that sealed `sealed` (8 hex digits), without opening it."""
        return _decode(sealed)[:KEY_ID_BYTES].hex()

    def __repr__(self) -> str:
        return f"Sealer({self.keys!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Sealer is not pickled (it would copy key material)")


def _decode(sealed: str) -> bytes:
    try:
        blob = base64.b64decode(sealed.encode("ascii") + b"=" * (-len(sealed) % 4),
                                altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SealError("not a sealed value (expected base64url text)") from None
    if len(blob) < KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES:
        raise SealError(f"not a sealed value (too short: {len(blob)} bytes)")
    return blob
