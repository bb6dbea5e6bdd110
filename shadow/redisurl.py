"""Redis URLs (pure): one Redis (`redis://`, `rediss://`, `unix://`), a Redis Cluster
(`redis+cluster://HOST:PORT[,HOST:PORT...]`, `rediss+cluster://`) or a master that Redis
Sentinel watches (`redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE`, `rediss+sentinel://`).

`user:password@` before the hosts authenticates to the cluster's nodes, or to the Sentinel
master (and its replicas); sentinels that need a password of their own get it as
`?sentinel_password=...`. TLS options as query parameters: ssl_ca_certs, ssl_certfile,
ssl_keyfile, ssl_cert_reqs (none, optional, required), ssl_check_hostname (true/false).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from shadow.credentials import mask_url
from shadow.errors import ConfigError

Kind = Literal["single", "cluster", "sentinel"]
EXPECTED = ("expected redis://, rediss://, unix://, redis+cluster://HOST:PORT[,HOST:PORT...] "
            "or redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE (TLS: rediss+cluster://, "
            "rediss+sentinel://)")
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("single", False), "rediss": ("single", True), "unix": ("single", False),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True)}
_DEFAULT_PORT = {"cluster": 6379, "sentinel": 26379}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                "ssl_check_hostname")
_OPTIONS = {"cluster": _TLS_OPTIONS, "sentinel": (*_TLS_OPTIONS, "sentinel_password", "db")}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a --redis URL points at. For "single", `url` is handed to redis-py as it is."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # cluster: startup nodes; sentinel: the sentinels
    service: str | None = None  # sentinel: the master's name
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)

    def client_options(self) -> dict[str, Any]:
        """Connection keyword arguments for redis-py (credentials and TLS)."""
        out: dict[str, Any] = {}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        if self.tls:
            out["ssl"] = True
            for name in _TLS_OPTIONS:
                if name in self.options:
                    value = self.options[name]
                    out[name] = value.lower() in ("1", "true", "yes") \
                        if name == "ssl_check_hostname" else value
        if "db" in self.options:
            out["db"] = int(self.options["db"])
        return out


def _hostport(item: str, default_port: int, shown: str) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host:
        raise ConfigError(f"no host in {item!r} of {shown!r}: {EXPECTED}")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ConfigError(f"bad port in {item!r} of {shown!r}: {EXPECTED}") from None
    if not 0 < number < 65536:
        raise ConfigError(f"bad port in {item!r} of {shown!r}: {EXPECTED}")
    return host, number


def parse_redis_url(url: str) -> RedisTarget:
    """The target of `url`, or a ConfigError that says what is accepted (credentials masked)."""
    shown = mask_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ConfigError(f"{EXPECTED}, got {shown!r}")
    kind, tls = _SCHEMES[scheme.lower()]
    if kind == "single":
        return RedisTarget("single", url, tls=tls)
    try:
        parts = urlsplit(f"http://{rest}")  # the netloc rules of http, many hosts in one netloc
    except ValueError as e:
        raise ConfigError(f"{shown!r}: {e}; {EXPECTED}") from None
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigError(f"no HOST:PORT in {shown!r}: {EXPECTED}")
    nodes = tuple(_hostport(item.strip(), _DEFAULT_PORT[kind], shown)
                  for item in hosts.split(",") if item.strip())
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    path = parts.path.strip("/")
    service = None
    if kind == "sentinel":
        if not path or "/" in path:
            raise ConfigError(f"{shown!r}: name the master Sentinel watches, "
                              "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE")
        service = unquote(path)
    elif path not in ("", "0"):
        raise ConfigError(f"{shown!r}: a Redis Cluster has database 0 only; drop /{path}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise ConfigError(f"{shown!r}: unknown option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(_OPTIONS[kind])}")
    if "db" in options and not options["db"].isdigit():
        raise ConfigError(f"{shown!r}: db must be a number, got {options['db']!r}")
    if options and not tls and set(options) & set(_TLS_OPTIONS):
        raise ConfigError(f"{shown!r}: TLS options need the rediss+{kind}:// scheme")
    return RedisTarget(kind, url, nodes, service, username, password, tls, options)


def is_cluster_url(url: str | None) -> bool:
    """Whether --redis names a Redis Cluster (whose keys need hash tags)."""
    return url is not None and url.partition("://")[0].lower() in ("redis+cluster",
                                                                   "rediss+cluster")
