"""One settings object for every service.

Precedence: command-line flags, then SHADOW_* environment variables, then an
optional TOML file (`--config`, SHADOW_CONFIG, or ./shadow.toml), then defaults.
This is the only module that reads the environment.

A setting is declared once, as one field of `Settings` made by `setting()`: its default, its
--help text, its check (validate() runs it) and its place in the command line's help.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shadow import notify, protection, redact
from shadow.credentials import mask_url
from shadow.errors import ConfigError
from shadow.private import read_private_file
from shadow.redisurl import parse_redis_url

ENV_PREFIX = "SHADOW_"
DEFAULT_CONFIG_FILE = "shadow.toml"


# ---------------------------------------------------------------- checks: (value, flag) -> None,
# or a ConfigError that names the flag and what to write instead

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
        raise ConfigError(f"{what}: expected an http:// or https:// URL, got "
                          f"{mask_url(value)!r}")


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


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _positive(value: float, flag: str) -> None:
    if value <= 0:
        raise ConfigError(f"{flag} must be positive, got {value}")


def _not_negative(value: float, flag: str) -> None:
    if value < 0:
        raise ConfigError(f"{flag} must be 0 or more, got {value}")


def _fraction(value: float, flag: str) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(f"{flag} must be a fraction from 0 to 1 (0.001 keeps one in a "
                          f"thousand), got {value:g}")


def _keep_mode(value: str, flag: str) -> None:
    if value not in ("sampled", "all"):
        raise ConfigError(f"{flag}: expected sampled (examples per class, sampled matches) or "
                          f"all (every exchange document), got {value!r}")


def _redis_url(value: str, flag: str) -> None:
    try:
        parse_redis_url(value)
    except ConfigError as e:
        raise ConfigError(f"{flag}: {e}") from None


def _stream_shards(value: int, flag: str) -> None:
    if not 1 <= value <= 256:
        raise ConfigError(f"{flag}: 1-256 shards, got {value}")


def _store_url(value: str, flag: str) -> None:
    if urlsplit(value).scheme not in ("sqlite", "mongodb", "mongodb+srv"):
        raise ConfigError(
            f"{flag}: expected sqlite:///path/to/shadow.db or mongodb://..., got "
            f"{mask_url(value)!r}"
        )


def _request_id_header(value: str, flag: str) -> None:
    if not is_token(value):
        raise ConfigError(f"{flag}: {value!r} is not a valid header "
                          "name (letters, digits and !#$%&'*+-.^_`|~, e.g. X-Request-Id)")


def _version_header(value: str, flag: str) -> None:
    if not is_token(value):
        raise ConfigError(f"{flag}: {value!r} is not a valid header name (letters, digits and "
                          "!#$%&'*+-.^_`|~, e.g. X-Version)")


def _segment_by(value: str, flag: str) -> None:
    from shadow.segments import parse_segment_by

    parse_segment_by(value, flag)


def _log_format(value: str, flag: str) -> None:
    if value not in ("text", "json"):
        raise ConfigError(f"{flag}: expected text or json (one JSON object per line), got "
                          f"{value!r}")


def _log_level(value: str, flag: str) -> None:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{flag}: expected debug, info, warning or error, got {value!r}")


def _percent_replayed(value: float, flag: str) -> None:
    if not 0 <= value <= 100:
        raise ConfigError(f"{flag} must be 0-100 (the percentage of requests "
                          f"replayed to V2), got {value:g}")


def _set_headers(value: str, flag: str) -> None:
    parse_set_headers(value)


def _header_names(value: str, flag: str) -> None:
    _check_header_names(_csv(value), flag)


def _ordered_by(value: str, flag: str) -> None:
    if not is_token(value):
        raise ConfigError(f"{flag}: {value!r} is not a header or cookie name "
                          "(letters, digits and !#$%&'*+-.^_`|~, no spaces)")


def _niceness(value: int, flag: str) -> None:
    if not 0 <= value <= 19:
        raise ConfigError(f"{flag}: a niceness from 0 (as the proxy) to 19 (lowest), got {value}")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _capture_bodies(value: str, flag: str) -> None:
    protection.parse_capture_bodies(value)  # raises a ConfigError naming the bad item


def _api_token(value: str, flag: str) -> None:
    if not all("!" <= c <= "~" for c in value):
        raise ConfigError("SHADOW_API_TOKEN (or --api-token-file) must be printable ASCII without spaces, "
                          "as it travels in an HTTP header; make one with: python -c "
                          "'import secrets; print(secrets.token_urlsafe(32))'")


def _secret_key(value: str, flag: str) -> None:
    from shadow.sealing import SecretKey  # the cipher library, only when a key is set

    SecretKey.from_text(value, "SHADOW_SECRET_KEY")


Check = Callable[[Any, str], object]
"""A setting's check: gets the value (never None) and its flag, raises ConfigError if bad."""


