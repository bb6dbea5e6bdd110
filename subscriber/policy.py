"""The replay policy (pure): may this request be sent to V2, and if not, why."""

from __future__ import annotations

from shadow.model import Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def replay_decision(request: Request, *, allow_side_effects: bool) -> str | None:
    """None to replay, else the reason it is skipped (recorded on the exchange)."""
    if request.method.upper() not in SAFE_METHODS and not allow_side_effects:
        return "method_not_replayed"
    if request.body_truncated:
        return "request_body_truncated"
    return None
