"""The headers V1 gets (pure): computed by the proxy for V1, rebuilt by the subscriber for V2.

V2 must get a request as V1 got it. The proxy knows what the subscriber cannot (the
client's address and scheme): it records them on the request event (Request.client,
Request.scheme), and both call `upstream_request_headers` with the same inputs, so V1
and V2 see the same end-to-end headers, request id, Host and X-Forwarded-* (the
subscriber then applies --v2-set-headers / --v2-remove-headers).
"""

from __future__ import annotations

import re

from shadow.model import Headers

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Who a request came from, as earlier proxies say: trusted only with --trust-forwarded
FORWARDED = frozenset({
    "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "x-forwarded-port", "x-forwarded-prefix", "x-real-ip",
})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def hop_by_hop(headers: Headers) -> frozenset[str]:
    """Hop-by-hop names: the fixed set plus every name the Connection header lists."""
    extra = {token.strip().lower() for k, v in headers if k.lower() == "connection"
             for token in v.split(",") if token.strip()}
    return HOP_BY_HOP | extra if extra else HOP_BY_HOP


def upstream_request_headers(headers: Headers, request_id_header: str, request_id: str,
                             remote: str | None, scheme: str, host: str | None, *,
                             forwarded: bool = True, trust_forwarded: bool = False,
                             preserve_host: bool = False) -> Headers:
    """Headers for V1 (pure): end-to-end headers in order, the request id, X-Forwarded-*.

    Host is V1's own unless `preserve_host`; Expect is answered by the proxy itself.
    The client's X-Forwarded-*, X-Real-IP and Forwarded headers are dropped unless
    `trust_forwarded` (a proxy in front, such as nginx, wrote them): anyone can send them,
    and a V1 that builds absolute URLs from X-Forwarded-Host would be poisoned. Trusted,
    they are kept and extended with this hop. `forwarded`: add this hop's own."""
    drop = hop_by_hop(headers) | {"expect", request_id_header.lower()}
    if not preserve_host:
        drop = drop | {"host"}
    if not trust_forwarded:
        drop = drop | FORWARDED
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.append((request_id_header, request_id))
    if not forwarded:
        return out
    kept = {k.lower() for k, _ in out}
    if remote:
        chain = [v for k, v in out if k.lower() == "x-forwarded-for"]
        out = [(k, v) for k, v in out if k.lower() != "x-forwarded-for"]
        out.append(("X-Forwarded-For", ", ".join([*chain, remote])))
    if "x-forwarded-proto" not in kept:
        out.append(("X-Forwarded-Proto", scheme))
    if host and "x-forwarded-host" not in kept:
        out.append(("X-Forwarded-Host", host))
    if "forwarded" in kept:  # trusted: this hop joins the chain (RFC 7239)
        chain = [v for k, v in out if k.lower() == "forwarded"]
        out = [(k, v) for k, v in out if k.lower() != "forwarded"]
        out.append(("Forwarded", ", ".join([*chain, forwarded_element(remote, host, scheme)])))
    return out


def forwarded_element(remote: str | None, host: str | None, scheme: str) -> str:
    """One hop of a Forwarded header (pure): `for=...;host=...;proto=...`, quoted as needed."""
    pairs = [("for", f"[{remote}]" if remote and ":" in remote else remote), ("host", host),
             ("proto", scheme)]
    return ";".join(f"{name}={_forwarded_value(value)}" for name, value in pairs if value)


def _forwarded_value(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
