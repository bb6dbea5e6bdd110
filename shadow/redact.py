"""Redaction (pure: no I/O): what a secret becomes before an event leaves the proxy, and
wherever traffic is shown (the firehose, logs, error messages).

One `Policy` (`Policy.from_settings(settings, key)`) decides three things.

**Which names are secrets.** Names are compared normalised: ASCII lower case, `-` and `_`
removed (`X-Api-Key`, `api_key` and `apiKey` are all `apikey`), exactly or by glob
(`*`, `?`, `[...]`). A name is a secret when it matches `--redact-names`; else, when it
matches `--redact-allow` (or the built-in ALLOW list), it is not; else when it matches
DEFAULT_NAMES, `--redact-headers` or `--redact-fields`. Names are header names, cookie names,
query and form parameters, multipart part names, and JSON fields at any depth.

**Which values are secrets** whatever their name (`--redact-detectors`), in JSON strings,
query, form and cookie values, the values of other headers, URLs and free text; only the
matched span is replaced:
  card   - 13-19 digits, spaces or dashes allowed between them, first digit 2-6 (the card
           networks' ranges), passing the Luhn check;
  jwt    - three base64url segments, the first starting `eyJ`;
  email  - an e-mail address;
  bearer - the credential after `Bearer`, `Basic` or `token` (8+ characters, not a plain
           lower-case word), and long random strings: 32+ characters of [A-Za-z0-9_.~+/=-]
           holding a run of 16+ letters and digits that mixes upper case, lower case and
           digits and is not hexadecimal (plain hex ids, UUIDs, ULIDs, X-Request-Id values,
           paths and words are kept).

**What a secret becomes** (`--redact-action`):
  token - `tok_<16 hex>` (detector hits: `tok_<kind>_<16 hex>`, kind card, jwt, email or
          cred): the first 64 bits of HMAC-SHA256(key, value), so equal secrets give equal
          tokens and comparisons stay exact. Without a key (`key=None`: display-only callers
          such as the firehose) tokens fall back to masks;
  mask  - `[redacted]`;
  drop  - the named item is removed (header, cookie, query or form parameter, multipart
          part, JSON field); a detector hit inside a value is masked.
Values that are already tokens or masks are kept, so redacting twice changes nothing.

Where: `request()` and `answer()` return redacted copies (the very same object when nothing
changed: `out is r`; and each unchanged part of a changed copy, url or body, is the same
object too); `redact_request()` also says what changed (`Changes`). Headers by name, except
`Cookie` and `Set-Cookie` (by cookie name; names kept), `Location`, `Content-Location` and
`Referer` (redacted as URLs), and a few structural headers left alone (PLAIN_HEADERS). URLs:
query parameters and `#fragment` pairs by name, user-info passwords, detectors everywhere.
Bodies by media type: JSON (fields at any depth by name, strings by detectors and
`name=value`), form-urlencoded (like a query), multipart/form-data (parts by name, text
parts by detectors), other text (detectors, plus `"name": value`, `name=value`,
`name: value` lines and `<name>value</name>` with secret names, which is also what a
truncated or invalid JSON body gets); binary bodies are kept as they are.

Byte fidelity: a body with nothing to redact is returned as is (the same bytes object). A
JSON body is edited in place (only the secret spans change) unless it parses and holds
backslash escapes, a secret-named object or array, or the action is drop: then it is
re-serialised compactly by orjson (the same JSON value, other bytes). A truncated or invalid
body is always edited in place (a secret-named object or array it cuts becomes one token). A
compressed body (Content-Encoding gzip, deflate, br) is decoded (bounded,
shadow.diff.decoded_body); when redaction changes it, the copy keeps the redacted *decoded*
body (at most `decoded_cap_bytes`, beyond which it is cut and marked truncated) and loses its
Content-Encoding header; `body_size` stays the size of the original body. An undecodable or
stacked encoding is kept as is.

Cost: this runs on the proxy's client path, so every text is first judged by C-speed passes
(bytes.translate, find, set operations on its words) and parsed or matched by a regular
expression only where a secret may be. Bounded caches, in the process's memory only, make
repeated traffic cheap: name verdicts, the words met in traffic (clear, or possibly part of a
secret name), header values and URLs found clean, and the tokens of recent secrets.

Limits: secrets hidden inside other encodings (base64 blobs, JSON nested as an escaped string
inside text that is not JSON, `\\uXXXX` escapes in a truncated body) are only caught by
their names; undecodable or stacked Content-Encodings are kept as they are.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

import orjson

from shadow.diff import MAX_DECODED_BYTES, decoded_body, parse_json
from shadow.errors import ConfigError
from shadow.model import Answer, Headers, Request

if TYPE_CHECKING:
    from shadow.settings import Settings

MASK = "[redacted]"
TOKEN, MASK_ACTION, DROP = "token", "mask", "drop"
ACTIONS = (TOKEN, MASK_ACTION, DROP)
DETECTORS = ("card", "jwt", "email", "bearer")
DEFAULT_DETECTORS = ",".join(DETECTORS)

# Kept from the firehose-only redaction: still valid as extra names (--redact-headers,
# --redact-fields); every one of them is also covered by DEFAULT_NAMES.
DEFAULT_HEADERS = ("authorization,proxy-authorization,cookie,set-cookie,x-api-key,"
                   "x-auth-token,x-csrf-token,x-xsrf-token")
DEFAULT_FIELDS = ("password,passwd,pwd,secret,client_secret,token,access_token,refresh_token,"
                  "id_token,api_key,apikey,authorization,session,sessionid,ssn,card_number,"
                  "cvv,cvc,iban,pin")

# Secret names, normalised (lower case, no - or _). Over-matching a name costs little (its
# value becomes a token; equal values still compare equal); missing one leaks a secret.
DEFAULT_NAMES = (
    # credentials: access_token, X-Amz-Security-Token, client_secret, passwd, Authorization...
    "*token*", "*secret*", "*passw*", "*pwd*", "*auth*", "*credential*",
    # keys: key, api_key, Api-Key, accessKey, private_key (not keyboard, keyId)
    "key", "*key", "*apikey*", "*accesskey*", "*privatekey*",
    # signatures: sig (signed URLs), X-Amz-Signature
    "sig", "*signature",
    # sessions and CSRF: session_id, JSESSIONID, PHPSESSID, sid, connect.sid, XSRF-TOKEN
    "*session*", "*sessid", "*sid", "*cookie*", "*csrf*", "*xsrf*",
    # payment and identity
    "ssn", "cvv", "cvv2", "cvc", "cvc2", "csc", "iban", "pin", "pincode", "pan",
    "*cardnumber", "ccnumber", "creditcard", "otp", "totp", "*jwt*",
)
# Never secrets by name, though a default pattern matches them (values still go through the
# detectors): JSON `author`, response headers describing authentication, token counts.
ALLOW = (
    "author", "authors", "authorid", "authorname", "authored", "authoredat",
    "wwwauthenticate", "proxyauthenticate", "accesscontrolallowcredentials",
    "prompttokens", "completiontokens", "totaltokens", "maxtokens", "inputtokens",
    "outputtokens", "cachedtokens", "reasoningtokens", "maxoutputtokens",
    "maxcompletiontokens", "tokencount", "tokentype",
)
# Headers whose values are redacted as URLs
URL_HEADERS = frozenset({"location", "content-location", "referer"})
# Headers left alone (structure, not data; a Content-Type's multipart boundary must stay
# equal to the body's); the request id header (`--request-id-header`) joins them
PLAIN_HEADERS = frozenset({
    "content-type", "content-length", "content-encoding", "transfer-encoding", "host",
    "date", "last-modified", "expires", "age", "etag", "if-match", "if-none-match",
    "if-modified-since", "if-unmodified-since", "accept", "accept-encoding", "accept-language",
    "accept-ranges", "cache-control", "pragma", "connection", "keep-alive", "vary", "te",
    "upgrade", "x-request-id", "x-correlation-id", "traceparent", "tracestate",
    "content-md5", "digest", "server", "via", "sec-websocket-accept", "sec-websocket-version",
})
ECHO_MIN_BYTES = 8  # shorter secrets are not looked for in the answers (see Changes.echoes)

_MASK_B = MASK.encode()
_TOKEN_RE = re.compile(rb"tok_(?:[a-z]+_)?[0-9a-f]{16}")
_BINARY_MEDIA = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset({"application/octet-stream", "application/pdf", "application/zip",
                           "application/gzip", "application/x-protobuf",
                           "application/protobuf", "application/grpc", "application/wasm"})
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"

# ---- names ----

_NORMAL = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "-_")
# bytes -> words: ASCII letters lower-cased, `-` and `_` deleted (joined, as normalisation
# does), every other byte a separator
_WORDS = bytes((c + 32 if 65 <= c <= 90 else c) if (65 <= c <= 90 or 97 <= c <= 122) else 32
               for c in range(256))
_CACHE_MAX = 8192
_ANY: set[bytes] = {b"*"}  # _scan: every text may hold a secret name
_WORD_CACHE_MAX = 65536


def normalise(name: str) -> str:
    """`X-Api-Key`, `api_key`, `apiKey` -> `apikey`: ASCII lower case, `-` and `_` removed."""
    return name.translate(_NORMAL)


def names(csv: str | None) -> frozenset[str]:
    """`"A, b"` -> {"a", "b"}: a comma-separated setting as lower-case names."""
    return frozenset(n.strip().lower() for n in (csv or "").split(",") if n.strip())


def _csv(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def _words(data: bytes) -> set[bytes]:
    return set(data.translate(_WORDS, b"-_").split())


@dataclass(frozen=True, slots=True)
class _Names:
    """Normalised exact names and globs, plus what the word pre-check needs: the words of the
    exact names and, per glob, its longest run of letters (a name matching the glob holds it
    inside one word; at that word's end when the glob ends with it, as `*key`, at its start
    when the glob starts with it, as `csrf*`): (run, at the start, at the end)."""

    exact: frozenset[str] = frozenset()
    globs: re.Pattern[str] | None = None
    exact_words: frozenset[bytes] = frozenset()
    fragments: tuple[tuple[bytes, bool, bool], ...] = ()
    anything: bool = False  # a pattern without letters: every text may hold a match

    @classmethod
    def of(cls, patterns: Iterable[str]) -> _Names:
        exact: set[str] = set()
        globs: list[str] = []
        words: set[bytes] = set()
        fragments: set[tuple[bytes, bool, bool]] = set()
        anything = False
        for raw in patterns:
            p = normalise(raw.strip())
            if not p:
                continue
            if any(c in p for c in "*?["):
                globs.append(p)
                literal = re.sub(r"\[[^\]]*\]?", " ", p).replace("*", " ").replace("?", " ")
                runs = re.findall(r"[a-z]+", literal)
                if runs:
                    run = max(runs, key=len)
                    fragments.add((run.encode(), p.startswith(run), p.endswith(run)))
                else:
                    anything = True
            else:
                exact.add(p)
                w = _words(_enc(p))
                words |= w
                anything = anything or not w
        pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) \
            if globs else None
        return cls(frozenset(exact), pattern, frozenset(words), tuple(sorted(fragments)),
                   anything)

    def match(self, normal: str) -> bool:
        return normal in self.exact or (self.globs is not None and
                                        self.globs.match(normal) is not None)


def check_names(value: str, flag: str) -> None:
    """A settings check: comma-separated names or globs, each with something besides - and _."""
    for item in _csv(value):
        if not normalise(item):
            raise ConfigError(f"{flag}: {item!r} is empty once '-' and '_' are ignored (names "
                              "are matched without them); write a name or a glob such as "
                              "'*token*'")
        if any(ord(c) < 32 or c in "\"'" for c in item):
            raise ConfigError(f"{flag}: {item!r} holds a quote or a control character; write "
                              "plain names or globs separated by commas, e.g. "
                              "'x-tenant-key,*otp*'")


def check_action(value: str, flag: str) -> None:
    if value.strip().lower() not in ACTIONS:
        raise ConfigError(f"{flag}: expected token, mask or drop, got {value!r} (token: a "
                          "stable keyed hash, equal secrets compare equal; mask: [redacted]; "
                          "drop: the item removed)")


def check_detectors(value: str, flag: str) -> None:
    unknown = [d for d in _csv(value.lower()) if d not in DETECTORS]
    if unknown:
        raise ConfigError(f"{flag}: unknown detector {unknown[0]!r}; choose among "
                          f"{', '.join(DETECTORS)} (comma-separated; '' turns detection off)")


# ---- value detectors (on bytes) ----

# Each detector first looks for its candidates with C-speed passes (translate, find); its
# regular expression then runs only where they are.
_DIGIT_CLASS = bytes(48 if 48 <= c <= 57 else 120 for c in range(256))
_CARD_CLASS = bytes(48 if 48 <= c <= 57 or c in (32, 45) else 120 for c in range(256))
_THIRTEEN = b"0" * 13
_RUN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~+/=-"
_RUN_CLASS = bytes(97 if c in _RUN_CHARS else 32 for c in range(256))
_RUN32 = b"a" * 32
_NON_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)
_HEX = b"0123456789abcdefABCDEF"
_BEARER_WORDS = frozenset({b"bearer", b"basic", b"token"})

_LOCAL_CLASS = bytes(97 if c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
                     else 32 for c in range(256))
_EMAIL = re.compile(
    rb"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}(?![A-Za-z0-9-])")
_CARD_RUN = re.compile(rb"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}")
_CARD_GROUP = re.compile(rb"[0-9]+")
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_ALNUM16 = re.compile(rb"[A-Za-z0-9]{16,}")
_BEARER = re.compile(rb"(?i)(?:bearer|basic|token)[ \t]+([A-Za-z0-9._~+/=-]{8,})")
_WORD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGIT_VALUE = bytes((c - 48) if 48 <= c <= 57 else 0 for c in range(256))
_DOUBLED_VALUE = bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)[c - 48] if 48 <= c <= 57 else 0
                       for c in range(256))

Span = tuple[int, int, bytes]  # start, end, kind (b"card_", ...)


def _runs(classes: bytes, needle: bytes, stop: bytes) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of `needle`'s byte at least len(needle) long."""
    out = []
    i = classes.find(needle)
    while i >= 0:
        e = classes.find(stop, i + len(needle))
        e = len(classes) if e < 0 else e
        out.append((i, e))
        i = classes.find(needle, e)
    return out


