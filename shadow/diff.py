"""Structural differences between two HTTP answers (pure: no I/O, no logging).

Status and a few meaningful headers are always compared; bodies are compared as
JSON (structurally, via deepdiff, after a fast path on canonical bytes) when both
parse, else byte for byte. Compressed bodies are decoded first.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import brotli
import orjson
from deepdiff import DeepDiff

from shadow.model import Answer, Difference, Headers

MAX_DECODED_BYTES = 16 * 1024 * 1024  # decompression-bomb guard
_LONG_NUMBER = re.compile(rb"\d{19}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_KINDS = {
    "values_changed": "changed",
    "type_changes": "type",
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "attribute_added": "added",
    "set_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
    "attribute_removed": "removed",
    "set_item_removed": "removed",
}


# ---- headers ----

def _all(headers: Headers, name: str) -> list[str]:
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]


def _media_type(value: str | None) -> str | None:
    if value is None:
        return None
    parts = [p.strip().lower() for p in value.split(";")]
    params = sorted(p.replace(" ", "") for p in parts[1:] if p.startswith("charset"))
    return ";".join([parts[0], *params])


def _cache_control(value: str | None) -> str | None:
    if value is None:
        return None
    return ", ".join(sorted(t.strip().lower() for t in value.split(",") if t.strip()))


def _location(value: str | None) -> str | None:
    if value is None:
        return None
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*(.*)$", value)
    return (m.group(1) or "/") if m else value


def _cookie_names(headers: Headers) -> list[str] | None:
    values = _all(headers, "set-cookie")
    if not values:
        return None
    return sorted({v.split("=", 1)[0].strip() for v in values})


DEFAULT_HEADERS = ("content-type", "cache-control", "location", "set-cookie")
_NORMALIZE_HEADER = {"content-type": _media_type, "cache-control": _cache_control,
                     "location": _location}


def header_differences(v1: Headers, v2: Headers, *, include: Iterable[str] = (),
                       exclude: Iterable[str] = ()) -> list[Difference]:
    """The default meaningful headers, plus `include`, minus `exclude` (names, any case)."""
    skip = {h.lower() for h in exclude}
    names = [h for h in dict.fromkeys([*DEFAULT_HEADERS, *(h.lower() for h in include)])
             if h not in skip]
    out: list[Difference] = []
    for name in names:
        if name == "set-cookie":
            a_names, b_names = _cookie_names(v1), _cookie_names(v2)
            if a_names != b_names:
                out.append(Difference(name, "header", a_names, b_names))
            continue
        norm = _NORMALIZE_HEADER.get(name, lambda v: v)
        a, b = norm(next(iter(_all(v1, name)), None)), norm(next(iter(_all(v2, name)), None))
        if a != b:
            out.append(Difference(name, "header", a, b))
    return out


# ---- bodies ----

def decoded_body(answer: Answer) -> bytes | None:
    """The body after Content-Encoding (gzip, deflate, br); None if undecodable.

    Never more than MAX_DECODED_BYTES: a few KiB of gzip or brotli can claim gigabytes."""
    encoding = (answer.header("content-encoding") or "").strip().lower()
    body = answer.body
    if not encoding or encoding == "identity" or not body:
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return _gunzip(body)
        if encoding == "deflate":
            try:
                return zlib.decompressobj().decompress(body, MAX_DECODED_BYTES)
            except zlib.error:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, MAX_DECODED_BYTES)
        if encoding == "br":
            out = brotli.Decompressor().process(body, output_buffer_limit=MAX_DECODED_BYTES)
            return out[:MAX_DECODED_BYTES]
    except (OSError, zlib.error, EOFError, ValueError, brotli.error):
        return None
    return None


def _gunzip(body: bytes) -> bytes:
    """Every gzip member, bounded; a truncated body gives what its complete part holds."""
    out = bytearray()
    while body and len(out) < MAX_DECODED_BYTES:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += d.decompress(body, MAX_DECODED_BYTES - len(out))
        if not d.eof:
            break  # truncated, or the bound was reached
        body = d.unused_data
    return bytes(out)


def is_json_media(answer: Answer) -> bool:
    ctype = (answer.header("content-type") or "").lower()
    return "json" in ctype.split(";", 1)[0]


def parse_json(body: bytes) -> tuple[bool, Any]:
    if not body:
        return False, None
    if not _LONG_NUMBER.search(body):
        try:
            return True, orjson.loads(body)
        except orjson.JSONDecodeError:
            return False, None
    try:  # orjson turns integers beyond 64 bits into floats; the standard parser keeps them exact
        return True, json.loads(body)
    except (ValueError, RecursionError):
        return False, None


def child_path(path: str, step: Any) -> str:
    if isinstance(step, int):
        return f"{path}[{step}]"
    if isinstance(step, str) and _IDENT.match(step):
        return f"{path}.{step}"
    return path + "[" + orjson.dumps(str(step)).decode() + "]"


def json_path(parts: list[Any]) -> str:
    path = "$"
    for p in parts:
        path = child_path(path, p)
    return path


def _canonical(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits, or nesting orjson refuses: the exact path
        return _canonical_deep(value)


def _canonical_deep(value: Any) -> bytes:
    """Canonical JSON (sorted keys) of a value nested arbitrarily deep: an explicit stack,
    no recursion (orjson stops at 255 levels, the standard encoder at Python's stack)."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _Token):
            out.append(v.text)
        elif isinstance(v, dict):
            items = sorted(v.items(), key=lambda kv: str(kv[0]))
            out.append("{")
            stack.append(_Token("}"))
            for n, (k, item) in enumerate(reversed(items)):
                stack.append(item)
                stack.append(_Token(json.dumps(str(k)) + ":"))
                if n < len(items) - 1:
                    stack.append(_Token(","))
        elif isinstance(v, (list, tuple)):
            out.append("[")
            stack.append(_Token("]"))
            for n, item in enumerate(reversed(v)):
                stack.append(item)
                if n < len(v) - 1:
                    stack.append(_Token(","))
        else:
            out.append(json.dumps(v))
    return "".join(out).encode("utf-8", "surrogatepass")


class _Token:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


# A difference says where two answers part and shows both sides; it is not a copy of them.
MAX_DIFF_DEPTH = 32  # levels the structural diff descends; deeper subtrees compare by digest
MAX_VALUE_CHARS = 4096  # a Difference keeps at most this much of each side (JSON text)
MAX_PATH_CHARS = 1024
_PREVIEW_CHARS = 200


def clip_depth(value: Any, depth: int = MAX_DIFF_DEPTH) -> Any:
    """`value` with every array or object nested deeper than `depth` replaced by a text
    naming its size and digest: equal subtrees stay equal, different ones differ there."""
    if not isinstance(value, (dict, list)) or _within(value, depth):
        return value  # the usual case: nothing to copy
    return _clip(value, depth)


def _within(value: Any, depth: int) -> bool:
    """Whether no array or object inside `value` sits `depth` or more levels down."""
    if depth <= 0:
        return False
    stack = [(value, 0)]
    while stack:
        v, level = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        for child in children:
            if isinstance(child, (dict, list)):
                if level + 1 >= depth:
                    return False
                stack.append((child, level + 1))
    return True


def _clip(value: Any, depth: int) -> Any:
    if not isinstance(value, (dict, list)):
        return value
    if depth <= 0:
        return _deep_marker(value)
    if isinstance(value, dict):
        return {k: _clip(v, depth - 1) for k, v in value.items()}
    return [_clip(v, depth - 1) for v in value]


def _deep_marker(value: Any) -> str:
    text = _canonical_deep(value)
    kind = "object" if isinstance(value, dict) else "array"
    return (f"<{kind} nested deeper than {MAX_DIFF_DEPTH} levels: {len(text)} bytes, "
            f"sha256 {hashlib.sha256(text).hexdigest()[:16]}>")


def cap_value(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """One side of a Difference as kept: long strings cut, big arrays and objects replaced by
    a text with their size, digest and beginning."""
    if isinstance(value, str):
        return value if len(value) <= limit else \
            f"{value[:limit]}… [{len(value)} characters, cut]"
    if not isinstance(value, (dict, list)):
        return value
    text = _canonical(value)
    if len(text) <= limit:
        return value
    kind = "object" if isinstance(value, dict) else "array"
    preview = text[:_PREVIEW_CHARS].decode("utf-8", "replace")
    return (f"<{kind} of {len(text)} bytes, sha256 {hashlib.sha256(text).hexdigest()[:16]}: "
            f"{preview}…>")


def _cap_path(path: str) -> str:
    return path if len(path) <= MAX_PATH_CHARS else path[:MAX_PATH_CHARS] + "…"


def json_differences(a: Any, b: Any) -> list[Difference]:
    """Structural JSON differences, sorted by path. Key order never matters. The diff stops
    MAX_DIFF_DEPTH levels down (a difference deeper is reported there) and each value it
    keeps is capped (cap_value): a hostile answer cannot make it recurse or grow unbounded."""
    a, b = clip_depth(a), clip_depth(b)
    if _canonical(a) == _canonical(b):
        return []
    # zip: arrays compare position by position (JSON semantics), and 0 never equals false
    tree = DeepDiff(a, b, view="tree", verbose_level=2, zip_ordered_iterables=True)
    out: list[Difference] = []
    for report, items in tree.items():
        kind = _KINDS.get(report, "changed")
        for item in items:
            t1 = None if kind == "added" else cap_value(_plain(item.t1))
            t2 = None if kind == "removed" else cap_value(_plain(item.t2))
            out.append(Difference(_cap_path(json_path(item.path(output_format="list"))),
                                  kind, t1, t2))
    out.sort(key=lambda d: (d.path, d.kind))
    return out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return repr(value)  # deepdiff's NotPresent and friends


def body_preview(body: bytes, size: int) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
        return {"size": size, "text": text[:200]}
    except UnicodeDecodeError:
        return {"size": size, "sha256": hashlib.sha256(body).hexdigest()[:16]}


def body_differences(v1: Answer, v2: Answer,
                     json_diff: Callable[[Any, Any], list[Difference]] = json_differences,
                     ) -> tuple[list[Difference], list[str]]:
    """(differences, flags). Flags say what was odd about the bodies. `json_diff` compares
    two parsed JSON documents (rules plug in here)."""
    flags: list[str] = []
    b1, b2 = decoded_body(v1), decoded_body(v2)
    if b1 is None:
        flags.append("v1_undecodable_encoding")
        b1 = v1.body
    if b2 is None:
        flags.append("v2_undecodable_encoding")
        b2 = v2.body
    if b1 == b2 and v1.body_size == v2.body_size:
        return [], flags
    json1, json2 = is_json_media(v1), is_json_media(v2)
    ok1, doc1 = parse_json(b1) if (json1 or b1[:1] in (b"{", b"[")) else (False, None)
    ok2, doc2 = parse_json(b2) if (json2 or b2[:1] in (b"{", b"[")) else (False, None)
    complete = not v1.body_truncated and not v2.body_truncated
    if ok1 and ok2 and complete:
        return json_diff(clip_depth(doc1), clip_depth(doc2)), flags
    media1, media2 = _media(v1), _media(v2)
    if complete and media1 == media2 == "application/x-www-form-urlencoded":
        return json_diff(form_fields(b1), form_fields(b2)), flags
    if complete and media1 == media2 == "multipart/form-data":
        parts1, parts2 = multipart_parts(v1, b1), multipart_parts(v2, b2)
        if parts1 is not None and parts2 is not None:
            return json_diff(parts1, parts2), flags
    text1, text2 = _text(b1), _text(b2)
    if text1 is not None and text2 is not None and not (json1 or json2):
        return text_differences(text1, text2), flags
    return [Difference("$", "body", body_preview(b1, v1.body_size),
                       body_preview(b2, v2.body_size))], flags


def _media(answer: Answer) -> str:
    return (answer.header("content-type") or "").split(";", 1)[0].strip().lower()


def _text(body: bytes) -> str | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if "\x00" not in text else None


MAX_TEXT_DIFFS = 10


def text_differences(a: str, b: str) -> list[Difference]:
    """Line by line (difflib): `line[n]` is V1's 1-based line number; at most 10 entries."""
    out: list[Difference] = []
    la, lb = a.splitlines(), b.splitlines()
    matcher = difflib.SequenceMatcher(a=la, b=lb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            old = la[i1 + k] if i1 + k < i2 else None
            new = lb[j1 + k] if j1 + k < j2 else None
            kind = "changed" if old is not None and new is not None else (
                "removed" if new is None else "added")
            out.append(Difference(f"line[{i1 + k + 1}]", kind, cap_value(old), cap_value(new)))
            if len(out) >= MAX_TEXT_DIFFS:
                return out
    return out


def form_fields(body: bytes) -> dict[str, list[str]]:
    """application/x-www-form-urlencoded as a mapping of field -> values (order of repeats kept)."""
    fields: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                             keep_blank_values=True):
        fields.setdefault(key, []).append(value)
    return fields


def multipart_parts(answer: Answer, body: bytes) -> dict[str, Any] | None:
    """multipart/form-data part by part: name -> {content_type, filename, text | sha256, size}."""
    ctype = answer.header("content-type") or ""
    match = re.search(r'boundary="?([^";]+)"?', ctype)
    if not match:
        return None
    parts: dict[str, Any] = {}
    for n, chunk in enumerate(body.split(b"--" + match.group(1).encode())[1:]):
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        headers = head.decode("latin-1")
        name = re.search(r'name="([^"]*)"', headers)
        filename = re.search(r'filename="([^"]*)"', headers)
        ptype = re.search(r"(?im)^content-type:\s*(.+)$", headers)
        text = _text(content)
        parts[name.group(1) if name else f"part{n}"] = {
            "content_type": ptype.group(1).strip() if ptype else None,
            "filename": filename.group(1) if filename else None, "size": len(content),
            **({"text": text} if text is not None else
               {"sha256": hashlib.sha256(content).hexdigest()[:16]})}
    return parts