def setting(default: Any, help_text: str, check: Check | None = None, *,
            main: tuple[str, ...] = (), metavar: str | None = None, secret: bool = False,
            env_only: bool = False, opaque: bool = False) -> Any:
    """One setting, declared in one place: its default, its --help text, its check (run by
    validate()), the commands whose --help lists it under "main options", and its metavar
    (default: the last word of its name; BOOL for a bool). `secret`: it can carry a
    credential (a password in a URL, a token, a key), so it reaches child processes through
    the environment (`to_env`), never their command line, and repr() masks it. `env_only`: a
    secret value itself, read from SHADOW_<NAME> only: no flag (`ps` would show it), not in
    shadow.toml; its FILE variant (<name>_file, a 0600 file) is the other way to set it.
    `opaque`: a secret whose whole value is the credential (a webhook URL's path is its token):
    repr() shows *** for it, URL or not."""
    return dataclasses.field(default=default, metadata={
        "help": help_text, "check": check, "main": main, "metavar": metavar,
        "secret": secret or env_only or opaque, "env_only": env_only, "opaque": opaque})


@dataclass(frozen=True, slots=True)
class Settings:
    # where things are
    v1: str | None = setting(
        None, "base URL of the existing system, which answers every client (e.g. "
        "http://10.0.0.5:8000)", _check_http_url, main=("up", "proxy"), metavar="URL",
        secret=True)
    v2: str | None = setting(
        None, "base URL of the rewrite, which gets the replayed requests", _check_http_url,
        main=("up", "subscriber", "replay"), metavar="URL", secret=True)
    v1_secondary: str | None = setting(
        None, "a second V1 instance, to tell V1's own noise from real differences", _check_http_url,
        main=("up",), secret=True)
    listen: str = setting("127.0.0.1:8080", "HOST:PORT the proxy listens on (default "
                          "127.0.0.1:8080)", parse_hostport, main=("up", "proxy"))
    api: str = setting("127.0.0.1:8081", "HOST:PORT of the reports API (default 127.0.0.1:8081)",
                       parse_hostport, main=("up", "comparer"))
    redis: str | None = setting(  # None: start the embedded Redis
        None, "Redis URL: redis://, rediss://, unix://, a cluster as redis+cluster://HOST:PORT"
        "[,HOST:PORT...], a Sentinel-watched master as redis+sentinel://HOST:PORT[,...]/SERVICE "
        "(TLS: rediss+cluster://, rediss+sentinel://); default: start an embedded Redis",
        _redis_url, main=("up", "proxy", "subscriber", "comparer", "demo"), secret=True)
    store: str = setting(
        "sqlite:///.shadow/shadow.db", "sqlite:///path/to/shadow.db (default "
        "sqlite:///.shadow/shadow.db) or mongodb://...", _store_url,
        main=("up", "comparer", "replay"), secret=True)
    data_dir: str = setting(".shadow", "where `shadow up` keeps the embedded Redis files "
                            "(default .shadow)", main=("up",))
    rules: str | None = setting(
        None, "a TOML rules file: what to ignore, tolerate, reorder or normalize per route",
        main=("up", "replay"))
    # proxy
    request_id_header: str = setting(
        "X-Request-Id", "header that carries the request id (default X-Request-Id)",
        _request_id_header)
    capture_cap_bytes: int = setting(
        65536, "bytes of each body kept for comparison (default 65536); clients always get the "
        "whole body", _positive)
    capture_bodies: str = setting(
        "", "per path glob, what is kept of bodies: none (never stored; compared by status "
        "and headers), redacted (the default) or raw (needs --allow-raw-bodies), e.g. "
        "'/login*=none,/payments/*=none'; first match wins", _capture_bodies)
    redaction: bool = setting(
        True, "redact events at the source (default true). false sends every secret to Redis "
        "and the store in clear: only for measuring what redaction costs")
    allow_raw_bodies: bool = setting(
        False, "allow --capture-bodies ...=raw: those bodies are stored unredacted")
    replay_secrets: str = setting(
        "all", "what redaction removed that the replay gives back to V2, sealed: all (the "
        "request exactly as V1 got it), none, or header names (e.g. authorization,cookie)")
    max_queue: int = setting(
        10_000, "events the proxy buffers for Redis before it drops (and counts) them", _positive)
    max_queue_bytes: int = setting(
        128 * 1024 * 1024, "bytes of encoded events the proxy buffers for Redis (default "
        "128 MiB): with big captured bodies this bound comes before --max-queue", _positive)
    publish_batch: int = setting(256, "events per pipelined XADD batch (per shard)", _positive)
    publish_wait_replicas: int = setting(
        0, "replicas that must have a batch of events before the proxy counts it as published "
        "(Redis WAIT; default 0). With Sentinel or cluster replicas, 1 means a failover loses "
        "no event counted as published", _not_negative)
    workers: int | None = setting(
        None, "proxy processes sharing the listening port (default: one per available core "
        "under `shadow up`, 1 for `shadow proxy`)", _positive, main=("up", "proxy"))
    pipeline_nice: int = setting(
        10, "niceness `shadow up` gives its subscriber and comparer, every thread of them "
        "(0-19, default 10): on shared cores the client path gets the CPU first, and the "
        "comparison catches up when the proxy is less busy", _niceness)
    metrics_listen: str | None = setting(  # proxy and subscriber; the comparer serves them on --api
        None, "HOST:PORT where the proxy or the subscriber serves Prometheus /metrics (under "
        "`shadow up`, the reports API's /metrics has every process's)", parse_hostport)
    publish: bool = setting(
        True, "publish events to Redis (default true); false serves clients only")
    forwarded_headers: bool = setting(
        True, "append X-Forwarded-For/-Proto/-Host on requests to V1 (default true)")
    trust_forwarded: bool = setting(
        False, "keep the client's X-Forwarded-*/Forwarded headers (only when a trusted proxy "
        "such as nginx sets them); default false: shadow writes its own")
    preserve_host: bool = setting(
        False, "send the client's Host header to V1 instead of V1's own host")
    header_timeout_s: float = setting(
        15.0, "seconds a client may take to send a request's head before the connection is "
        "closed (slowloris guard, default 15)", _positive)
    keepalive_timeout_s: float = setting(
        75.0, "seconds an idle keep-alive client connection stays open (default 75)", _positive)
    ws_max_message_bytes: int = setting(
        4 * 1024 * 1024, "largest WebSocket message relayed (default 4 MiB); past it the "
        "connection is closed with 1009", _positive)
    v1_connect_timeout_s: float = setting(
        5.0, "seconds to connect to V1 before answering 502", _positive)
    v1_read_timeout_s: float = setting(
        60.0, "seconds V1 may stay silent before the proxy answers 504", _positive)
    # streams
    stream_prefix: str = setting("shadow", "prefix of every Redis key (default shadow)")
    stream_shards: int = setting(
        1, "streams split into this many shards (1-256, default 1), each in one Redis Cluster "
        "slot; on a cluster use at least as many as it has masters. Every service of a setup "
        "needs the same count; changing it needs drained streams", _stream_shards)
    stream_maxlen: int = setting(
        1_000_000, "safety cap of entries per stream (default 1000000): past it the oldest are "
        "deleted, read or not (counted when unread); processed entries are deleted anyway",
        _positive)
    stream_max_age_s: float = setting(
        86400.0, "safety limit: stream entries older than this are deleted, read or not "
        "(counted when unread; default 86400 = 24 h)", _positive)
    stream_max_bytes: int = setting(
        1024 * 1024 * 1024, "safety limit of each stream's Redis memory (MEMORY USAGE, sampled): "
        "past it the oldest entries are deleted, read or not (counted when unread; default 1 GiB)",
        _positive)
    redis_timeout_s: float = setting(
        2.0, "seconds a Redis call may take before it counts as down", _positive)
    claim_idle_s: float = setting(
        60.0, "seconds an unacknowledged entry may sit before another consumer takes it",
        _positive)
    consumer: str | None = setting(  # default: host-pid, unique per process
        None, "this consumer's name in its group (default role-host-pid)")
    max_deliveries: int = setting(
        5, "deliveries after which an entry that keeps failing is dead-lettered", _positive)
    # subscriber (the replay policy's settings: subscriber/policy.py reads them, checked here
    # so a bad one stops every command before anything starts)
    allow_side_effects: bool = setting(
        False, "also replay POST/PUT/PATCH/DELETE to V2 (only if V2 is harmless!)",
        main=("up", "subscriber"))
    v2_connect_timeout_s: float = setting(5.0, "seconds to connect to V2", _positive)
    v2_read_timeout_s: float = setting(
        30.0, "seconds V2 may stay silent before the replay counts as an error", _positive)
    replay_concurrency: int = setting(
        64, "replays in flight at once, per subscriber", _positive)
    ordered_by: str | None = setting(
        None, "header or cookie name: requests sharing its value are replayed in order",
        _ordered_by)
    replay_include: str = setting(
        "*", "comma-separated path globs to replay (default *)", _check_path_globs)
    replay_exclude: str | None = setting(
        None, "comma-separated path globs never to replay, e.g. /admin/*", _check_path_globs)
    sample_percent: float = setting(
        100.0, "replay this percentage of requests, chosen by request id (default 100)",
        _percent_replayed)
    max_replay_rate: float | None = setting(
        None, "at most this many replays per second per subscriber (default: no limit)",
        _positive)
    max_replay_rate_global: float | None = setting(
        None, "at most this many replays per second over all subscribers together (a token "
        "bucket in Redis; default: no limit)", _positive, metavar="RATE")
    v2_set_headers: str | None = setting(
        None, "headers to set on requests to V2: 'Authorization: Bearer x; X-Env: shadow'",
        _set_headers, secret=True)
    v2_remove_headers: str | None = setting(
        None, "comma-separated headers never sent to V2, e.g. Cookie", _header_names)
    v2_strip_prefix: str | None = setting(
        None, "path prefix to remove before calling V2", _check_path_prefix)
    v2_add_prefix: str | None = setting(
        None, "path prefix to add before calling V2", _check_path_prefix)
    breaker_failures: int = setting(
        10, "consecutive V2 failures or timeouts that open the circuit breaker (each subscriber "
        "has its own)", _positive)
    breaker_cooldown_s: float = setting(
        30.0, "seconds the breaker stays open before one probe goes to V2", _positive)
    # comparer
    join_timeout_s: float = setting(
        60.0, "seconds to wait for V2's answer before an exchange is v1_only", _positive)
    tombstone_margin_s: float = setting(
        60.0, "a dropped exchange's tombstone goes once the streams hold nothing older than its "
        "latest part plus this (default 60): covers how late the proxy may publish an event "
        "and how far the hosts' clocks may disagree with Redis's", _positive)
    trust_canonical_resource: bool = setting(
        False, "let a request's Canonical-Resource header name its route (only if clients are "
        "trusted; default false)")
    max_routes: int = setting(
        1000, "distinct routes tracked (default 1000); the rest count as one '(other)' route",
        _positive)
    segment_by: str | None = setting(
        None, "count, classify and judge the traffic per segment too (e.g. per tenant): where "
        "its value is, header:NAME, cookie:NAME or query:NAME (e.g. header:X-Tenant); read from "
        "the redacted request (a secret-looking name's values as their tokens)", _segment_by,
        main=("up", "comparer"), metavar="KIND:NAME")
    max_segments: int = setting(
        100, "distinct segments tracked (default 100); the rest count as one '(other)' segment",
        _positive)
    v2_version_header: str | None = setting(
        None, "a header of V2's answers naming its version (e.g. X-Version): the first answer "
        "with a new value records a V2 deploy marker", _version_header, metavar="NAME")
    stale_after_s: float = setting(
        300.0, "a comparison whose V2 call came this long after V1's answer is flagged stale",
        _positive)
    auto_ignore_noise: bool = setting(
        False, "hide differences at paths where V1's answers to identical requests change over "
        "time (suspected noise); off by default: they are only shown")
    retention_max_age_s: float | None = setting(
        14 * 86400.0, "delete exchange documents older than this many seconds (default 1209600 "
        "= 14 days; 0 keeps them); their counts stay, and so does each class's last example",
        _not_negative)
    retention_max_docs: int | None = setting(
        None, "keep at most this many exchanges, deleting the oldest (default: all)", _positive)
    rollup_max_age_s: float = setting(
        90 * 86400.0, "delete the counts by minute/hour/day older than this many seconds "
        "(default 7776000 = 90 days; 0 keeps them): windows reach back that far; all-time "
        "counts stay", _not_negative)
    store_max_bytes: int = setting(
        10 * 1024**3, "disk budget of the store (default 10 GiB; 0: none): past it the oldest "
        "exchange documents are deleted (counts and each class's last example stay). SQLite: "
        "pages in use plus the WAL; MongoDB: dbStats dataSize + indexSize", _not_negative)
    keep: str = setting(
        "sampled", "which exchange documents are kept as evidence (every exchange is counted "
        "either way): sampled (per class and hour, errors capped alike, a fraction of matches, "
        "new and reopened classes always) or all", _keep_mode, metavar="sampled|all")
    keep_per_class_hour: int = setting(
        20, "documents kept per mismatch class (and per route and error outcome) each hour "
        "before sampling (default 20)", _not_negative, metavar="N")
    keep_matches: float = setting(
        0.001, "fraction of matching exchanges whose documents are kept, besides the first of "
        "each route each hour (default 0.001)", _fraction, metavar="FRACTION")
    api_token: str | None = setting(
        None, "bearer token for the reports API (required off loopback)", _api_token,
        env_only=True)
    api_token_file: str | None = setting(
        None, "a file only you can read (chmod 600) holding the reports API's bearer token; "
        "SHADOW_API_TOKEN, when set, is used instead", metavar="FILE", secret=True)
    metrics_open: bool = setting(
        False, "serve /metrics without the bearer token (for Prometheus scrapers)")
    redact_headers: str = setting(
        redact.DEFAULT_HEADERS, "comma-separated header names whose values are secrets, on top "
        "of the built-in names (default: Authorization, Cookie, Set-Cookie, X-Api-Key, ...)",
        _header_names)
    redact_fields: str = setting(
        redact.DEFAULT_FIELDS, "comma-separated JSON field / query parameter names whose values "
        "are secrets, on top of the built-in names (default: password, token, api_key, ...)")
    redact_names: str = setting(
        "", "comma-separated names whose values are always secrets (headers, cookies, query, "
        "form, multipart, JSON at any depth), case, '-' and '_' ignored, globs allowed (e.g. "
        "'x-tenant-*,*otp*'); wins over --redact-allow", redact.check_names)
    redact_allow: str = setting(
        "", "comma-separated names never redacted by name, narrowing the built-in names (e.g. "
        "'monkey,sort_key'); globs allowed; value detectors still apply", redact.check_names)
    redact_action: str = setting(
        "token", "what a secret becomes: token (a stable keyed hash: equal secrets still "
        "compare equal; default), mask ([redacted]) or drop (the item removed)",
        redact.check_action)
    redact_detectors: str = setting(
        redact.DEFAULT_DETECTORS, "value detectors applied whatever the name (default "
        "card,jwt,email,bearer; '' turns them off)", redact.check_detectors)
    # keys (shadow/secretkey.py reads them)
    secret_key: str | None = setting(
        None, "the key (base64, as `shadow keygen` prints it) that seals the credentials the "
        "replay needs and keys the redaction tokens", _secret_key, env_only=True)
    secret_key_file: str | None = setting(
        None, "a file only you can read (chmod 600) holding the key, as `shadow keygen -o FILE` "
        "writes it; the proxy and the subscriber need the same one (default under `shadow up`: "
        "<data-dir>/secret.key, made on the first start)", metavar="FILE", secret=True)
    previous_secret_key_files: str | None = setting(
        None, "comma-separated key files of earlier keys, after a rotation: they still open the "
        "events they sealed", metavar="FILES", secret=True)
    # supervisor (`shadow up`, `shadow proxy --workers N`)
    heartbeat_timeout_s: float = setting(
        30.0, "seconds a child of `shadow up` may go without a heartbeat from its event loop "
        "(frozen, deadlocked) before it is killed and restarted (default 30)", _positive)
    # misc
    log_level: str = setting("info", "debug, info, warning or error", _log_level)
    log_format: str = setting(
        "text", "text (default) or json: one object per line with time (UTC), level, component, "
        "message, exchange_id/request_id when there is one, and exception", _log_format,
        metavar="text|json")
    # notifications (comparer/notifier.py)
    notify_url: str | None = setting(
        None, "webhook URLs (comma-separated) told about new and reopened mismatch classes, "
        "verdict changes per route and a pipeline falling behind; a secret (a Slack URL holds "
        "its token): better given as SHADOW_NOTIFY_URL", notify.check_urls, metavar="URLS",
        opaque=True)
    notify_format: str = setting(
        "slack", "slack (incoming-webhook JSON {\"text\": ...}; default) or json (one object per "
        "event, for generic receivers)", notify.check_format, metavar="slack|json")
    notify_behind_s: float = setting(
        300.0, "tell --notify-url when a consumer group falls this many seconds behind its "
        "stream (default 300)", _positive)

    def require(self, *names: str) -> None:
        """Fail start-up with a message naming each missing setting and how to set it."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            hints = ", ".join(f"--{n.replace('_', '-')} (or {ENV_PREFIX}{n.upper()})" for n in missing)
            raise ConfigError(f"missing required setting: {hints}")

    def __repr__(self) -> str:
        """Credentials masked: a token or key as ***, a URL's password as ***."""
        return f"Settings({', '.join(f'{f.name}={_shown(f, getattr(self, f.name))!r}' for f in fields(self))})"