def _luhn(digits: bytes) -> bool:
    """The Luhn check: every second digit from the right doubled (9 subtracted past 9)."""
    return (sum(digits[-1::-2].translate(_DIGIT_VALUE))
            + sum(digits[-2::-2].translate(_DOUBLED_VALUE))) % 10 == 0


def _is_card(digits: bytes) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in b"23456" and _luhn(digits)


def _cards(data: bytes) -> list[Span]:
    out: list[Span] = []
    for lo, hi in _runs(data.translate(_CARD_CLASS), _THIRTEEN, b"x"):
        if len(data[lo:hi].translate(None, _NON_DIGITS)) < 13:
            continue  # spaces or dashes, not digits
        for m in _CARD_RUN.finditer(data, lo, hi):
            out += _card_spans(m.start(), m.group())
    return out


def _card_spans(start: int, run: bytes) -> list[Span]:
    digits = run.translate(None, b" -")
    if _is_card(digits):
        return [(start, start + len(run), b"card_")]
    if len(digits) <= 19 or len(digits) == len(run):
        return []
    # separated groups: a card among other numbers ("4111 1111 1111 1111 12 25")
    out: list[Span] = []
    groups = [g.span() for g in _CARD_GROUP.finditer(run)]
    i = 0
    while i < len(groups):
        n, j = 0, i
        while j < len(groups) and n < 19:
            n += groups[j][1] - groups[j][0]
            j += 1
            s, e = groups[i][0], groups[j - 1][1]
            if 13 <= n <= 19 and _is_card(run[s:e].translate(None, b" -")):
                out.append((start + s, start + e, b"card_"))
                break
        else:
            i += 1
            continue
        i = j
    return out


