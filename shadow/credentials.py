"""Credentials kept out of what shadow prints and logs (pure).

Settings such as `--redis redis://:PASSWORD@host` or `--store mongodb://user:PASSWORD@host`
carry credentials. `mask_url()` is what every log line, start-up message and error that shows
such a URL goes through: the userinfo's password becomes `***` (`redis://:***@host:6379/0`),
and so do the values of query parameters named like secrets (`?password=`, `?token=`,
`authMechanismProperties=AWS_SESSION_TOKEN:...`). It works on any text, so a driver's error
message that quotes a URL is masked as well; text without a URL is returned unchanged.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://netloc, the rest up to whitespace or a quote: what a log line quotes as a URL
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<netloc>[^/?#\s'\"<>]*)"
                  r"(?P<rest>[^\s'\"<>]*)")
# query parameters (or URI options) whose value is a credential
_SECRET_PARAM = re.compile(
    r"(?P<lead>[?&;])(?P<name>[^=&;#\s]*(?:pass|secret|token|key|auth|sig|credential)"
    r"[^=&;#\s]*)=(?P<value>[^&;#\s]*)", re.IGNORECASE)


def _netloc(netloc: str) -> str:
    """`user:pw@host` -> `user:***@host`; `token@host` -> `***@host` (a lone user name may be
    the credential, e.g. https://TOKEN@host); no userinfo -> unchanged. The userinfo ends at
    the last `@`, as URL parsers read it (an unescaped `@` in a password stays hidden)."""
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return netloc
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"


def _one(match: re.Match[str]) -> str:
    rest = _SECRET_PARAM.sub(lambda m: f"{m['lead']}{m['name']}={MASK}", match["rest"])
    return f"{match['scheme']}{_netloc(match['netloc'])}{rest}"


def mask_url(text: str) -> str:
    """`text` with the credentials of every URL in it masked: userinfo and secret-named query
    parameters. Everything else (scheme, hosts, ports, path, other parameters) is kept, so a
    log still says where shadow connects."""
    return _URL.sub(_one, text)


def has_credentials(url: str) -> bool:
    """Whether masking `url` hides anything: it carries a user name, a password or a secret
    parameter."""
    return mask_url(url) != url