_FIELDS = {f.name: f for f in fields(Settings)}


def _shown(f: dataclasses.Field[Any], value: Any) -> Any:
    """A secret setting as repr() shows it: a URL with its credentials masked, a file's path
    as it is (the file holds the secret), anything else (a token, headers) as ***."""
    if value is None or not f.metadata["secret"] or f.name.endswith(("_file", "_files")):
        return value
    text = str(value)
    return mask_url(text) if "://" in text and not f.metadata["env_only"] \
        and not f.metadata["opaque"] else "***"


def env_only_names() -> list[str]:
    """Settings read from the environment only (a token, a key): never a flag."""
    return [f.name for f in fields(Settings) if f.metadata["env_only"]]


def env_only_hint(name: str) -> str:
    """What to write instead of the flag --NAME, which is refused."""
    return (f"{_flag(name)} is not accepted on the command line, where `ps` shows it to every "
            f"user of this machine: set {ENV_PREFIX}{name.upper()} in the environment, or pass "
            f"{_flag(name)}-file FILE (a file only you can read: chmod 600 FILE)")


@dataclass(frozen=True, slots=True)
class Option:
    """A setting as the command line shows it."""

    name: str
    flag: str  # --name-with-dashes
    help: str
    boolean: bool  # `--flag` alone means true
    metavar: str
    main: tuple[str, ...]  # the commands whose --help lists it under "main options"
    secret: bool = False  # can carry a credential: `shadow` moves it off its command line