def _emails(data: bytes) -> list[Span]:
    out: list[Span] = []
    at = data.find(b"@")
    lo = 0
    while at >= 0:
        window = max(lo, at - 64)
        start = window + data[window:at].translate(_LOCAL_CLASS).rfind(b" ") + 1
        m = _EMAIL.match(data, start) if start < at else None
        if m is not None:
            out.append((start, m.end(), b"email_"))
            lo = m.end()
            at = data.find(b"@", lo)
        else:
            at = data.find(b"@", at + 1)
    return out


def _long_runs(data: bytes, jwt: bool, random: bool) -> list[Span]:
    """JWTs and long random strings: both live in runs of 32+ [A-Za-z0-9_.~+/=-]."""
    out: list[Span] = []
    for lo, hi in _runs(data.translate(_RUN_CLASS), _RUN32, b" "):
        run = data[lo:hi]
        if jwt and b"eyJ" in run:
            m = _JWT.search(run)  # `q=eyJ...`: `=` is a base64 character too
            if m is not None:
                out.append((lo + m.start(), lo + m.end(), b"jwt_"))
                continue
        if random and run.lower() != run and run.upper() != run and \
                any(_is_random(p) for p in _ALNUM16.findall(run)):
            out.append((lo, hi, b"cred_"))
    return out


def _is_random(piece: bytes) -> bool:
    return (piece.lower() != piece and piece.upper() != piece
            and bool(piece.translate(None, _NON_DIGITS)) and bool(piece.translate(None, _HEX)))


def _bearers(data: bytes) -> list[Span]:
    out: list[Span] = []
    lower = data.lower()
    for word in _BEARER_WORDS:
        i = lower.find(word)
        while i >= 0:
            if i == 0 or data[i - 1] not in _WORD_CHARS or data[i - 2:i - 1] == b"\\":
                m = _BEARER.match(data, i)
                if m is not None:
                    cred = m.group(1)
                    if not (cred.isalpha() and cred.islower()) and not _TOKEN_RE.fullmatch(cred):
                        out.append((m.start(1), m.end(1), b"cred_"))
            i = lower.find(word, i + len(word))
    return out


def _disjoint(spans: list[Span]) -> list[Span]:
    spans.sort(key=lambda s: (s[0], -s[1]))
    out: list[Span] = []
    end = -1
    for s in spans:
        if s[0] >= end:
            out.append(s)
            end = s[1]
    return out


# ---- name/value pairs in text ----

_JSON_KEY_NAME = re.compile(rb'"([^"]*)"[ \t\r\n]*:')
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")
_NUMBER = re.compile(rb"-?[0-9][0-9.eE+-]*")
_PAIR_EQ = re.compile(rb"(?<![A-Za-z0-9_.\[\]-])([A-Za-z][A-Za-z0-9_.\[\]-]{0,63})="
                      rb"(\"[^\"\r\n]*\"|'[^'\r\n]*'|[^&\s\"'<>;,\\]*)")
_PAIR_JSON = re.compile(rb'"([^"\\\r\n]{1,64})"[ \t]*:[ \t]*("(?:[^"\\\r\n]|\\.)*"?|-?[0-9][0-9.eE+-]*)')
_PAIR_LINE = re.compile(rb"(?m)^[ \t]*([A-Za-z][A-Za-z0-9_.-]{0,63})[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$")
_PAIR_XML = re.compile(rb"<([A-Za-z_][A-Za-z0-9_.-]{0,63})(?:[ \t][^<>]*)?>([^<]{1,4096})</\1>")
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.I)
_PART_NAME = re.compile(rb'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"')
_PART_FILE = re.compile(rb'(?i)content-disposition:[^\r\n]*?\bfilename="')
_PART_TYPE = re.compile(rb"(?im)^content-type:[ \t]*([^\r\n;]+)")

Edit = tuple[int, int, int, bytes]  # start, priority (0 by name, 1 detector), end, replacement


def _apply(data: bytes, edits: list[Edit]) -> bytes:
    if not edits:
        return data
    edits.sort()
    out: list[bytes] = []
    pos = 0
    for s, _, e, rep in edits:
        if s < pos:
            continue  # inside an edit already made (a detector hit in a secret's value)
        out.append(data[pos:s])
        out.append(rep)
        pos = e
    out.append(data[pos:])
    return b"".join(out)


def _number_text(raw: bytes) -> bytes:
    """A JSON number as its canonical text, so 1.50 and 1.5 give one token."""
    try:
        if raw.lstrip(b"-").isdigit():
            return str(int(raw)).encode()
        return orjson.dumps(float(raw))
    except (ValueError, orjson.JSONEncodeError):
        return raw


