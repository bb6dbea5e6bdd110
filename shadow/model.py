"""The one model that flows from proxy to dashboard.

Headers are lists of (name, value) pairs: order and repeats are kept. Bodies are
bytes (at most the capture cap; `body_size` is the real size). A failed upstream
is data (`error`), never an exception that unwinds a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Headers = list[tuple[str, str]]

PENDING = "pending"
MATCH = "match"
MISMATCH = "mismatch"
V2_ERROR = "v2_error"
SKIPPED = "skipped"
V1_ONLY = "v1_only"
V1_MISSING = "v1_missing"  # V1's answer never came within the join timeout: nothing to compare
COMPARE_ERROR = "compare_error"  # judging or storing this exchange failed (reason in flags)
OUTCOMES = (PENDING, MATCH, MISMATCH, V2_ERROR, SKIPPED, V1_ONLY, V1_MISSING, COMPARE_ERROR)
# Still open to a late part: the join timeout gave them an outcome, and the missing answer,
# arriving later, reopens them.
UNDECIDED = (PENDING, V1_ONLY, V1_MISSING)
# Both answers diffed to the end: their latencies and status pairs are counted.
DIFFED = (MATCH, MISMATCH)
# Decided by a comparison: what the firehose publishes as it happens.
LIVE = (MATCH, MISMATCH, V2_ERROR, SKIPPED, COMPARE_ERROR)

# Triage of a mismatch class. Accepted (a deliberate change) counts as a match in the verdict;
# a fixed class seen again is reopened as new.
CLASS_NEW = "new"
CLASS_ACCEPTED = "accepted"
CLASS_FIXED = "fixed"
CLASS_KNOWN = "known"
CLASS_BUG = "bug"
CLASS_STATUSES = (CLASS_NEW, CLASS_KNOWN, CLASS_ACCEPTED, CLASS_BUG, CLASS_FIXED)

RouteKey = tuple[str, str]  # (method, route)


@dataclass(slots=True)
class Request:
    method: str
    url: str  # path + query, exactly as the client sent it
    headers: Headers
    body: bytes = b""
    body_size: int = 0
    body_truncated: bool = False
    # how V1 was reached, recorded by the proxy so the replay can give V2 the same
    # X-Forwarded-* (shadow/forwarding.py): the client's address and scheme (None: unknown)
    client: str | None = None
    scheme: str | None = None


@dataclass(slots=True)
class Answer:
    """An HTTP answer from V1 or V2, or why there is none."""

    status: int | None
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    body_size: int = 0
    body_truncated: bool = False
    latency_ms: float | None = None
    error: str | None = None
    skipped: str | None = None  # candidates only: why V2 was not called
    target: str | None = None  # candidates only: which V2 answered
    # V1 only: the body is not V1's whole answer. "client_aborted": the client left before the
    # proxy captured it; "v1_aborted": V1 failed after its head was sent (see `error`)
    incomplete: str | None = None
    # of the whole body as received (raw bytes, before any redaction, past the capture cap
    # too): "<scheme>:<hex>" (shadow.http.Capture); None: not computed (an older event)
    digest: str | None = None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


@dataclass(slots=True)
class RequestEvent:
    id: str
    request_id: str
    ts: float
    request: Request
    type: Literal["request"] = "request"
    # what redaction changed that the replay needs (shadow/protection.py), encrypted for the
    # subscriber: never stored, never shown, opened only in the subscriber's memory
    sealed: str | None = None


@dataclass(slots=True)
class ResponseEvent:
    id: str
    ts: float
    answer: Answer
    type: Literal["response"] = "response"


@dataclass(slots=True)
class CandidateEvent:
    id: str
    ts: float
    answer: Answer
    type: Literal["candidate"] = "candidate"
    secondary: Answer | None = None  # V1' (--v1-secondary): how V1 answers itself


Event = RequestEvent | ResponseEvent | CandidateEvent


@dataclass(slots=True)
class Difference:
    path: str  # JSONPath-like: $.items[3].id, or the header / status name
    kind: str  # changed, added, removed, type, status, header, body
    v1: object = None
    v2: object = None


@dataclass(slots=True)
class Comparison:
    """What the pure engine concludes about one V1/V2 pair."""

    outcome: str
    diff: list[Difference]
    signature: str | None
    flags: list[str]
    replay_delay_ms: float | None = None
    # rule id -> 1 when the rule hid a difference of this exchange (a rule's hits count
    # exchanges)
    suppressed: dict[str, int] = field(default_factory=dict)
    noise: list[Difference] = field(default_factory=list)  # V1/V2 differences V1 has with itself
    noise_paths: list[str] | None = None  # where V1 and V1' disagreed (None: no V1' answer)


@dataclass(slots=True)
class Exchange:
    """One document per request: the join of request, V1 answer and V2 answer."""

    id: str
    request_id: str | None = None
    ts: float | None = None
    method: str | None = None
    url: str | None = None
    route: str | None = None
    request: Request | None = None
    v1: Answer | None = None
    v2: Answer | None = None
    outcome: str = PENDING
    diff: list[Difference] = field(default_factory=list)
    signature: str | None = None
    flags: list[str] = field(default_factory=list)
    compared_at: float | None = None
    v1_ts: float | None = None  # when the proxy published V1's answer
    v2_ts: float | None = None  # when the subscriber published V2's answer
    replay_delay_ms: float | None = None
    v1_secondary: Answer | None = None
    noise: list[Difference] = field(default_factory=list)