def options() -> list[Option]:
    """Every setting's command-line option, in declaration order."""
    out = []
    for f in fields(Settings):
        if f.metadata["env_only"]:
            continue  # no flag: its value would show in `ps`
        boolean = "bool" in str(f.type)
        metavar = "BOOL" if boolean else f.metadata["metavar"] or f.name.upper().split("_")[-1]
        out.append(Option(f.name, _flag(f.name), f.metadata["help"], boolean, metavar,
                          f.metadata["main"], f.metadata["secret"]))
    return out


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
    if values.get("api_token") is None and values.get("api_token_file"):
        path = values["api_token_file"]
        values["api_token"] = read_private_file(path, "--api-token-file").strip()
        if not values["api_token"]:
            raise ConfigError(f"--api-token-file: {path} is empty; put the token in it, e.g. "
                              "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE")
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
        if _FIELDS[name].metadata["env_only"]:
            raise ConfigError(f"{file}: {key} is not read from a settings file (it is often shared "
                              f"or committed): set {ENV_PREFIX}{name.upper()} in the environment, "
                              f"or {name}_file = FILE (a file only you can read: chmod 600 FILE)")
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
    """Every float finite, then each setting's own check, then the rules between settings."""
    for f in fields(Settings):
        value = getattr(s, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{_flag(f.name)} must be a finite number, got {value}")
    for f in fields(Settings):
        value, check = getattr(s, f.name), f.metadata["check"]
        if check is not None and value is not None:
            check(value, _flag(f.name))
    if s.claim_idle_s <= s.v2_connect_timeout_s + s.v2_read_timeout_s:
        raise ConfigError(
            f"--claim-idle-s ({s.claim_idle_s:g}) must exceed --v2-connect-timeout-s + "
            f"--v2-read-timeout-s ({s.v2_connect_timeout_s + s.v2_read_timeout_s:g}), or replays "
            "still waiting on V2 would be handed to another subscriber and sent twice")
    raw = [g for g, mode in protection.parse_capture_bodies(s.capture_bodies)
           if mode == protection.RAW]
    if raw and not s.allow_raw_bodies:
        raise ConfigError(f"--capture-bodies asks to store the bodies of {', '.join(raw)} raw "
                          "(unredacted: any password or card number in them is kept in clear); "
                          "add --allow-raw-bodies if that is what you want")


def replace(s: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(s, **changes)


def sqlite_path(store_url: str) -> str:
    """sqlite:///relative/x.db -> relative/x.db ; sqlite:////abs/x.db -> /abs/x.db."""
    if not store_url.startswith("sqlite:///"):
        raise ConfigError(f"not a sqlite URL: {store_url!r}")
    return store_url[len("sqlite:///"):]


def to_args(settings: Settings, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that reproduce `settings` in a child process (non-default values only),
    except the secret ones: they go in its environment (`to_env`)."""
    args: list[str] = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name in skip or value == f.default or f.metadata["secret"]:
            continue
        flag = _flag(f.name)
        if isinstance(value, bool):
            args += [flag, "true" if value else "false"]
        else:
            args += [flag, str(value)]
    return args


def to_env(settings: Settings) -> dict[str, str]:
    """The SHADOW_* variables that carry the secret settings to a child process (every one
    that is set, defaults included, so an inherited variable cannot override it)."""
    return {f"{ENV_PREFIX}{f.name.upper()}": str(value) for f in fields(Settings)
            if f.metadata["secret"] and (value := getattr(settings, f.name)) is not None}


def field_names() -> list[str]:
    return list(_FIELDS)