def _dump(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass")


def _header(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _is_text(body: bytes) -> bool:
    if b"\x00" in body[:4096]:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(body) - 3 and e.reason == "unexpected end of data"
    return True


@dataclass(frozen=True, slots=True)
class Changes:
    """What `redact_request` / `redact_answer` changed: enough for the caller to seal the
    originals the replay needs."""

    url: bool = False
    body: bool = False
    headers: frozenset[str] = frozenset()  # lower-case names changed or removed
    # secrets found by name (and credentials after Bearer/Basic), in clear, at least
    # ECHO_MIN_BYTES long: pass them to `answer(a, echoes=...)` so a V1/V2 answer that echoes
    # them (under any name) does not keep them. Memory only: never store or log them.
    echoes: frozenset[bytes] = frozenset()

    def __bool__(self) -> bool:
        return self.url or self.body or bool(self.headers)


UNCHANGED = Changes()


class _Ctx:
    """One redaction call's state: the secrets seen (for echoes) and what the raw pre-checks
    found about the body being walked."""

    __slots__ = ("echoes", "detect", "pairs", "media", "encoding")

    def __init__(self, collect: bool = False) -> None:
        self.echoes: set[bytes] | None = set() if collect else None
        self.media: str | None = None  # the Content-Type and Content-Encoding headers' values
        self.encoding: str | None = None
        self.detect = True  # strings may hold a detector hit
        self.pairs = True  # strings may hold a `name=value` pair with a secret name


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """A redaction policy: build it with `from_settings` (or `build`), share it; it is
    immutable apart from bounded caches of name verdicts and tokens."""

    action: str = TOKEN
    key: bytes | None = field(default=None, repr=False)
    detectors: frozenset[str] = frozenset(DETECTORS)
    explicit: _Names = field(default_factory=_Names)  # --redact-names: always secrets
    allow: _Names = field(default_factory=_Names)  # ALLOW + --redact-allow
    listed: _Names = field(default_factory=_Names)  # DEFAULT_NAMES, --redact-headers/-fields
    plain_headers: frozenset[str] = PLAIN_HEADERS
    decoded_cap_bytes: int = MAX_DECODED_BYTES
    _names: dict[str, bool] = field(default_factory=dict, init=False, repr=False)
    _bnames: dict[bytes, bool] = field(default_factory=dict, init=False, repr=False)
    _kinds: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _clear_words: set[bytes] = field(default_factory=set, init=False, repr=False)
    _maybe_words: set[bytes] = field(default_factory=set, init=False, repr=False)
    # recent secrets' tokens (bounded): the same session, address or card recurs
    _tokens: dict[tuple[bytes, bytes], bytes] = field(default_factory=dict, init=False,
                                                      repr=False)
    _mac: Any = field(default=None, init=False, repr=False)
    _fragments: re.Pattern[bytes] | None = field(default=None, init=False, repr=False)
    _patterns: dict[bytes, re.Pattern[bytes]] = field(default_factory=dict, init=False,
                                                      repr=False)
    _clean_values: dict[str, bool] = field(default_factory=dict, init=False, repr=False)
    _clean_urls: dict[str, bool] = field(default_factory=dict, init=False, repr=False)
    _exact_words: frozenset[bytes] = field(default=frozenset(), init=False, repr=False)
    _any_name: bool = field(default=False, init=False, repr=False)
    _enabled: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"redaction action must be token, mask or drop, not "
                              f"{self.action!r}")
        if self.key is not None:
            if len(self.key) < 16:
                raise ConfigError("the redaction key must be at least 16 bytes")
            object.__setattr__(self, "_mac", hmac.new(self.key, digestmod="sha256"))
        frags = set(self.explicit.fragments + self.listed.fragments)
        # one pattern for all (fast on the short strings it sees: a word, or the new words of
        # a text joined by spaces); a fragment holding a shorter unanchored one is implied
        free = {run for run, start, end in frags if not start and not end}
        kept = sorted(f for f in frags if not any(g != f[0] and g in f[0] for g in free))
        if kept:
            object.__setattr__(self, "_fragments", re.compile(b"|".join(
                (b"(?<![^ ])" if start else b"") + re.escape(run) + (b"(?![^ ])" if end else b"")
                for run, start, end in kept)))
        object.__setattr__(self, "_exact_words",
                           self.explicit.exact_words | self.listed.exact_words)
        object.__setattr__(self, "_any_name", self.explicit.anything or self.listed.anything)
        object.__setattr__(self, "_enabled", bool(
            self.detectors or self.explicit.exact or self.explicit.globs or self.listed.exact
            or self.listed.globs))

    # ---- construction ----

    @classmethod
    def build(cls, *, names: Iterable[str] = (), allow: Iterable[str] = (),
              extra: Iterable[str] = (), defaults: bool = True, action: str = TOKEN,
              detectors: Iterable[str] = DETECTORS, key: bytes | None = None,
              plain_headers: Iterable[str] = (),
              decoded_cap_bytes: int = MAX_DECODED_BYTES) -> Policy:
        """`names` always secret; `allow` never (besides ALLOW), unless in `names`; `extra`
        secret like DEFAULT_NAMES (which `defaults=False` leaves out, with ALLOW)."""
        listed = [*(DEFAULT_NAMES if defaults else ()), *extra]
        return cls(action=action.strip().lower(), key=key,
                   detectors=frozenset(d.strip().lower() for d in detectors if d.strip()),
                   explicit=_Names.of(names), allow=_Names.of([*(ALLOW if defaults else ()),
                                                               *allow]),
                   listed=_Names.of(listed),
                   plain_headers=PLAIN_HEADERS | {h.lower() for h in plain_headers},
                   decoded_cap_bytes=decoded_cap_bytes)

    @classmethod
    def from_settings(cls, settings: Settings, key: bytes | None) -> Policy:
        """The policy the settings describe. `key`: the HMAC key of tokens (16+ bytes); None
        makes tokens masks (for display-only callers, which never need equal tokens)."""
        return cls.build(
            names=_csv(settings.redact_names), allow=_csv(settings.redact_allow),
            extra=[*_csv(settings.redact_headers), *_csv(settings.redact_fields)],
            action=settings.redact_action, detectors=_csv(settings.redact_detectors),
            key=key, plain_headers=[settings.request_id_header],
            decoded_cap_bytes=max(8 * settings.capture_cap_bytes, 1 << 20))

    @classmethod
    def off(cls) -> Policy:
        """Redacts nothing (for measuring what redaction costs)."""
        return cls(detectors=frozenset(), allow=_Names(), listed=_Names())

    @property
    def enabled(self) -> bool:
        return self._enabled

    # ---- names ----

    def is_secret(self, name: str) -> bool:
        """Whether values under this name (header, cookie, parameter, field) are secrets."""
        verdict = self._names.get(name)
        if verdict is None:
            n = normalise(name)
            verdict = self.explicit.match(n) or (not self.allow.match(n) and
                                                 self.listed.match(n))
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            self._names[name] = verdict
        return verdict

    def _secret_b(self, name: bytes) -> bool:
        verdict = self._bnames.get(name)
        if verdict is None:
            verdict = self.is_secret(name.decode("utf-8", "replace"))
            if len(self._bnames) >= _CACHE_MAX:
                self._bnames.clear()
            self._bnames[name] = verdict
        return verdict

    def _scan(self, data: bytes) -> tuple[set[bytes] | None, bool]:
        """(the words of `data` a secret name may hold, or None; whether a Bearer, Basic or
        token word is there). Conservative: every secret name in `data` holds one of those
        words (`_ANY` when a pattern without letters makes every text suspect). The words
        (letter runs, lower-cased, `-` and `_` joined as in normalise()) are first compared at
        C speed with the words known to be clear; new ones are judged by the letters every
        secret name must hold, and remembered."""
        words = data.translate(_WORDS, b"-_").split()
        if not self._any_name and self._clear_words.issuperset(words):
            return None, False  # the usual case: every word seen before, none a secret's
        unique = set(words)
        bearer = not unique.isdisjoint(_BEARER_WORDS)
        if self._any_name:
            return _ANY, bearer
        unknown = unique.difference(self._clear_words, self._maybe_words)
        if unknown:
            self._classify(unknown)
        maybe = unique & self._maybe_words
        return maybe or None, bearer

    def _classify(self, unknown: set[bytes]) -> None:
        """Judge words not seen before: clear, or one a secret name may hold (both remembered,
        bounded; long words, often random, are judged each time)."""
        if len(self._clear_words) >= _WORD_CACHE_MAX:
            self._clear_words.clear()
        if len(self._maybe_words) >= _WORD_CACHE_MAX:
            self._maybe_words.clear()
        frags, exact = self._fragments, self._exact_words
        if exact.isdisjoint(unknown) and (frags is None or
                                          frags.search(b" ".join(unknown)) is None):
            self._clear_words.update(w for w in unknown
                                     if len(w) <= 32 and w not in _BEARER_WORDS)
            return
        for w in unknown:
            if w in exact or (frags is not None and frags.search(w) is not None):
                self._maybe_words.add(w)
            elif len(w) <= 32 and w not in _BEARER_WORDS:
                self._clear_words.add(w)

    def sensitive_path(self, path: str) -> bool:
        """A diff path (`$.user.password`, `items[0]['api_key']`, a header name) that names a
        secret anywhere along it."""
        if self.is_secret(path):
            return True
        return any(self.is_secret(seg) for seg in _PATH_SEGMENTS.split(path) if seg)

    # ---- what a secret becomes ----

    def _replace(self, value: bytes, kind: bytes, ctx: _Ctx | None) -> bytes:
        if ctx is not None and ctx.echoes is not None and not kind and \
                len(value) >= ECHO_MIN_BYTES:
            ctx.echoes.add(value)
        if self.action != TOKEN or self._mac is None:
            return _MASK_B
        token = self._tokens.get((value, kind))
        if token is None:
            h = self._mac.copy()
            h.update(value)
            token = b"tok_" + kind + h.digest()[:8].hex().encode()
            if len(self._tokens) >= 4096:
                self._tokens.clear()
            self._tokens[(value, kind)] = token
        return token

    def token(self, value: str | bytes, kind: str = "") -> str:
        """What the policy turns this secret into (a token, or the mask)."""
        raw = _enc(value) if isinstance(value, str) else value
        return self._replace(raw, kind.encode() + b"_" if kind else b"", None).decode()

    # ---- detectors ----

    def _detect(self, data: bytes, bearer: bool | None = None) -> list[Span]:
        """Detector hits in `data`, disjoint, in order. `bearer`: whether a Bearer, Basic or
        token word is in it (None: look)."""
        d = self.detectors
        if not d or len(data) < 6:
            return []
        out: list[Span] = []
        if "email" in d and b"@" in data:
            out += _emails(data)
        if "card" in d and _THIRTEEN in data.translate(_DIGIT_CLASS, b" -"):
            out += _cards(data)
        jwt, random = "jwt" in d, "bearer" in d
        if (jwt or random) and _RUN32 in data.translate(_RUN_CLASS):
            out += _long_runs(data, jwt and b"eyJ" in data, random)
        if "bearer" in d:
            if bearer is None:
                lower = data.lower()
                bearer = b"bearer" in lower or b"basic" in lower or b"token" in lower
            if bearer:
                out += _bearers(data)
        return _disjoint(out) if len(out) > 1 else out

    def _detector_edits(self, data: bytes, spans: list[Span], ctx: _Ctx | None) -> list[Edit]:
        out: list[Edit] = []
        for s, e, kind in spans:
            value = data[s:e]
            if kind == b"cred_" and ctx is not None and ctx.echoes is not None and \
                    len(value) >= ECHO_MIN_BYTES:
                ctx.echoes.add(value)
            out.append((s, 1, e, self._replace(value, kind, None)))
        return out

    # ---- text ----

    def text(self, s: str) -> str:
        """Free text (a log line, an error message, a diff value) with every detector hit
        and every `name=value`, `"name": value`, `name: value` line or `<name>value</name>`
        with a secret name replaced. The same object when nothing is."""
        if not self.enabled or not s:
            return s
        raw = _enc(s)
        out = self._text(raw, None)
        return s if out is raw else _dec(out)

    def _text(self, data: bytes, ctx: _Ctx | None, *, json_string: bool = False) -> bytes:
        """Detectors plus name/value pairs (only `name=value` inside a JSON string)."""
        if len(data) < 3:
            return data
        if ctx is not None and not ctx.detect and not ctx.pairs:
            return data
        words, bearer = self._scan(data)
        names = words is not None and (ctx is None or ctx.pairs)
        spans = self._detect(data, bearer) if ctx is None or ctx.detect else []
        if not names and not spans:
            return data
        edits: list[Edit] = []
        if names:
            patterns = (_PAIR_EQ,) if json_string else (_PAIR_EQ, _PAIR_JSON, _PAIR_LINE,
                                                        _PAIR_XML)
            for pattern in patterns:
                edits += self._pair_edits(data, pattern, ctx)
        if spans:
            edits += self._detector_edits(data, spans, ctx)
        return _apply(data, edits)

    def _pair_edits(self, data: bytes, pattern: re.Pattern[bytes], ctx: _Ctx | None
                    ) -> list[Edit]:
        out: list[Edit] = []
        for m in pattern.finditer(data):
            name = m.group(1)
            if m.start(1) and data[m.start(1) - 1] == 0x5C:  # `\\npin=`: the n is an escape's
                name = name[1:]
            if not self._secret_b(name):
                continue
            s, e = m.span(2)
            if e > s and data[s] in b"\"'":
                s += 1
                if e > s and data[e - 1] == data[s - 1]:
                    e -= 1
            value = data[s:e]
            if not value or _redacted(value):
                continue
            out.append((s, 0, e, self._replace(value, b"", ctx)))
        return out

    # ---- JSON values ----

    def value(self, value: Any) -> Any:
        """A JSON value with secret-named fields (at any depth) and detector hits in strings
        redacted; the same object when nothing is."""
        if not self.enabled:
            return value
        return self._walk(value, None)

    def _walk(self, v: Any, ctx: _Ctx | None) -> Any:
        t = type(v)
        if t is str:
            return self._string(v, ctx)
        if t is dict:
            items: list[tuple[Any, Any]] = []
            changed = False
            for k, x in v.items():
                nk = self._string(k, ctx) if type(k) is str else k
                if type(k) is str and self.is_secret(k):
                    if self.action == DROP:
                        changed = True
                        continue
                    nx = self._secret_value(x, ctx)
                else:
                    nx = self._walk(x, ctx)
                changed = changed or nk is not k or nx is not x
                items.append((nk, nx))
            return dict(items) if changed else v
        if t is list:
            new = [self._walk(x, ctx) for x in v]
            return new if any(a is not b for a, b in zip(new, v, strict=True)) else v
        if t is int and "card" in self.detectors:
            text = str(v).encode()
            if _is_card(text.lstrip(b"-")):
                return self._replace(text, b"card_", None).decode()
        return v

    def _string(self, s: str, ctx: _Ctx | None) -> str:
        if len(s) < 3:
            return s
        raw = _enc(s)
        out = self._text(raw, ctx, json_string=True)
        return s if out is raw else _dec(out)

    def _secret_value(self, v: Any, ctx: _Ctx | None) -> Any:
        """Every string and number inside `v` replaced; booleans and null hold no secret."""
        t = type(v)
        if t is str:
            raw = _enc(v)
            if not raw or _redacted(raw):
                return v
            return self._replace(raw, b"", ctx).decode()
        if t is int or t is float:
            return self._replace(str(v).encode() if t is int else orjson.dumps(v), b"",
                                 ctx).decode()
        if t is dict:
            return {self._string(k, ctx) if type(k) is str else k: self._secret_value(x, ctx)
                    for k, x in v.items()}
        if t is list:
            return [self._secret_value(x, ctx) for x in v]
        return v

    # ---- bodies ----

    def _json(self, body: bytes, ctx: _Ctx) -> bytes:
        """In place (see the module's doc); parsed and re-serialised when it holds escapes,
        a secret-named array or object, or the action is drop; a truncated or invalid body is
        always edited in place."""
        escaped = b"\\" in body
        parse = escaped or self.action == DROP
        if parse:
            ok, doc = parse_json(body)
            out = self._json_parsed(body, doc, ctx) if ok else None
            if out is not None:
                return out
        # where the strings are: with escaped quotes and backslashes blanked (same length),
        # every quote left opens or closes a string
        scan = body.replace(b"\\\\", b"\x01\x01").replace(b'\\"', b"\x01\x01") \
            if escaped else body
        # an escape (`\\n`, `\\u0041`) glues letters to words: every name may be a secret's
        words, bearer = (_ANY, None) if escaped else self._scan(body)
        spans = self._detect(body, bearer)
        if words is None and not spans:
            return body
        edits: list[Edit] = []
        if words is not None:
            for i in self._secret_values(scan, words):
                c = scan[i]
                if c == 0x22:  # a string
                    j = scan.find(b'"', i + 1)
                    j = len(body) if j < 0 else j
                    value = body[i + 1:j]
                    if value and not _redacted(value):
                        edits.append((i + 1, 0, j, self._replace(value, b"", ctx)))
                elif c == 0x2D or 0x30 <= c <= 0x39:  # a number (or a cut one: `-`)
                    number = _NUMBER.match(scan, i)
                    j = i + 1 if number is None else number.end()
                    edits.append((i, 0, j, b'"' + self._replace(_number_text(body[i:j]), b"",
                                                                ctx) + b'"'))
                elif c in (0x5B, 0x7B):  # an array or object: every value inside
                    if not parse:
                        ok, doc = parse_json(body)
                        out = self._json_parsed(body, doc, ctx) if ok else None
                        if out is not None:
                            return out
                        parse = True  # cut, invalid or too deep: one token for it all
                    j = _container_end(scan, i)
                    edits.append((i, 0, j, b'"' + self._replace(body[i:j], b"", ctx) + b'"'))
            if b"=" in body:
                edits += self._pair_edits(body, _PAIR_EQ, ctx)
        if spans:
            edits += self._json_detector_edits(scan, spans, ctx, body)
        return _apply(body, edits)

    def _secret_values(self, body: bytes, words: set[bytes]) -> list[int]:
        """Where the value of each field with a secret name starts, in order (JSON without
        backslashes: every quote opens or closes a string). `words`: what `_scan` found; a
        secret name holds one of them, so only the strings around them are looked at."""
        starts: list[int] = []
        n = len(body)
        keys: set[bytes] = set()
        if words is _ANY or len(words) > 8:
            keys.update(_JSON_KEY_NAME.findall(body))
        else:
            lower = body.lower()
            for w in words:
                for m in self._word_pattern(w).finditer(lower):
                    s = body.rfind(b'"', 0, m.start()) + 1
                    e = body.find(b'"', m.end())
                    if s > 0 and e > 0:
                        keys.add(body[s:e])
        for key in keys:
            if not self._secret_b(key) and not (b"\\" in key and self._secret_escaped(key)):
                continue
            needle = b'"' + key + b'"'
            i = body.find(needle)
            while i >= 0:
                colon = _COLON.match(body, i + len(needle))
                if colon is not None and colon.end() < n:
                    starts.append(colon.end())
                i = body.find(needle, i + len(needle))
        starts.sort()
        return starts

    def _secret_escaped(self, key: bytes) -> bool:
        """A key written with escapes (`pass\\u0077ord`), judged as what it spells."""
        try:
            name = orjson.loads(b'"' + key.replace(b"\x01\x01", b"\\\\") + b'"')
        except orjson.JSONDecodeError:
            return False
        return isinstance(name, str) and self.is_secret(name)

    def _word_pattern(self, word: bytes) -> re.Pattern[bytes]:
        """`password` as written in a lower-cased name: `-` or `_` between letters."""
        pattern = self._patterns.get(word)
        if pattern is None:
            pattern = re.compile(b"[-_]*".join(re.escape(bytes([c])) for c in word))
            if len(self._patterns) >= 1024:
                self._patterns.clear()
            self._patterns[word] = pattern
        return pattern

    def _json_detector_edits(self, scan: bytes, spans: list[Span], ctx: _Ctx,
                             body: bytes) -> list[Edit]:
        """Hits inside strings are replaced in place; outside a string only a number can
        match (a card): it becomes a string. `scan`: `body` with escapes blanked."""
        out: list[Edit] = []
        quotes, pos = 0, 0
        for s, e, kind in spans:
            quotes += scan.count(b'"', pos, s)
            pos = s
            if s and scan[s - 1] == 0x5C:  # `\\nada@x.org`: the n is the escape's, not the hit's
                s += 5 if body[s:s + 1] == b"u" else 1
                if s >= e:
                    continue
            if quotes & 1:
                out += self._detector_edits(body, [(s, e, kind)], ctx)
                continue
            while s > 0 and body[s - 1] in b"-+.eE0123456789":
                s -= 1
            while e < len(body) and body[e] in b"-+.eE0123456789":
                e += 1
            out.append((s, 1, e, b'"' + self._replace(body[s:e], kind, None) + b'"'))
        return out

    def _json_parsed(self, body: bytes, doc: Any, ctx: _Ctx) -> bytes | None:
        """The parsed document walked and re-serialised; None if it nests too deep to walk.
        With escapes the raw text says little (`\\u0040` is an `@`, `\\n` glues its `n` to
        the next word): the cheap checks then read orjson's own serialisation of the document
        (UTF-8, escapes only for quotes, backslashes and control characters), blanked."""
        flat = body
        if b"\\" in body:
            flat = _dump(doc)
            if b"\\" in flat:
                flat = flat.replace(b"\\\\", b"  ").replace(b'\\"', b"  ")
                for escape in (b"\\n", b"\\r", b"\\t", b"\\b", b"\\f"):
                    flat = flat.replace(escape, b"  ")
        if b"\\" in flat:  # `\\u001f`: judge every string
            ctx.pairs = ctx.detect = True
        else:
            words, bearer = self._scan(flat)
            ctx.pairs = b"=" in flat and words is not None
            spans = self._detect(flat, bearer)
            if words is None and not spans:
                return body  # no secret name, no detector hit: nothing to walk
            ctx.detect = bool(spans)
        try:
            new = self._walk(doc, ctx)
        except RecursionError:
            return None
        finally:
            ctx.detect = ctx.pairs = True
        return body if new is doc else _dump(new)

    def _form(self, body: bytes, ctx: _Ctx) -> bytes:
        text = _dec(body)
        out = self._query(text, ctx, plus=True)
        return body if out is text else _enc(out)

    def _multipart(self, headers: Headers, body: bytes, ctx: _Ctx) -> bytes:
        ctype = (ctx.media or "").encode("latin-1", "replace")
        m = _BOUNDARY.search(ctype)
        if m is None:
            return self._text(body, ctx) if _is_text(body) else body
        words, bearer = self._scan(body)
        if words is None and not self._detect(body, bearer):
            return body
        delimiter = b"--" + m.group(1)
        chunks = body.split(delimiter)
        out = [chunks[0]]
        changed = False
        for chunk in chunks[1:]:
            new = self._part(chunk, ctx)
            changed = changed or new is not chunk
            if new is not None:
                out.append(new)
        if not changed:
            return body
        return delimiter.join(out)

    def _part(self, chunk: bytes, ctx: _Ctx) -> bytes | None:
        """One multipart part (None: dropped)."""
        if chunk.startswith(b"--"):
            return chunk  # the closing delimiter and the epilogue
        sep = b"\r\n\r\n" if b"\r\n\r\n" in chunk else b"\n\n"
        head, found, rest = chunk.partition(sep)
        if not found:
            return chunk
        tail = b"\r\n" if rest.endswith(b"\r\n") else (b"\n" if rest.endswith(b"\n") else b"")
        content = rest[:len(rest) - len(tail)]
        name = _PART_NAME.search(head)
        if name is not None and self._secret_b(name.group(1)):
            if self.action == DROP:
                return None
            if not content or _redacted(content):
                return chunk
            return head + sep + self._replace(content, b"", ctx) + tail
        ptype = _PART_TYPE.search(head)
        media = ptype.group(1).strip().lower().decode("latin-1") if ptype else ""
        if _binary(media) or (_PART_FILE.search(head) and not _is_text(content)) or \
                not _is_text(content):
            return chunk
        new = self._json(content, ctx) if "json" in media else self._text(content, ctx)
        return chunk if new is content else head + sep + new + tail

    def _body(self, headers: Headers, body: bytes, ctx: _Ctx) -> bytes:
        kind = _body_kind(ctx.media)
        if kind == "json" or (kind == "" and body.lstrip()[:1] in (b"{", b"[")):
            return self._json(body, ctx)
        if kind == "binary":
            return body
        if kind == "form":
            return self._form(body, ctx)
        if kind == "multipart":
            return self._multipart(headers, body, ctx)
        if _is_text(body):
            return self._text(body, ctx)
        return body

    def _whole_body(self, headers: Headers, body: bytes, truncated: bool, ctx: _Ctx
                    ) -> tuple[bytes, Headers, bool]:
        """(body, headers, truncated): decoded first when compressed (see the module's doc)."""
        if not body:
            return body, headers, truncated
        encoding = (ctx.encoding or "").strip().lower()
        if not encoding or encoding == "identity":
            return self._body(headers, body, ctx), headers, truncated
        decoded = decoded_body(Answer(None, headers, body))
        if decoded is None:
            return body, headers, truncated  # undecodable or a stacked encoding: kept
        new = self._body(headers, decoded, ctx)
        if new is decoded:
            return body, headers, truncated
        if len(new) > self.decoded_cap_bytes:
            new, truncated = new[:self.decoded_cap_bytes], True
        return new, [(k, v) for k, v in headers if k.lower() != "content-encoding"], truncated

    # ---- URLs ----

    def url(self, url: str) -> str:
        """A path+query or an absolute URL: query and `#fragment` parameters by name, the
        user-info password, detector hits anywhere. The same object when nothing changes."""
        if not self.enabled or not url:
            return url
        return self._url(url, None)

    def _url(self, url: str, ctx: _Ctx | None) -> str:
        if url in self._clean_urls:
            return url
        if "%" not in url and "+" not in url and "@" not in url:
            raw = _enc(url)
            words, bearer = self._scan(raw) if "=" in url else (None, False)
            if words is None and not self._detect(raw, bearer):
                _remember(self._clean_urls, url)
                return url
        rest, hsep, fragment = url.partition("#")
        base, qsep, query = rest.partition("?")
        authority, path = "", base
        scheme_end = base.find("://")
        if scheme_end > 0 and base[:scheme_end].isascii() and base[:scheme_end].isalnum():
            authority_end = base.find("/", scheme_end + 3)
            authority_end = len(base) if authority_end < 0 else authority_end
            authority, path = base[:authority_end], base[authority_end:]
        new_authority = self._authority(authority, scheme_end + 3, ctx) if authority else ""
        new_path = self._path(path, ctx)
        new_query = self._query(query, ctx, plus=True) if qsep else query
        if hsep and "=" in fragment:
            new_fragment = self._query(fragment, ctx, plus=False)
        else:
            new_fragment = self._path(fragment, ctx) if hsep else fragment
        if new_authority is authority and new_path is path and new_query is query and \
                new_fragment is fragment:
            return url
        return f"{new_authority}{new_path}{qsep}{new_query}{hsep}{new_fragment}"

    def _authority(self, head: str, start: int, ctx: _Ctx | None) -> str:
        """`scheme://user:password@host`: the password (or a user-info without one, often a
        token) redacted."""
        at = head.rfind("@", start)
        if at < 0:
            return head
        userinfo = head[start:at]
        user, colon, password = userinfo.partition(":")
        secret = password if colon else user
        if not secret or _redacted(_enc(secret)):
            return head
        new = self._replace(unquote_to_bytes(_enc(secret)), b"", ctx).decode()
        if self.action == DROP:
            new = ""
        return head[:start] + (f"{user}:{new}" if colon else new) + head[at:]

    def _path(self, path: str, ctx: _Ctx | None) -> str:
        if len(path) < 6 or not self.detectors:
            return path
        raw = _enc(path)
        if "%" in path:
            decoded = unquote_to_bytes(raw)
            spans = self._detect(decoded)
            if spans:
                new = _apply(decoded, self._detector_edits(decoded, spans, ctx))
                return quote_from_bytes(new, safe="/!$&'()*+,;=:@~")
        spans = self._detect(raw)
        if not spans:
            return path
        return _dec(_apply(raw, self._detector_edits(raw, spans, ctx)))

    def _query(self, query: str, ctx: _Ctx | None, *, plus: bool) -> str:
        """`a=1&token=x`: parameters with secret names lose their values (or themselves, with
        drop); detector hits in values are replaced; every other byte is kept."""
        if not query:
            return query
        raw = _enc(query)
        encoded = "%" in query or (plus and "+" in query)
        words, bearer = self._scan(raw)
        names = words is not None or encoded
        detect = bool(self.detectors) and (encoded or bool(self._detect(raw, bearer)))
        if not names and not detect:
            return query
        out: list[str] = []
        changed = False
        for part in query.split("&"):
            name, eq, value = part.partition("=")
            if names:
                plain = name.replace("+", " ") if plus else name
                if self.is_secret(unquote(plain) if "%" in plain else plain):
                    if self.action == DROP:
                        changed = True
                        continue
                    secret = unquote_to_bytes(_enc(value.replace("+", " ") if plus else value))
                    if eq and value and not _redacted(secret):
                        new = self._replace(secret, b"", ctx).decode()
                        out.append(f"{name}={new}")
                        changed = True
                        continue
            if detect and value:
                new_value = self._query_value(value, ctx, plus)
                if new_value is not value:
                    out.append(f"{name}={new_value}")
                    changed = True
                    continue
            out.append(part)
        return "&".join(out) if changed else query

    def _query_value(self, value: str, ctx: _Ctx | None, plus: bool) -> str:
        """Detector hits in a query value: read with `+` as itself (an e-mail address's) and,
        failing that, as a space (a form's)."""
        readings = [unquote_to_bytes(_enc(value))]
        if plus and "+" in value:
            readings.append(unquote_to_bytes(_enc(value.replace("+", " "))))
        for decoded in readings:
            spans = self._detect(decoded)
            if spans:
                new = _apply(decoded, self._detector_edits(decoded, spans, ctx))
                return _requote(new, decoded, value)
        return value

    # ---- headers ----

    def header_pairs(self, headers: Iterable[tuple[str, str]]) -> Headers:
        """Request or answer headers, redacted (a new list)."""
        listed = list(headers)
        if not self.enabled:
            return listed
        return self._headers(listed, _Ctx())[0]

    def _kind(self, name: str) -> str:
        kind = self._kinds.get(name)
        if kind is None:
            lname = name.lower()
            if lname in ("content-type", "content-encoding"):
                kind = lname
            elif lname == "cookie":
                kind = "cookie"
            elif lname == "set-cookie":
                kind = "set-cookie"
            elif lname in URL_HEADERS:
                kind = "url"
            elif self.is_secret(name):
                kind = "secret"
            elif lname in self.plain_headers:
                kind = "plain"
            else:
                kind = "detect"
            if len(self._kinds) >= _CACHE_MAX:
                self._kinds.clear()
            self._kinds[name] = kind
        return kind

    def _headers(self, headers: Headers, ctx: _Ctx) -> tuple[Headers, set[str]]:
        """(headers, lower-case names changed): the very same list when nothing changed. Sets
        ctx.media and ctx.encoding from Content-Type and Content-Encoding on the way."""
        out: Headers | None = None
        changed: set[str] = set()
        detect: list[int] | None = None
        for i, (k, v) in enumerate(headers):
            kind = self._kinds.get(k) or self._kind(k)
            if kind == "plain":
                continue
            if kind == "content-type":
                if ctx.media is None:
                    ctx.media = v
                continue
            if kind == "content-encoding":
                if ctx.encoding is None:
                    ctx.encoding = v
                continue
            if kind == "detect":
                if self.detectors and len(v) >= 6 and v not in self._clean_values:
                    detect = [i] if detect is None else [*detect, i]
                continue
            if kind == "secret":
                raw = _enc(v)
                if self.action == DROP:
                    new: str | None = None
                elif not raw or _redacted(raw):
                    continue
                else:
                    new = self._replace(raw, b"", ctx).decode()
                    _, space, cred = v.partition(" ")
                    if space and ctx.echoes is not None and len(cred) >= ECHO_MIN_BYTES:
                        ctx.echoes.add(_enc(cred.strip()))
            elif kind == "cookie":
                new = self._cookies(v, ctx)
            elif kind == "set-cookie":
                new = self._set_cookie(v, ctx)
            else:
                new = self._url(v, ctx)
            if new is v:
                continue
            if out is None:
                out = list(headers)
            out[i] = (k, new)  # type: ignore[assignment]  # None: removed below
            changed.add(k.lower())
        for i in detect or ():
            k, v = headers[i]
            raw = _enc(v)
            spans = self._detect(raw)
            if not spans:
                _remember(self._clean_values, v)
                continue
            if out is None:
                out = list(headers)
            out[i] = (k, _dec(_apply(raw, self._detector_edits(raw, spans, ctx))))
            changed.add(k.lower())
        if out is None:
            return headers, changed
        return [pair for pair in out if pair[1] is not None], changed

    def _cookies(self, value: str, ctx: _Ctx) -> str | None:
        """`a=1; sid=x`: by cookie name, names kept; None when drop removed every cookie."""
        parts = value.split(";")
        out: list[str] = []
        changed = False
        for part in parts:
            new = self._cookie_pair(part, ctx)
            if new is None:
                changed = True
                continue
            changed = changed or new is not part
            out.append(new)
        if not changed:
            return value
        if not out:
            return None
        joined = ";".join(out)
        return joined.lstrip() if not value.startswith(" ") else joined

    def _set_cookie(self, value: str, ctx: _Ctx) -> str | None:
        pair, semi, attributes = value.partition(";")
        new = self._cookie_pair(pair, ctx)
        if new is pair:
            return value
        return None if new is None else f"{new}{semi}{attributes}"

    def _cookie_pair(self, part: str, ctx: _Ctx) -> str | None:
        name, eq, value = part.partition("=")
        if not eq:
            return part
        if self.is_secret(name.strip()):
            if self.action == DROP:
                return None
            inner = value.strip()
            quoted = len(inner) >= 2 and inner[0] == inner[-1] == '"'
            secret = _enc(inner[1:-1] if quoted else inner)
            if not secret or _redacted(secret):
                return part
            new = self._replace(secret, b"", ctx).decode()
            return f'{name}="{new}"' if quoted else f"{name}={new}"
        if len(value) >= 6 and self.detectors and value not in self._clean_values:
            new_value = self._query_value(value, ctx, plus=False)  # %-encoded or not
            if new_value is not value:
                return f"{name}={new_value}"
            _remember(self._clean_values, value)
        return part

    # ---- requests and answers ----

    def request(self, r: Request) -> Request:
        """A redacted copy of `r`, or `r` itself when nothing needed redacting."""
        if not self._enabled:
            return r
        return self._request(r, _Ctx())[0]

    def redact_request(self, r: Request, *, echoes: bool = False) -> tuple[Request, Changes]:
        """(redacted request, what changed); `echoes`: also collect the secrets found by name
        (Changes.echoes) to redact them from the answers."""
        if not self._enabled:
            return r, UNCHANGED
        ctx = _Ctx(collect=echoes)
        out, names = self._request(r, ctx)
        return out, _changes(out.url is not r.url, out.body is not r.body, names, ctx)

    def _request(self, r: Request, ctx: _Ctx) -> tuple[Request, set[str]]:
        url = self._url(r.url, ctx)
        headers, names = self._headers(r.headers, ctx)
        body, headers, truncated = self._whole_body(headers, r.body, r.body_truncated, ctx)
        if body is not r.body and len(headers) < len(r.headers):
            names.add("content-encoding")
        if url is r.url and headers is r.headers and body is r.body:
            return r, names
        out = _copy(r)
        out.url, out.headers, out.body, out.body_truncated = url, headers, body, truncated
        return out, names

    def answer(self, a: Answer, echoes: Iterable[bytes] = ()) -> Answer:
        """A redacted copy of `a` (V1's or V2's answer, its error message included), or `a`
        itself when nothing needed redacting. `echoes` (Changes.echoes of its request):
        secrets the client sent, replaced wherever the answer repeats them."""
        if not self._enabled:
            return a
        return self._answer(a, _Ctx(), echoes)[0]

    def redact_answer(self, a: Answer, echoes: Iterable[bytes] = ()) -> tuple[Answer, Changes]:
        """(redacted answer, what changed)."""
        if not self._enabled:
            return a, UNCHANGED
        ctx = _Ctx()
        out, names = self._answer(a, ctx, echoes)
        return out, _changes(False, out.body is not a.body, names, ctx)

    def _answer(self, a: Answer, ctx: _Ctx, echoes: Iterable[bytes]) -> tuple[Answer, set[str]]:
        headers, names = self._headers(a.headers, ctx)
        body, headers, truncated = self._whole_body(headers, a.body, a.body_truncated, ctx)
        error = self.text(a.error) if a.error else a.error
        if echoes:
            echo = sorted({e for e in echoes if len(e) >= ECHO_MIN_BYTES}, key=len, reverse=True)
            if echo:
                body, headers, error, more = self._echoes(echo, body, headers, error, a)
                names |= more
        if body is not a.body and len(headers) < len(a.headers):
            names.add("content-encoding")
        if headers is a.headers and body is a.body and error is a.error:
            return a, names
        out = _copy(a)
        out.headers, out.body, out.body_truncated, out.error = headers, body, truncated, error
        return out, names

    def _echoes(self, echoes: list[bytes], body: bytes, headers: Headers, error: str | None,
                a: Answer) -> tuple[bytes, Headers, str | None, set[str]]:
        names: set[str] = set()
        if body:
            plain = body
            if body is a.body and (_header(headers, "content-encoding") or "identity").strip() \
                    .lower() != "identity":
                plain = decoded_body(Answer(None, headers, body)) or b""
            new = plain
            for e in echoes:
                if e in new:
                    new = new.replace(e, self._replace(e, b"", None))
            if new is not plain:
                body = new
                if plain is not a.body:
                    headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]
        out: Headers | None = None
        for i, (k, v) in enumerate(headers):
            raw = _enc(v)
            new_raw = raw
            for e in echoes:
                if e in new_raw:
                    new_raw = new_raw.replace(e, self._replace(e, b"", None))
            if new_raw is not raw:
                out = list(headers) if out is None else out
                out[i] = (k, _dec(new_raw))
                names.add(k.lower())
        if error:
            raw = _enc(error)
            new_raw = raw
            for e in echoes:
                if e in new_raw:
                    new_raw = new_raw.replace(e, self._replace(e, b"", None))
            if new_raw is not raw:
                error = _dec(new_raw)
        return body, headers if out is None else out, error, names


