"""Exchange ids and the X-Request-Id sanity check (pure)."""

from __future__ import annotations

import os
import time
from typing import TypeGuard

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_REQUEST_ID_LEN = 128


def new_id() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 chars.

    Time-ordered (sorts by creation time) and unique across processes and restarts.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def is_sane_request_id(value: str | None) -> TypeGuard[str]:
    """Visible ASCII only (0x21-0x7e), 1..128 characters."""
    if not value or len(value) > MAX_REQUEST_ID_LEN:
        return False
    return all(0x21 <= ord(c) <= 0x7E for c in value)
