"""The verdict on one exchange (pure): outcome, differences, signature, flags."""

from __future__ import annotations

import hashlib
import re

from shadow.diff import body_differences, header_differences, is_json_media, parse_json
from shadow.model import (
    MATCH,
    MISMATCH,
    SKIPPED,
    V2_ERROR,
    Answer,
    Comparison,
    Difference,
    Request,
)

_INDEX = re.compile(r"\[\d+\]")
_NO_BODY_STATUS = (204, 304)


def class_shape(diff: list[Difference]) -> list[tuple[str, str]]:
    """The shape of a mismatch: sorted set of (path with array indices as [*], kind)."""
    return sorted({(_INDEX.sub("[*]", d.path), d.kind) for d in diff})


def signature(method: str | None, route: str | None, diff: list[Difference]) -> str:
    """Same bug, same signature: (method, route, set of (path with [*] indices, kind))."""
    text = "\n".join([method or "", route or "", *(f"{p}\t{k}" for p, k in class_shape(diff))])
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def answer_flags(side: str, answer: Answer, method: str | None) -> list[str]:
    flags: list[str] = []
    if answer.error:
        flags.append(f"{side}_error")
    if answer.body_truncated:
        flags.append(f"{side}_truncated")
    expects_body = method != "HEAD" and answer.status not in _NO_BODY_STATUS and not answer.error
    if answer.body_size == 0 and expects_body:
        flags.append(f"{side}_empty_body")
    elif answer.body and not answer.header("content-encoding"):
        if is_json_media(answer) and not answer.body_truncated and not parse_json(answer.body)[0]:
            flags.append(f"{side}_invalid_json")
        try:
            answer.body.decode("utf-8")
        except UnicodeDecodeError:
            if not answer.body_truncated:  # a cut may split a UTF-8 sequence
                flags.append(f"{side}_binary_body")
    return flags


def replay_delay_ms(v1_ts: float | None, v2_ts: float | None, v2: Answer) -> float | None:
    """How long after V1's answer V2 was called (V2's answer time minus its latency)."""
    if v1_ts is None or v2_ts is None or v2.skipped:
        return None
    called = v2_ts - (v2.latency_ms or 0.0) / 1000
    return round(max(0.0, called - v1_ts) * 1000, 3)


def compare(request: Request | None, v1: Answer, v2: Answer, route: str | None) -> Comparison:
    method = request.method if request else None
    flags: list[str] = []
    if request is not None and request.body_truncated:
        flags.append("request_truncated")
    flags += answer_flags("v1", v1, method)
    if v2.skipped:
        return Comparison(SKIPPED, [], None, flags)
    flags += answer_flags("v2", v2, method)
    if v2.error or v2.status is None:
        return Comparison(V2_ERROR, [], None, flags)
    diff: list[Difference] = []
    if v1.status != v2.status:
        diff.append(Difference("status", "status", v1.status, v2.status))
    diff += header_differences(v1.headers, v2.headers)
    if method != "HEAD":
        body_diff, body_flags = body_differences(v1, v2)
        diff += body_diff
        flags += body_flags
    if not diff:
        return Comparison(MATCH, [], None, flags)
    return Comparison(MISMATCH, diff, signature(method, route, diff), flags)