_PATH_SEGMENTS = re.compile(r"[.\[\]'\"]+")


_Model = TypeVar("_Model", Request, Answer)


def _copy(obj: _Model) -> _Model:
    """A shallow copy of a Request or Answer (slots: every field, whatever the model holds),
    several times cheaper than dataclasses.replace."""
    cls = type(obj)
    new = cls.__new__(cls)
    for name in cls.__slots__:
        setattr(new, name, getattr(obj, name))
    return new


def _changes(url: bool, body: bool, names: set[str], ctx: _Ctx) -> Changes:
    echoes = frozenset(ctx.echoes) if ctx.echoes else frozenset()
    if not url and not body and not names and not echoes:
        return UNCHANGED
    return Changes(url, body, frozenset(names), echoes)


def _enc(text: str) -> bytes:
    """str -> UTF-8, losslessly whatever it holds: bytes that were not UTF-8 (decoded with
    surrogateescape, as servers do with headers and paths) or lone surrogates (from JSON)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _dec(data: bytes) -> str:
    """The inverse of _enc()."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def _remember(clean: dict[str, bool], value: str) -> None:
    """A header value or URL found clean: they repeat (User-Agent, forwarding addresses, hot
    URLs), so the next one costs a lookup. Bounded; short values only; never a secret."""
    if len(value) <= 512:
        if len(clean) >= _CACHE_MAX:
            clean.clear()
        clean[value] = True


