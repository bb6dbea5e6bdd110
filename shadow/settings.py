"""One settings object for every service.

Precedence: command-line flags, then SHADOW_* environment variables, then an
optional TOML file (`--config`, SHADOW_CONFIG, or ./shadow.toml), then defaults.
This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shadow import redact
from shadow.errors import ConfigError

ENV_PREFIX = "SHADOW_"
DEFAULT_CONFIG_FILE = "shadow.toml"


@dataclass(frozen=True, slots=True)
class Settings:
    # where things are
    v1: str | None = None
    v2: str | None = None
    v1_secondary: str | None = None
    listen: str = "127.0.0.1:8080"
    api: str = "127.0.0.1:8081"
    redis: str | None = None  # None: start the embedded Redis
    store: str = "sqlite:///.shadow/shadow.db"
    data_dir: str = ".shadow"
    rules: str | None = None
    # proxy
    request_id_header: str = "X-Request-Id"
    capture_cap_bytes: int = 65536
    max_queue: int = 10_000
    max_queue_bytes: int = 128 * 1024 * 1024
    publish_batch: int = 256
    workers: int = 1
    metrics_listen: str | None = None  # proxy and subscriber; the comparer serves them on --api
    publish: bool = True
    forwarded_headers: bool = True
    trust_forwarded: bool = False
    preserve_host: bool = False
    header_timeout_s: float = 15.0
    keepalive_timeout_s: float = 75.0
    ws_max_message_bytes: int = 4 * 1024 * 1024
    v1_connect_timeout_s: float = 5.0
    v1_read_timeout_s: float = 60.0
    # streams
    stream_prefix: str = "shadow"
    stream_maxlen: int = 1_000_000
    redis_timeout_s: float = 2.0
    claim_idle_s: float = 60.0
    consumer: str | None = None  # default: host-pid, unique per process
    max_deliveries: int = 5
    # subscriber
    allow_side_effects: bool = False
    v2_connect_timeout_s: float = 5.0
    v2_read_timeout_s: float = 30.0
    replay_concurrency: int = 64
    ordered_by: str | None = None
    replay_include: str = "*"
    replay_exclude: str | None = None
    sample_percent: float = 100.0
    max_replay_rate: float | None = None
    v2_set_headers: str | None = None
    v2_remove_headers: str | None = None
    v2_strip_prefix: str | None = None
    v2_add_prefix: str | None = None
    breaker_failures: int = 10
    breaker_cooldown_s: float = 30.0
    # comparer
    join_timeout_s: float = 60.0
    trust_canonical_resource: bool = False
    max_routes: int = 1000
    stale_after_s: float = 300.0
    auto_ignore_noise: bool = False
    retention_max_age_s: float | None = None
    retention_max_docs: int | None = None
    api_token: str | None = None
    metrics_open: bool = False
    redact_headers: str = redact.DEFAULT_HEADERS
    redact_fields: str = redact.DEFAULT_FIELDS
    # supervisor (`shadow up`, `shadow proxy --workers N`)
    heartbeat_timeout_s: float = 30.0
    # misc
    log_level: str = "info"

    def require(self, *names: str) -> None:
        """Fail start-up with a message naming each missing setting and how to set it."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            hints = ", ".join(f"--{n.replace('_', '-')} (or {ENV_PREFIX}{n.upper()})" for n in missing)
            raise ConfigError(f"missing required setting: {hints}")


