"""The verdict on one exchange (pure): outcome, differences, signature, flags; and how an
exchange is judged (`judge`: the rules, learned noise, the stale rule, failures as data)."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shadow import jsonpath
from shadow.diff import (
    body_differences,
    child_path,
    header_differences,
    is_json_media,
    json_differences,
    parse_json,
)
from shadow.model import (
    COMPARE_ERROR,
    MATCH,
    MISMATCH,
    SKIPPED,
    V2_ERROR,
    Answer,
    Comparison,
    Difference,
    Exchange,
    Request,
    RouteKey,
)
from shadow.rules import Rule, RuleSet

_INDEX = re.compile(r"\[\d+\]")
_NO_BODY_STATUS = (204, 304)


_KEYED = re.compile(r'\["[^"=]*=[^"]*"\]')  # items of arrays matched by key: ["id=5"]


def class_shape(diff: list[Difference]) -> list[tuple[str, str]]:
    """The shape of a mismatch: sorted set of (path with array indices as [*], kind)."""
    return sorted({(generalize(d.path), d.kind) for d in diff})


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


# A V2 error's signature names its kind ("v2_error:timeout"), so the rollups count errors
# per (route, kind) as they count mismatches per class; mismatch signatures are hex.
V2_ERROR_PREFIX = "v2_error:"
OTHER_ERROR = "other"
# (what the error text holds, the kind): the subscriber's texts ("V2 timed out", "V2
# unreachable: ServerDisconnectedError: ...") name aiohttp's exception and the OS error
_ERROR_KINDS = (
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("reset by peer", "connection reset"),
    ("connectionreseterror", "connection reset"),
    ("connection refused", "connection refused"),
    ("serverdisconnectederror", "connection closed"),
    ("clientconnectorerror", "cannot connect"),
    ("clientpayloaderror", "body cut off"),
    ("transferencodingerror", "body cut off"),
    ("contentlengtherror", "body cut off"),
    ("brokenpipeerror", "connection reset"),
    ("broken pipe", "connection reset"),
)


def error_kind(answer: Answer) -> str:
    """What kind of failure a V2 answer that is an error was (pure; from its text)."""
    if answer.error is None:
        return "no status" if answer.status is None else OTHER_ERROR
    text = answer.error.lower()
    for needle, kind in _ERROR_KINDS:
        if needle in text:
            return kind
    return OTHER_ERROR


def error_kind_of(signature: str | None) -> str | None:
    """The error kind a stored signature names (None: not a V2 error's)."""
    if signature and signature.startswith(V2_ERROR_PREFIX):
        return signature[len(V2_ERROR_PREFIX):] or OTHER_ERROR
    return None


def replay_delay_ms(v1_ts: float | None, v2_ts: float | None, v2: Answer) -> float | None:
    """How long after V1's answer V2 was called (V2's answer time minus its latency)."""
    if v1_ts is None or v2_ts is None or v2.skipped:
        return None
    called = v2_ts - (v2.latency_ms or 0.0) / 1000
    return round(max(0.0, called - v1_ts) * 1000, 3)


def compare(request: Request | None, v1: Answer, v2: Answer, route: str | None,
            rules: Sequence[Rule] = (), v1_secondary: Answer | None = None,
            known_noise: Sequence[str] = ()) -> Comparison:
    """Outcome, differences, signature and flags of one V1/V2 pair, after the active rules.

    With V1's second answer (V1', `--v1-secondary`), a V1/V2 difference where V1 also
    differs from V1' is V1's own noise: it is reported apart and does not make a mismatch."""
    method = request.method if request else None
    flags: list[str] = []
    suppressed: Counter[str] = Counter()
    if request is not None and request.body_truncated:
        flags.append("request_truncated")
    if v1.incomplete:  # a cut V1 answer says nothing about V2: never a mismatch
        return Comparison(SKIPPED, [], None,
                          [*flags, *(["v1_error"] if v1.error else []), v1.incomplete])
    flags += answer_flags("v1", v1, method)
    if v2.skipped:
        return Comparison(SKIPPED, [], None, flags)
    flags += answer_flags("v2", v2, method)
    if v2.error or v2.status is None:
        return Comparison(V2_ERROR, [], V2_ERROR_PREFIX + error_kind(v2), flags)
    diff, body_flags = _differences(v1, v2, rules, method, suppressed)
    flags += body_flags
    noise: list[Difference] = []
    noise_paths: list[str] | None = None
    if v1_secondary is not None and v1_secondary.status is not None and not v1_secondary.error:
        own, _ = _differences(v1, v1_secondary, rules, method, Counter())
        noise_paths = sorted({generalize(d.path) for d in own})
        paths = noise_paths
        noise = [d for d in diff if _under_any(generalize(d.path), paths)]
        diff = [d for d in diff if not _under_any(generalize(d.path), paths)]
        if noise:
            flags.append("noise")
    if known_noise:  # learned from V1's own answers over time; only with --auto-ignore-noise
        learned = [d for d in diff if _under_any(generalize(d.path), list(known_noise))]
        if learned:
            noise += learned
            diff = [d for d in diff if d not in learned]
            flags.append("suspected_noise")
    outcome = MISMATCH if diff else MATCH
    return Comparison(outcome, diff, signature(method, route, diff) if diff else None, flags,
                      suppressed={rule: 1 for rule, n in suppressed.items() if n},
                      noise=noise, noise_paths=noise_paths)


def compare_error(step: str, error: BaseException, flags: Sequence[str] = ()) -> Comparison:
    """The outcome of an exchange whose `step` (memory, diff, store, ...) failed: recorded
    as data, with the reason, so it neither stalls the others nor passes as a match."""
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if len(reason) > 300:
        reason = reason[:300] + "…"
    return Comparison(COMPARE_ERROR, [], None, [*flags, f"compare_error:{step}: {reason}"])


def refused(result: Comparison, step: str, error: BaseException) -> Comparison:
    """What is recorded instead of `result` when `step` (the store) refuses it: a
    compare_error that keeps its stale flag and replay delay."""
    failed = compare_error(step, error, [f for f in result.flags if f == "stale"])
    failed.replay_delay_ms = result.replay_delay_ms
    return failed


@dataclass(slots=True)
class Judgement:
    """One exchange judged: the comparison to record; where V1's answer changed since its
    previous answer to the same request (None: no previous answer); and, when a step failed
    (the comparison is then a compare_error), which one and why, for the log."""

    comparison: Comparison
    v1_changed: list[str] | None = None
    step: str | None = None
    error: Exception | None = None


def judge(x: Exchange, rules: RuleSet, today: datetime.date, *, stale_after_s: float,
          known_noise: Mapping[RouteKey, Sequence[str]] | None = None,
          remember: Callable[[Request, Answer], list[str] | None] | None = None) -> Judgement:
    """How one exchange with both answers is judged: `remember` (V1's memory of identical
    requests) sees V1's whole answers, the rules active for its route today and the noise
    learned on it apply, and V2 answering more than `stale_after_s` after V1 flags it stale.
    A step that raises makes it a compare_error, so one odd exchange never stops the others."""
    assert x.v1 is not None and x.v2 is not None
    changed: list[str] | None = None
    step = "noise_memory"
    try:
        if remember is not None and x.request is not None and not x.v1.incomplete:
            changed = remember(x.request, x.v1)
        step = "diff"
        learned = (known_noise or {}).get((x.method or "?", x.route or "?"), ())
        result = compare(x.request, x.v1, x.v2, x.route, rules.active(x.method, x.route, today),
                         x.v1_secondary, learned)
        failed: Exception | None = None
    except Exception as e:
        result, failed = compare_error(step, e), e
    result.replay_delay_ms = replay_delay_ms(x.v1_ts, x.v2_ts, x.v2)
    if result.replay_delay_ms is not None and result.replay_delay_ms > stale_after_s * 1000:
        result.flags.append("stale")
    return Judgement(result, changed, step if failed else None, failed)


def generalize(path: str) -> str:
    return _KEYED.sub("[*]", _INDEX.sub("[*]", path))


def _under_any(path: str, parents: list[str]) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[")) for p in parents)


def _differences(a: Answer, b: Answer, rules: Sequence[Rule], method: str | None,
                 suppressed: Counter[str]) -> tuple[list[Difference], list[str]]:
    diff: list[Difference] = []
    if a.status != b.status:
        pair = {a.status, b.status}
        equal = next((r for r in rules if any(pair <= g for g in r.status_equivalent)), None)
        if equal is not None:
            suppressed[equal.id] += 1
        else:
            diff.append(Difference("status", "status", a.status, b.status))
    include = [h for r in rules for h in r.headers_include]
    exclude = [h for r in rules for h in r.headers_exclude]
    diff += header_differences(a.headers, b.headers, include=include, exclude=exclude)
    flags: list[str] = []
    if method != "HEAD":
        whole = whole_bodies_equal(a, b)
        if whole:  # the same bytes, past the capture cap too: nothing to diff
            return diff, ["whole_body_equal"] if a.body_truncated or b.body_truncated else []
        body_diff, flags = body_differences(
            a, b, lambda x, y: apply_rules(x, y, rules, suppressed) if rules
            else json_differences(x, y))
        if not body_diff and whole is False:  # the captured prefixes are all that is equal
            body_diff = [beyond_capture(a, b)]
        diff += body_diff
    return diff, flags


def _encoding(answer: Answer) -> str:
    return (answer.header("content-encoding") or "identity").strip().lower() or "identity"


def whole_bodies_equal(a: Answer, b: Answer) -> bool | None:
    """Whether two whole bodies are equal, from their lengths and digests (pure): True when
    the digests (same scheme and key) and lengths are equal; False when a body was cut at
    the capture cap and the digests or lengths differ; None when unknown (no comparable
    digests, or nothing was cut: the captured bodies are the whole bodies). Digests are of
    the raw bytes: with different content encodings they say nothing, and with the same
    compressed one only equality counts (the same content compresses differently)."""
    encoding = _encoding(a)
    if encoding != _encoding(b):
        return None
    digests = a.digest is not None and b.digest is not None and \
        a.digest.partition(":")[0] == b.digest.partition(":")[0]
    if digests and a.digest == b.digest and a.body_size == b.body_size:
        return True
    if encoding != "identity" or not (a.body_truncated or b.body_truncated):
        return None
    if a.body_size != b.body_size or digests:
        return False
    return None


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n and n % 1024 == 0 else f"{n} bytes"


def beyond_capture(a: Answer, b: Answer) -> Difference:
    """The body difference past what was captured: equal prefixes, different whole bodies."""
    where = f"differs after the first {_size(min(len(a.body), len(b.body)))}"

    def side(x: Answer) -> str:
        digest = f", digest {x.digest.partition(':')[2][:16]}" if x.digest else ""
        return f"{where}: {x.body_size} bytes{digest}"

    return Difference("$", "body", side(a), side(b))


# ---- rules over JSON bodies ----

def apply_rules(a: Any, b: Any, rules: Sequence[Rule], suppressed: Counter[str]) -> list[Difference]:
    """JSON differences after the rules' transformations and suppressions, counting per rule
    how many differences each one hid."""
    shaping = [r for r in rules if r.transforms]
    diff = json_differences(a, b)
    # each transforming rule is credited with what it hides on top of the ones before it
    # (in file order), so overlapping rules never take each other's hits
    for i, rule in enumerate(shaping):
        narrower = json_differences(_transform(a, "$", shaping[:i + 1]),
                                    _transform(b, "$", shaping[:i + 1]))
        if len(narrower) < len(diff):
            suppressed[rule.id] += len(diff) - len(narrower)
        diff = narrower
    mode_rule = next((r for r in reversed(rules) if r.mode), None)
    mode = mode_rule.mode if mode_rule and mode_rule.mode else "strict"
    nulls = next((r for r in rules if r.null_equals_missing), None)
    out = []
    for d in diff:
        hidden_by = _hidden_by(d, rules, mode, mode_rule, nulls)
        if hidden_by is None:
            out.append(d)
        else:
            suppressed[hidden_by.id] += 1
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _hidden_by(d: Difference, rules: Sequence[Rule], mode: str, mode_rule: Rule | None,
               nulls: Rule | None) -> Rule | None:
    for r in rules:
        if any(jsonpath.matches(p, d.path) for p in r.ignore):
            return r
    if d.kind in ("changed", "type") and _is_number(d.v1) and _is_number(d.v2):
        for r in rules:
            for t in r.tolerance:
                if jsonpath.matches(t.path, d.path) and t.admits(float(d.v1), float(d.v2)):  # type: ignore[arg-type]
                    return r
    if nulls is not None and ((d.kind == "added" and d.v2 is None) or
                              (d.kind == "removed" and d.v1 is None)):
        return nulls
    if mode == "subset" and d.kind == "added":
        return mode_rule
    if mode == "schema" and d.kind == "changed":
        return mode_rule
    return None


def _transform(value: Any, path: str, rules: Sequence[Rule]) -> Any:
    """Normalize strings, reorder unordered arrays, key arrays matched by a field."""
    if isinstance(value, dict):
        value = {k: _transform(v, child_path(path, k), rules) for k, v in value.items()}
    elif isinstance(value, list):
        value = [_transform(v, child_path(path, i), rules) for i, v in enumerate(value)]
    elif isinstance(value, str):
        for r in rules:
            for n in r.normalize:
                if jsonpath.matches_exactly(n.path, path):
                    value = n.regex.sub(n.replace, value)
    if isinstance(value, list):
        for r in rules:
            if any(jsonpath.matches_exactly(p, path) for p in r.unordered):
                value = sorted(value, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
            for p, key in r.match_by:
                if jsonpath.matches_exactly(p, path):
                    value = {f"{key}={item.get(key) if isinstance(item, dict) else item}": item
                             for item in value}
                    break
    return value