def _redacted(value: bytes) -> bool:
    """Already a token or the mask: redacting again keeps it."""
    return value == _MASK_B or (value[:4] == b"tok_" and _TOKEN_RE.fullmatch(value) is not None)


def _binary(media: str) -> bool:
    return media in _BINARY_TYPES or media.startswith(_BINARY_MEDIA)


_BODY_KINDS: dict[str | None, str] = {}


def _body_kind(content_type: str | None) -> str:
    """A Content-Type as the body redaction it calls for: json, form, multipart, binary, text
    (judged by the bytes) or "" (none given: JSON if it looks like it, else text)."""
    kind = _BODY_KINDS.get(content_type)
    if kind is None:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        kind = ("" if not media else "binary" if _binary(media) else "json" if "json" in media
                else "form" if media == _FORM else "multipart" if media == _MULTIPART
                else "text")
        if len(_BODY_KINDS) >= 1024:
            _BODY_KINDS.clear()
        _BODY_KINDS[content_type] = kind
    return kind


def _requote(new: bytes, decoded: bytes, original: str) -> str:
    """A query value after redaction, percent-encoded again only where it was."""
    if _enc(original) == decoded:
        return _dec(new)
    return quote_from_bytes(new, safe="")


def _container_end(body: bytes, i: int) -> int:
    """The end of the array or object starting at `i` (the end of `body` if it is cut)."""
    depth = 0
    n = len(body)
    j = i
    while j < n:
        c = body[j]
        if c == 0x22:
            k = body.find(b'"', j + 1)
            if k < 0:
                return n
            j = k + 1
            continue
        if c in (0x5B, 0x7B):
            depth += 1
        elif c in (0x5D, 0x7D):
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return n


# ---- the firehose's former API ----

class Redaction:
    """Kept for callers of the firehose-only redaction: a mask-only Policy with these extra
    names (every default name and detector included)."""

    @staticmethod
    def from_settings(headers: str | None, fields: str | None) -> Policy:
        return Policy.build(extra=[*_csv(headers), *_csv(fields)], action=MASK_ACTION)


__all__ = ["ACTIONS", "ALLOW", "DEFAULT_DETECTORS", "DEFAULT_FIELDS", "DEFAULT_HEADERS",
           "DEFAULT_NAMES", "DETECTORS", "MASK", "Changes", "Policy", "Redaction",
           "check_action", "check_detectors", "check_names", "names", "normalise"]
