"""Data protection at the source: what an event may carry once it leaves the proxy (pure).

The proxy protects each event before it is encoded, so nothing downstream (Redis, its
append-only file, the store, the reports API, the dashboard, the logs, the dead letters)
ever holds a secret in clear:

- the request and V1's answer are redacted by the policy (shadow/redact.py): secrets become
  keyed-HMAC tokens, so the same secret in V1's and V2's answers still compares equal;
- what redaction changed in the request that the replay needs (by default everything it
  changed: credentials in headers, the query, the body) travels sealed — encrypted and
  authenticated, bound to the exchange id (shadow/sealing.py) — and is opened only in the
  subscriber's memory for the call to V2 (`restore`);
- bodies follow `--capture-bodies` per path glob: `redacted` (default), `none` (never
  stored: the comparison sees status and headers only; the replay still gets the request
  body, sealed) or `raw` (stored as is: an explicit opt-in, reported at start and in
  /api/summary).

The subscriber protects V2's answer with the same policy and key before publishing it.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import orjson

from shadow.errors import ConfigError
from shadow.model import Answer, Headers, Request, RequestEvent

if TYPE_CHECKING:
    from shadow.sealing import Keyring
    from shadow.settings import Settings

REDACTED, NONE, RAW = "redacted", "none", "raw"
_URL = re.compile(r"""(?:https?://[^\s'"<>]*|(?<![\w/])/[^\s'"<>?]*\?[^\s'"<>]*)""")
BODY_MODES = (REDACTED, NONE, RAW)
RESTORE_ALL = "all"


class Redactor(Protocol):
    def request(self, r: Request) -> Request: ...

    def answer(self, a: Answer) -> Answer: ...

    def text(self, s: str) -> str: ...

    def url(self, url: str) -> str: ...


class Sealer(Protocol):
    def seal(self, plaintext: bytes, aad: bytes) -> str: ...

    def open(self, sealed: str, aad: bytes) -> bytes: ...


def parse_capture_bodies(value: str | None) -> tuple[tuple[str, str], ...]:
    """`/login*=none, /payments/*=none, /public/*=raw` -> ((glob, mode), ...), first match
    wins; a path no glob matches is `redacted`."""
    out = []
    for item in filter(None, (p.strip() for p in (value or "").split(","))):
        glob, sep, mode = item.rpartition("=")
        glob, mode = glob.strip(), mode.strip().lower()
        if not sep or not glob.startswith("/") or mode not in BODY_MODES:
            raise ConfigError(f"--capture-bodies: expected PATH_GLOB=none|redacted|raw separated "
                              f"by commas (e.g. '/login*=none,/payments/*=none'), got {item!r}")
        out.append((glob, mode))
    return tuple(out)


def parse_restore(value: str | None) -> frozenset[str] | None:
    """--replay-secrets: `all` (None: everything redaction changed), `none`, or header names."""
    text = (value or "").strip().lower()
    if text == RESTORE_ALL:
        return None
    if text in ("", "none"):
        return frozenset()
    return frozenset(n.strip() for n in text.split(",") if n.strip())


@dataclass(frozen=True, slots=True)
class Protection:
    """`policy` None: redaction off (only for measuring its cost; never a default)."""

    policy: Redactor | None
    sealer: Sealer | None
    bodies: tuple[tuple[str, str], ...] = ()
    restore: frozenset[str] | None = None  # header names the replay gets back; None: all
    # keys the digests of whole bodies (shadow.http.Capture) in the proxy and the subscriber
    digest_key: bytes | None = None

    @classmethod
    def from_settings(cls, settings: Settings, keyring: Keyring) -> Protection:
        """What the proxy and the subscriber apply: the redaction policy keyed by the
        keyring's HMAC subkey, its sealer, the body modes and what the replay gets back."""
        from shadow.redact import Policy
        from shadow.sealing import DIGEST_INFO, Sealer

        return cls(Policy.from_settings(settings, keyring.hmac_key) if settings.redaction
                   else None, Sealer(keyring), parse_capture_bodies(settings.capture_bodies),
                   parse_restore(settings.replay_secrets),
                   digest_key=keyring.current.subkey(DIGEST_INFO))

    @property
    def raw_globs(self) -> list[str]:
        return [glob for glob, mode in self.bodies if mode == RAW]

    def body_mode(self, url: str) -> str:
        if not self.bodies:
            return REDACTED
        path = url.partition("?")[0]
        return next((mode for glob, mode in self.bodies if fnmatch.fnmatchcase(path, glob)),
                    REDACTED)

    def request_event(self, e: RequestEvent, mode: str = REDACTED) -> RequestEvent:
        original = e.request
        r = original
        if mode == NONE and r.body:
            r = replace(r, body=b"")
        if self.policy is not None:
            shown = self.policy.request(replace(r, body=b"") if mode == RAW else r)
            r = replace(shown, body=r.body) if mode == RAW else shown
        if r is original:
            return e
        return replace(e, request=r, sealed=self._seal(e.id, original, r))

    def answer(self, a: Answer, mode: str = REDACTED) -> Answer:
        if mode == NONE and a.body:
            a = replace(a, body=b"")
        if self.policy is None:
            return a
        if a.error:  # an HTTP client's message may quote the URL
            a = replace(a, error=self.text(a.error))
        if mode == RAW:
            return replace(self.policy.answer(replace(a, body=b"")), body=a.body)
        return self.policy.answer(a)

    def text(self, s: str) -> str:
        """Free text (an error message, a log line): URLs in it redacted as URLs, then the
        value detectors."""
        policy = self.policy
        if policy is None:
            return s
        return policy.text(_URL.sub(lambda m: policy.url(m.group(0)), s))

    def _seal(self, exchange_id: str, original: Request, shown: Request) -> str | None:
        """The parts of `original` the replay needs and `shown` lost, sealed; None when the
        replay needs nothing back."""
        parts: dict[str, object] = {}
        if self.restore is None:
            if shown.headers != original.headers:
                parts["h"] = original.headers
            if shown.url != original.url:
                parts["u"] = original.url
            if shown.body != original.body:
                parts["b"] = base64.b64encode(original.body).decode("ascii")
        else:
            wanted = [(k, v) for k, v in original.headers if k.lower() in self.restore]
            if wanted and wanted != [(k, v) for k, v in shown.headers
                                     if k.lower() in self.restore]:
                parts["n"] = wanted
            if original.body and not shown.body:  # kept out by --capture-bodies none
                parts["b"] = base64.b64encode(original.body).decode("ascii")
        if not parts:
            return None
        if self.sealer is None:
            raise ConfigError("redaction changed a request the replay needs, and no key is "
                              "configured to seal it")
        return self.sealer.seal(orjson.dumps(parts), exchange_id.encode())


def restore(e: RequestEvent, sealer: Sealer | None) -> Request:
    """The request as V1 got it, for the call to V2 only (never stored, logged or published):
    the sealed parts put back. Raises SealError (a wrong key, tampering) or ConfigError."""
    if e.sealed is None:
        return e.request
    if sealer is None:
        raise ConfigError("this request carries sealed credentials and the subscriber has no "
                          "key: give it the proxy's key (--secret-key-file or SHADOW_SECRET_KEY)")
    parts = orjson.loads(sealer.open(e.sealed, e.id.encode()))
    r = e.request
    if "h" in parts:
        r = replace(r, headers=_pairs(parts["h"]))
    if "u" in parts:
        r = replace(r, url=str(parts["u"]))
    if "b" in parts:
        r = replace(r, body=base64.b64decode(parts["b"]))
    if "n" in parts:
        names = {str(k).lower() for k, _ in parts["n"]}
        r = replace(r, headers=[(k, v) for k, v in r.headers if k.lower() not in names]
                    + _pairs(parts["n"]))
    return r


def _pairs(raw: list[list[str]]) -> Headers:
    return [(str(k), str(v)) for k, v in raw]