_FIELDS = {f.name: f for f in fields(Settings)}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge flags > env > TOML file > defaults, coerce types, validate."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = config_file or flags.pop("config", None) or env.get(f"{ENV_PREFIX}CONFIG")
    values: dict[str, Any] = {}
    values.update(_from_toml(path))
    for name in _FIELDS:
        raw = env.get(f"{ENV_PREFIX}{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, raw, f"environment variable {ENV_PREFIX}{name.upper()}")
    for name, raw in flags.items():
        if name not in _FIELDS:
            continue
        values[name] = _coerce(name, raw, f"--{name.replace('_', '-')}")
    settings = Settings(**values)
    validate(settings)
    return settings


def _from_toml(path: str | None) -> dict[str, Any]:
    explicit = path is not None
    file = Path(path or DEFAULT_CONFIG_FILE)
    if not file.exists():
        if explicit:
            raise ConfigError(f"config file {file} does not exist")
        return {}
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config file {file}: {e}") from e
    section = data.get("shadow", data)
    out: dict[str, Any] = {}
    for key, raw in section.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            if isinstance(raw, dict):
                continue  # other sections (rules, ...) belong to other readers
            raise ConfigError(f"{file}: unknown setting {key!r}; known: {', '.join(sorted(_FIELDS))}")
        out[name] = _coerce(name, raw, f"{file}: {key}")
    return out


def _coerce(name: str, raw: Any, where: str) -> Any:
    kind = str(_FIELDS[name].type)
    try:
        if "bool" in kind:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if "int" in kind:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if "float" in kind:
            return float(raw)
        return None if raw is None else str(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080', ':8080' (all interfaces) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{what}: port must be 0-65535, got {number}")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(settings: Settings) -> None:
    """Refuse, before any socket is bound, to serve the API off loopback without a token."""
    host, _ = parse_hostport(settings.api, "--api")
    if not is_loopback(host) and not settings.api_token:
        raise ConfigError(
            f"the reports API would listen on {host}, which is not a loopback address: "
            "set SHADOW_API_TOKEN (clients then send 'Authorization: Bearer <token>') "
            "or listen on 127.0.0.1")


def _check_http_url(value: str | None, what: str) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: expected an http:// or https:// URL, got {value!r}")


# RFC 9110 token characters: what a header name (and a cookie name) may be made of
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_token(name: str) -> bool:
    return bool(name) and all(c in _TCHAR for c in name)


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _check_header_names(names: list[str], flag: str) -> None:
    for name in names:
        if not is_token(name):
            raise ConfigError(f"{flag}: {name!r} is not a valid header name (letters, digits and "
                              "!#$%&'*+-.^_`|~, no spaces or colons); separate names with commas")


def parse_set_headers(value: str | None) -> list[tuple[str, str]]:
    """--v2-set-headers 'Name: value; Name2: value' -> [(name, value)], or a ConfigError that
    says what is wrong (subscriber/policy.py applies the pairs)."""
    pairs = []
    for item in filter(None, (p.strip() for p in (value or "").split(";"))):
        name, sep, header_value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--v2-set-headers: expected 'Name: value; Name2: value', "
                              f"got {item!r}")
        _check_header_names([name.strip()], "--v2-set-headers")
        if any(c in header_value for c in "\r\n\0"):
            raise ConfigError(f"--v2-set-headers: the value of {name.strip()!r} has a line break "
                              "or NUL, which no header may carry")
        pairs.append((name.strip(), header_value.strip()))
    return pairs


def _check_path_prefix(value: str | None, flag: str) -> None:
    if not value:
        return
    if not value.startswith("/"):
        raise ConfigError(f"{flag}: a path prefix must start with '/', got {value!r} "
                          f"(write {'/' + value!r})")
    bad = next((c for c in value if c in "?#" or c.isspace() or not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(f"{flag}: a path prefix is a plain path, without {bad!r}: got {value!r}")


def _check_path_globs(value: str | None, flag: str) -> None:
    for glob in _csv(value):
        if glob[0] not in "/*?[":
            raise ConfigError(f"{flag}: {glob!r} can never match, since request paths start "
                              f"with '/': write {'/' + glob!r} (or '*/{glob}' for any prefix)")


def _check_policy(s: Settings) -> None:
    """The replay policy's settings (subscriber/policy.py reads them): checked here, so a bad
    one stops every command before anything starts instead of the subscriber after it."""
    if not 0 <= s.sample_percent <= 100:
        raise ConfigError(f"--sample-percent must be 0-100 (the percentage of requests "
                          f"replayed to V2), got {s.sample_percent:g}")
    parse_set_headers(s.v2_set_headers)
    _check_header_names(_csv(s.v2_remove_headers), "--v2-remove-headers")
    _check_path_prefix(s.v2_strip_prefix, "--v2-strip-prefix")
    _check_path_prefix(s.v2_add_prefix, "--v2-add-prefix")
    _check_path_globs(s.replay_include, "--replay-include")
    _check_path_globs(s.replay_exclude, "--replay-exclude")
    if s.ordered_by is not None and not is_token(s.ordered_by):
        raise ConfigError(f"--ordered-by: {s.ordered_by!r} is not a header or cookie name "
                          "(letters, digits and !#$%&'*+-.^_`|~, no spaces)")


def check_writable(s: Settings, *, embedded_redis: bool) -> None:
    """Before `shadow up` or `shadow comparer` starts anything: the SQLite store's file and
    the embedded Redis's data directory can be created where they are asked for. Creates
    nothing; the services create them at start."""
    places = [("--data-dir", Path(s.data_dir))] if embedded_redis else []
    if urlsplit(s.store).scheme == "sqlite":
        db = Path(sqlite_path(s.store))
        if db.is_dir():
            raise ConfigError(f"--store: {db} is a directory; name the database file inside it, "
                              f"e.g. sqlite:///{db / 'shadow.db'}")
        places.append(("--store", db.parent))
        if db.exists() and not os.access(db, os.R_OK | os.W_OK):
            raise ConfigError(f"--store: {db} cannot be read and written by this user; fix its "
                              "permissions or point --store elsewhere")
    for flag, directory in places:
        existing = directory.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{flag}: cannot create {directory}: {existing} is not a directory; "
                              f"choose another {flag}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag}: cannot create files in {existing} (permission denied); "
                              f"choose another {flag} or fix the directory's permissions")


def validate(s: Settings) -> None:
    for f in fields(Settings):
        value = getattr(s, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
    _check_http_url(s.v1, "--v1")
    _check_http_url(s.v2, "--v2")
    _check_http_url(s.v1_secondary, "--v1-secondary")
    parse_hostport(s.listen, "--listen")
    parse_hostport(s.api, "--api")
    if s.metrics_listen is not None:
        parse_hostport(s.metrics_listen, "--metrics-listen")
    if s.redis is not None and urlsplit(s.redis).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"--redis: expected redis://, rediss:// or unix:// URL, got {s.redis!r}")
    if urlsplit(s.store).scheme not in ("sqlite", "mongodb", "mongodb+srv"):
        raise ConfigError(
            f"--store: expected sqlite:///path/to/shadow.db or mongodb://..., got {s.store!r}"
        )
    for name in ("capture_cap_bytes", "max_queue", "max_queue_bytes", "publish_batch",
                 "stream_maxlen", "ws_max_message_bytes", "max_routes",
                 "replay_concurrency", "workers", "breaker_failures", "max_deliveries"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
    for name in ("v1_connect_timeout_s", "v1_read_timeout_s", "v2_connect_timeout_s",
                 "v2_read_timeout_s", "redis_timeout_s", "claim_idle_s", "join_timeout_s",
                 "stale_after_s", "header_timeout_s", "keepalive_timeout_s",
                 "heartbeat_timeout_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
    for name in ("retention_max_age_s", "retention_max_docs", "max_replay_rate",
                 "breaker_cooldown_s"):
        value = getattr(s, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if s.claim_idle_s <= s.v2_connect_timeout_s + s.v2_read_timeout_s:
        raise ConfigError(
            f"--claim-idle-s ({s.claim_idle_s:g}) must exceed --v2-connect-timeout-s + "
            f"--v2-read-timeout-s ({s.v2_connect_timeout_s + s.v2_read_timeout_s:g}), or replays "
            "still waiting on V2 would be handed to another subscriber and sent twice")
    if not is_token(s.request_id_header):
        raise ConfigError(f"--request-id-header: {s.request_id_header!r} is not a valid header "
                          "name (letters, digits and !#$%&'*+-.^_`|~, e.g. X-Request-Id)")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level: expected debug, info, warning or error, got {s.log_level!r}")
    _check_policy(s)
    _check_header_names(_csv(s.redact_headers), "--redact-headers")
    if s.api_token and not all("!" <= c <= "~" for c in s.api_token):
        raise ConfigError("SHADOW_API_TOKEN (--api-token) must be printable ASCII without spaces, "
                          "as it travels in an HTTP header; make one with: python -c "
                          "'import secrets; print(secrets.token_urlsafe(32))'")


def replace(s: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(s, **changes)


def sqlite_path(store_url: str) -> str:
    """sqlite:///relative/x.db -> relative/x.db ; sqlite:////abs/x.db -> /abs/x.db."""
    if not store_url.startswith("sqlite:///"):
        raise ConfigError(f"not a sqlite URL: {store_url!r}")
    return store_url[len("sqlite:///"):]


HELP: dict[str, str] = {
    "v1": "base URL of the existing system, which answers every client (e.g. http://10.0.0.5:8000)",
    "v2": "base URL of the rewrite, which gets the replayed requests",
    "v1_secondary": "a second V1 instance, to tell V1's own noise from real differences",
    "listen": "HOST:PORT the proxy listens on (default 127.0.0.1:8080)",
    "api": "HOST:PORT of the reports API (default 127.0.0.1:8081)",
    "redis": "Redis URL (redis://, rediss://, unix://); default: start an embedded Redis",
    "store": "sqlite:///path/to/shadow.db (default sqlite:///.shadow/shadow.db) or mongodb://...",
    "data_dir": "where `shadow up` keeps the embedded Redis files (default .shadow)",
    "rules": "a TOML rules file: what to ignore, tolerate, reorder or normalize per route",
    "request_id_header": "header that carries the request id (default X-Request-Id)",
    "capture_cap_bytes": "bytes of each body kept for comparison (default 65536); clients always "
                         "get the whole body",
    "max_queue": "events the proxy buffers for Redis before it drops (and counts) them",
    "max_queue_bytes": "bytes of encoded events the proxy buffers for Redis (default 128 MiB): "
                       "with big captured bodies this bound comes before --max-queue",
    "publish_batch": "events per pipelined XADD batch",
    "workers": "proxy processes sharing the listening port (use the cores you have)",
    "metrics_listen": "HOST:PORT where the proxy or the subscriber serves Prometheus /metrics "
                      "(under `shadow up`, the reports API's /metrics has every process's)",
    "publish": "publish events to Redis (default true); false serves clients only",
    "forwarded_headers": "append X-Forwarded-For/-Proto/-Host on requests to V1 (default true)",
    "trust_forwarded": "keep the client's X-Forwarded-*/Forwarded headers (only when a trusted "
                       "proxy such as nginx sets them); default false: shadow writes its own",
    "header_timeout_s": "seconds a client may take to send a request's head before the "
                        "connection is closed (slowloris guard, default 15)",
    "keepalive_timeout_s": "seconds an idle keep-alive client connection stays open (default 75)",
    "ws_max_message_bytes": "largest WebSocket message relayed (default 4 MiB); past it the "
                            "connection is closed with 1009",
    "preserve_host": "send the client's Host header to V1 instead of V1's own host",
    "v1_connect_timeout_s": "seconds to connect to V1 before answering 502",
    "v1_read_timeout_s": "seconds V1 may stay silent before the proxy answers 504",
    "stream_prefix": "prefix of every Redis key (default shadow)",
    "stream_maxlen": "approximate cap of each stream (MAXLEN ~), bounds Redis memory",
    "redis_timeout_s": "seconds a Redis call may take before it counts as down",
    "claim_idle_s": "seconds an unacknowledged entry may sit before another consumer takes it",
    "max_deliveries": "deliveries after which an entry that keeps failing is dead-lettered",
    "consumer": "this consumer's name in its group (default role-host-pid)",
    "allow_side_effects": "also replay POST/PUT/PATCH/DELETE to V2 (only if V2 is harmless!)",
    "v2_connect_timeout_s": "seconds to connect to V2",
    "v2_read_timeout_s": "seconds V2 may stay silent before the replay counts as an error",
    "replay_concurrency": "replays in flight at once, per subscriber",
    "ordered_by": "header or cookie name: requests sharing its value are replayed in order",
    "replay_include": "comma-separated path globs to replay (default *)",
    "replay_exclude": "comma-separated path globs never to replay, e.g. /admin/*",
    "sample_percent": "replay this percentage of requests, chosen by request id (default 100)",
    "max_replay_rate": "at most this many replays per second per subscriber (default: no limit)",
    "v2_set_headers": "headers to set on requests to V2: 'Authorization: Bearer x; X-Env: shadow'",
    "v2_remove_headers": "comma-separated headers never sent to V2, e.g. Cookie",
    "v2_strip_prefix": "path prefix to remove before calling V2",
    "v2_add_prefix": "path prefix to add before calling V2",
    "breaker_failures": "consecutive V2 failures or timeouts that open the circuit breaker",
    "breaker_cooldown_s": "seconds the breaker stays open before one probe goes to V2",
    "auto_ignore_noise": "hide differences at paths where V1's answers to identical requests "
                         "change over time (suspected noise); off by default: they are only shown",
    "stale_after_s": "a comparison whose V2 call came this long after V1's answer is flagged stale",
    "retention_max_age_s": "delete exchanges older than this (default: keep)",
    "retention_max_docs": "keep at most this many exchanges, deleting the oldest (default: all)",
    "join_timeout_s": "seconds to wait for V2's answer before an exchange is v1_only",
    "trust_canonical_resource": "let a request's Canonical-Resource header name its route "
                                "(only if clients are trusted; default false)",
    "max_routes": "distinct routes tracked (default 1000); the rest count as one '(other)' route",
    "api_token": "bearer token for the reports API (required off loopback)",
    "heartbeat_timeout_s": "seconds a child of `shadow up` may go without a heartbeat from its "
                           "event loop (frozen, deadlocked) before it is killed and restarted "
                           "(default 30)",
    "metrics_open": "serve /metrics without the bearer token (for Prometheus scrapers)",
    "redact_headers": "comma-separated header names whose values the live firehose masks "
                      "(default: Authorization, Cookie, Set-Cookie, X-Api-Key, ...)",
    "redact_fields": "comma-separated JSON field / query parameter names whose values the "
                     "live firehose masks (default: password, token, secret, api_key, ...)",
    "log_level": "debug, info, warning or error",
}


def to_args(settings: Settings, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that reproduce `settings` in a child process (non-default values only)."""
    args: list[str] = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name in skip or value == f.default:
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(value, bool):
            args += [flag, "true" if value else "false"]
        else:
            args += [flag, str(value)]
    return args


def field_names() -> list[str]:
    return list(_FIELDS)
