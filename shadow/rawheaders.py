"""Header bytes that are not UTF-8, sent as they came (shared by the proxy and the subscriber).

aiohttp's parser keeps such bytes as lone surrogates (surrogateescape), but its C
header serializer silently drops surrogates. `install()` puts in a serializer that
writes them back as the original bytes; all-ASCII headers (the usual case) still take
aiohttp's fast C path. Guarded by tests/test_proxy_fidelity.py and
tests/system/test_replay_policy.py.
"""

from __future__ import annotations

import aiohttp.http_writer as _http_writer
from multidict import CIMultiDict

_fast_serialize = _http_writer._serialize_headers


def serialize_headers(status_line: str, headers: CIMultiDict[str]) -> bytes:
    if status_line.isascii() and "".join(headers.values()).isascii() \
            and "".join(headers.keys()).isascii():
        return _fast_serialize(status_line, headers)  # type: ignore[no-any-return]
    safe = _http_writer._safe_header
    lines = "".join(f"{safe(k)}: {safe(v)}\r\n" for k, v in headers.items())
    return f"{safe(status_line)}\r\n{lines}\r\n".encode("utf-8", "surrogateescape")


def install() -> None:
    """Idempotent: make every aiohttp writer in this process byte-faithful for headers."""
    _http_writer._serialize_headers = serialize_headers  # type: ignore[assignment]
