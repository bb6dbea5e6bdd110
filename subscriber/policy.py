"""The replay policy (pure): may this request be sent to V2, and if not, why; and what the
request V2 gets looks like (header and path rewrites)."""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field

from shadow.errors import ConfigError
from shadow.model import Headers, Request
from shadow.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Policy:
    allow_side_effects: bool = False
    include: tuple[str, ...] = ("*",)  # path globs
    exclude: tuple[str, ...] = ()
    sample_percent: float = 100.0
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: frozenset[str] = field(default_factory=frozenset)
    strip_prefix: str = ""
    add_prefix: str = ""

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        pairs = []
        for item in filter(None, (p.strip() for p in (s.v2_set_headers or "").split(";"))):
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                raise ConfigError(f"--v2-set-headers: expected 'Name: value; Name2: value', "
                                  f"got {item!r}")
            pairs.append((name.strip(), value.strip()))
        if not 0 <= s.sample_percent <= 100:
            raise ConfigError(f"--sample-percent must be 0-100, got {s.sample_percent}")
        return cls(
            allow_side_effects=s.allow_side_effects,
            include=tuple(g.strip() for g in s.replay_include.split(",") if g.strip()) or ("*",),
            exclude=tuple(g.strip() for g in (s.replay_exclude or "").split(",") if g.strip()),
            sample_percent=s.sample_percent, set_headers=tuple(pairs),
            remove_headers=frozenset(h.strip().lower() for h in (s.v2_remove_headers or "")
                                     .split(",") if h.strip()),
            strip_prefix=s.v2_strip_prefix or "", add_prefix=s.v2_add_prefix or "")

    def decision(self, request: Request, exchange_id: str) -> str | None:
        """None to replay, else the reason it is skipped (recorded on the exchange).

        Sampling is by `exchange_id`, the proxy's own key (RequestEvent.id), never by the
        request id: that one the client may choose, and with it force or avoid sampling."""
        if not self.sends(request.method, "V2"):
            return "method_not_replayed"
        if request.body_truncated:
            return "request_body_truncated"
        path = request.url.split("?", 1)[0]
        if not any(fnmatch.fnmatchcase(path, g) for g in self.include) or \
                any(fnmatch.fnmatchcase(path, g) for g in self.exclude):
            return "route_excluded"
        if self.sample_percent < 100 and not sampled(exchange_id, self.sample_percent):
            return "not_sampled"
        return None

    def sends(self, method: str, target: str) -> bool:
        """May a request with `method` go to `target` ("V2" or "V1'")? Safe methods go
        everywhere; the others only to V2 with --allow-side-effects: V1' is a second V1,
        whose writes would be real ones."""
        if method.upper() in SAFE_METHODS:
            return True
        return self.allow_side_effects and target == "V2"

    def write_targets(self, targets: dict[str, str]) -> list[str]:
        """The names in `targets` (name -> URL) that will receive POST/PUT/PATCH/DELETE."""
        return [name for name in targets
                if any(self.sends(m, name) for m in ("POST", "PUT", "PATCH", "DELETE"))]

    def url(self, url: str) -> str:
        if self.strip_prefix and url.startswith(self.strip_prefix):
            url = url[len(self.strip_prefix):] or "/"
            if not url.startswith(("/", "?")):
                url = "/" + url
        return self.add_prefix.rstrip("/") + url if self.add_prefix else url

    def headers(self, headers: Headers) -> Headers:
        drop = self.remove_headers | {name.lower() for name, _ in self.set_headers}
        return [(k, v) for k, v in headers if k.lower() not in drop] + list(self.set_headers)


def ordering_key(request: Request, name: str) -> str | None:
    """The value of header `name`, else of the cookie `name`: requests sharing it are
    replayed in arrival order (session flows: create, then read)."""
    lname = name.lower()
    for k, v in request.headers:
        if k.lower() == lname:
            return f"h:{v}"
    for k, v in request.headers:
        if k.lower() == "cookie":
            for part in v.split(";"):
                cname, sep, cvalue = part.strip().partition("=")
                if sep and cname == name:
                    return f"c:{cvalue}"
    return None


def sampled(exchange_id: str, percent: float) -> bool:
    """Deterministic by exchange id: every service (and every replay) agrees."""
    bucket = int.from_bytes(hashlib.sha1(exchange_id.encode()).digest()[:4], "big") % 10_000
    return bucket < percent * 100


class TokenBucket:
    """At most `rate_per_s` on average, bursts up to `burst`; `take()` says yes or no now."""

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        self.rate = rate_per_s
        self.capacity = burst if burst is not None else max(1.0, rate_per_s)
        self.tokens = self.capacity
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        if self.stamp is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown_s` lets one probe through;
    closes on its success, reopens on its failure."""

    def __init__(self, threshold: int = 10, cooldown_s: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.probing else "open"

    def until_probe(self, now: float) -> float | None:
        """Seconds until a probe may go (0: now); None when closed or a probe is out."""
        if self.opened_at is None or self.probing:
            return None
        return max(0.0, self.opened_at + self.cooldown_s - now)

    def abandon_probe(self) -> None:
        """The probe `allow` granted was never sent: the next request may be the probe."""
        self.probing = False

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if not self.probing and now - self.opened_at >= self.cooldown_s:
            self.probing = True  # exactly one probe
            return True
        return False

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures = 0
            self.opened_at = None
            self.probing = False
            return
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = now
            self.probing = False
