"""Exchange ids and the X-Request-Id sanity check (pure)."""

from __future__ import annotations

import os
import random
import time
from typing import TypeGuard

MAX_REQUEST_ID_LEN = 128
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 characters
_SHIFTS = range(120, -1, -10)


def new_id() -> str:
    """A ULID: 26 Crockford base32 chars, 48-bit millisecond time then 80 random bits.

    Time-ordered (sorts by creation time) and unique across processes and restarts.
    """
    value = (time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


# 80 random bits per id from a generator seeded by the OS, reseeded in every forked child
# (os.urandom per id is a system call on the proxy's hot path).
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def is_sane_request_id(value: str | None) -> TypeGuard[str]:
    """Visible ASCII only (0x21-0x7e), 1..128 characters."""
    if not value or len(value) > MAX_REQUEST_ID_LEN:
        return False
    return all(0x21 <= ord(c) <= 0x7E for c in value)
