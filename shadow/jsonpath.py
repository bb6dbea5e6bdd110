"""JSONPath-like patterns over the diff's paths (pure): `$.items[*].updated_at`, `$..trace_id`."""

from __future__ import annotations

import re
from functools import lru_cache

from shadow.errors import ConfigError

_NAME = r"\.[A-Za-z_][A-Za-z0-9_]*"
_QUOTED = r'\["(?:[^"\\]|\\.)*"\]'
_INDEX = r"\[\d+\]"
_ANY_STEP = f"(?:{_NAME}|{_INDEX}|{_QUOTED})"
_TOKEN = re.compile(r'\.\.(\*|[A-Za-z_][A-Za-z0-9_]*)|\.(\*|[A-Za-z_][A-Za-z0-9_]*)|\[(\*|\d+)\]'
                    r'|\["((?:[^"\\]|\\.)*)"\]')


class PathError(ConfigError, ValueError):
    """A path pattern that does not parse (a ValueError too, as it always was)."""


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(exact, covering): `exact` matches the path itself; `covering` also its descendants."""
    if not pattern.startswith("$"):
        raise PathError(f"path pattern must start with $: {pattern!r}")
    parts = ["^\\$"]
    pos = 1
    while pos < len(pattern):
        m = _TOKEN.match(pattern, pos)
        if m is None:
            raise PathError(f"cannot parse path pattern {pattern!r} at {pattern[pos:]!r}")
        deep, name, index, quoted = m.groups()
        if deep is not None:
            step = _ANY_STEP if deep == "*" else re.escape("." + deep)
            parts.append(f"(?:{_ANY_STEP})*{step}")
        elif name is not None:
            parts.append(f"(?:{_NAME}|{_QUOTED})" if name == "*" else re.escape("." + name))
        elif index is not None:
            # [*] is any array position, or any item of an array matched by key (match_by)
            parts.append(f"(?:{_INDEX}|{_QUOTED})" if index == "*" else re.escape(f"[{index}]"))
        else:
            parts.append(re.escape(f'["{quoted}"]'))
        pos = m.end()
    body = "".join(parts)
    return re.compile(body + "$"), re.compile(body + r"(?=$|[.\[])")


def matches(pattern: str, path: str) -> bool:
    """True when `path` is the pattern's node or inside it."""
    return compile_pattern(pattern)[1].match(path) is not None


def matches_exactly(pattern: str, path: str) -> bool:
    return compile_pattern(pattern)[0].match(path) is not None
