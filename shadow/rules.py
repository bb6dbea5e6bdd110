"""Comparison rules from a TOML file (pure): what to ignore, tolerate, reorder, normalize.

    [[rules]]
    route = "/users/{id}"          # glob over route templates (default "*"); method optional
    ignore = ["$.items[*].updated_at", "$..trace_id"]
    tolerance = { "$.price" = { abs = 0.01 }, "$.score" = { rel = 0.05 } }
    unordered = ["$.tags"]         # arrays compared ignoring order
    match_by = { "$.items" = "id" }  # array items matched by a key instead of position
    normalize = [{ path = "$..created_at", regex = "\\d{4}-.*Z", replace = "<ts>" }]
    null_equals_missing = true
    status_equivalent = [[200, 204]]
    mode = "subset"                # strict | subset (V2 may add fields) | schema (types only)
    headers = { exclude = ["cache-control"], include = ["x-api-version"] }
    reason = "..."  owner = "team"  expires = 2027-01-31

    routes = ["/users/{user}/orders/{order}"]   # top level: route templates that win

Every rule may carry a reason, an owner and an expiry date; expired rules stop applying.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from shadow.errors import ConfigError
from shadow.jsonpath import PathError, compile_pattern

MODES = ("strict", "subset", "schema")
_KEYS = {"route", "method", "ignore", "tolerance", "unordered", "match_by", "normalize",
         "null_equals_missing", "status_equivalent", "mode", "headers", "reason", "owner",
         "expires", "name"}


class RulesError(ConfigError):
    """A rules file that cannot be used: the message names the file, line and problem."""


@dataclass(frozen=True)
class Tolerance:
    path: str
    abs: float | None = None
    rel: float | None = None

    def admits(self, a: float, b: float) -> bool:
        delta = abs(a - b)
        if self.abs is not None and delta <= self.abs:
            return True
        return self.rel is not None and delta <= self.rel * max(abs(a), abs(b))


@dataclass(frozen=True)
class Normalizer:
    path: str
    regex: re.Pattern[str]
    replace: str


@dataclass(frozen=True)
class Rule:
    id: str
    line: int = 0
    route: str = "*"
    method: str | None = None
    ignore: tuple[str, ...] = ()
    tolerance: tuple[Tolerance, ...] = ()
    unordered: tuple[str, ...] = ()
    match_by: tuple[tuple[str, str], ...] = ()
    normalize: tuple[Normalizer, ...] = ()
    null_equals_missing: bool = False
    status_equivalent: tuple[frozenset[int], ...] = ()
    mode: str | None = None
    headers_include: tuple[str, ...] = ()
    headers_exclude: tuple[str, ...] = ()
    reason: str | None = None
    owner: str | None = None
    expires: dt.date | None = None

    def applies_to(self, method: str | None, route: str | None) -> bool:
        if self.method is not None and (method or "").upper() != self.method:
            return False
        return fnmatch.fnmatchcase(route or "", self.route)

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and self.expires < today

    @property
    def transforms(self) -> bool:
        return bool(self.unordered or self.match_by or self.normalize)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "line": self.line, "route": self.route, "method": self.method,
                "reason": self.reason, "owner": self.owner,
                "expires": self.expires.isoformat() if self.expires else None}


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    routes: tuple[str, ...] = ()  # user route templates, e.g. /users/{user}/orders/{order}
    source: str = ""
    _patterns: tuple[tuple[re.Pattern[str], str], ...] = field(default=(), repr=False)

    def active(self, method: str | None, route: str | None, today: dt.date) -> list[Rule]:
        return [r for r in self.rules if not r.expired(today) and r.applies_to(method, route)]

    def expired(self, today: dt.date) -> list[Rule]:
        return [r for r in self.rules if r.expired(today)]

    def route_for(self, path: str) -> str | None:
        """The first user route template that matches the path, if any."""
        for regex, template in self._patterns:
            if regex.match(path):
                return template
        return None


EMPTY = RuleSet()


def _template_regex(template: str) -> re.Pattern[str]:
    out = []
    for part in re.split(r"(\{[^}/]+\})", template):
        out.append("[^/]+" if part.startswith("{") and part.endswith("}") else re.escape(part))
    return re.compile("^" + "".join(out) + "$")


def _line_of(text: str, rule_index: int, key: str | None) -> int:
    """The line of the n-th [[rules]] table (or of a key inside it), 1-based."""
    lines = text.splitlines()
    seen = -1
    start = 0
    for i, line in enumerate(lines):
        if line.strip().startswith("[[rules]]"):
            seen += 1
            if seen == rule_index:
                start = i
                break
    if key is None:
        return start + 1
    for i in range(start + 1, len(lines)):
        stripped = lines[i].strip()
        if stripped.startswith("["):
            break
        if re.match(rf"^{re.escape(key)}\s*[=.]", stripped):
            return i + 1
    return start + 1


def load_rules(text: str, source: str = "rules") -> RuleSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"{source}: not valid TOML: {e}") from e
    rules_data = data.get("rules", [])
    if not isinstance(rules_data, list):
        raise RulesError(f"{source}: `rules` must be an array of tables: write [[rules]]")
    rules = []
    for index, raw in enumerate(rules_data):
        def fail(key: str | None, message: str, index: int = index) -> RulesError:
            return RulesError(f"{source}:{_line_of(text, index, key)}: {message}")

        if not isinstance(raw, dict):
            raise fail(None, "each rule must be a table")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown rule key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}")
        rules.append(_rule(raw, index, fail, _line_of(text, index, None)))
    routes = data.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(r, str) and r.startswith("/")
                                               for r in routes):
        raise RulesError(f"{source}: `routes` must be a list of templates like \"/users/{{id}}\"")
    return RuleSet(tuple(rules), tuple(routes), source,
                   tuple((_template_regex(t), t) for t in routes))


def _strings(raw: Any, key: str, fail: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise fail(key, f"`{key}` must be a list of strings")
    return tuple(raw)


def _path(p: str, key: str, fail: Any) -> str:
    try:
        compile_pattern(p)
    except PathError as e:
        raise fail(key, f"`{key}`: {e}") from None
    return p


def _rule(raw: dict[str, Any], index: int, fail: Any, line: int) -> Rule:
    route = raw.get("route", "*")
    if not isinstance(route, str):
        raise fail("route", "`route` must be a string such as \"/users/{id}\" or \"/api/*\"")
    method = raw.get("method")
    if method is not None and (not isinstance(method, str) or not method.isalpha()):
        raise fail("method", "`method` must be an HTTP method such as \"GET\"")
    ignore = tuple(_path(p, "ignore", fail) for p in _strings(raw.get("ignore"), "ignore", fail))
    unordered = tuple(_path(p, "unordered", fail)
                      for p in _strings(raw.get("unordered"), "unordered", fail))
    tolerances = []
    tol = raw.get("tolerance", {})
    if not isinstance(tol, dict):
        raise fail("tolerance", "`tolerance` must be a table: { \"$.price\" = { abs = 0.01 } }")
    for p, spec in tol.items():
        _path(p, "tolerance", fail)
        if not isinstance(spec, dict) or not set(spec) <= {"abs", "rel"} or not spec or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                for v in spec.values()):
            raise fail("tolerance", f"tolerance for {p!r} must be {{ abs = N }} and/or "
                                    "{ rel = N } with non-negative numbers")
        tolerances.append(Tolerance(p, spec.get("abs"), spec.get("rel")))
    match_by = raw.get("match_by", {})
    if not isinstance(match_by, dict) or not all(isinstance(v, str) for v in match_by.values()):
        raise fail("match_by", "`match_by` must be a table of array path = key name")
    normalizers = []
    norm = raw.get("normalize", [])
    if not isinstance(norm, list):
        raise fail("normalize", "`normalize` must be a list of { path, regex, replace }")
    for n in norm:
        if not isinstance(n, dict) or "regex" not in n or not set(n) <= {"path", "regex", "replace"}:
            raise fail("normalize", "each normalizer is { path = \"$..x\" (optional), "
                                    "regex = \"...\", replace = \"...\" }")
        try:
            regex = re.compile(str(n["regex"]))
        except re.error as e:
            raise fail("normalize", f"bad regex {n['regex']!r}: {e}") from None
        normalizers.append(Normalizer(_path(str(n.get("path", "$..*")), "normalize", fail), regex,
                                      str(n.get("replace", ""))))
    equivalent = raw.get("status_equivalent", [])
    if not isinstance(equivalent, list) or not all(
            isinstance(g, list) and len(g) >= 2 and all(isinstance(s, int) and 100 <= s <= 599
                                                          for s in g) for g in equivalent):
        raise fail("status_equivalent", "`status_equivalent` must be a list of lists of "
                                        "status codes, e.g. [[200, 204]]")
    mode = raw.get("mode")
    if mode is not None and mode not in MODES:
        raise fail("mode", f"`mode` must be one of {', '.join(MODES)}")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not set(headers) <= {"include", "exclude"}:
        raise fail("headers", "`headers` must be { include = [...], exclude = [...] }")
    expires = raw.get("expires")
    if expires is not None and not isinstance(expires, dt.date):
        raise fail("expires", "`expires` must be a date such as 2027-01-31 (no quotes)")
    nem = raw.get("null_equals_missing", False)
    if not isinstance(nem, bool):
        raise fail("null_equals_missing", "`null_equals_missing` must be true or false")
    for key in ("reason", "owner", "name"):
        if key in raw and not isinstance(raw[key], str):
            raise fail(key, f"`{key}` must be a string")
    return Rule(
        id=raw.get("name") or f"rules[{index}]", line=line, route=route,
        method=method.upper() if method else None, ignore=ignore, tolerance=tuple(tolerances),
        unordered=unordered,
        match_by=tuple((_path(p, "match_by", fail), k) for p, k in match_by.items()),
        normalize=tuple(normalizers), null_equals_missing=nem,
        status_equivalent=tuple(frozenset(g) for g in equivalent), mode=mode,
        headers_include=tuple(h.lower() for h in _strings(headers.get("include"), "headers", fail)),
        headers_exclude=tuple(h.lower() for h in _strings(headers.get("exclude"), "headers", fail)),
        reason=raw.get("reason"), owner=raw.get("owner"), expires=expires)


def load_rules_file(path: str | None) -> RuleSet:
    """The rules file named by --rules (None: no rules). Errors name the file and line."""
    if path is None:
        return EMPTY
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise RulesError(f"rules file {path} does not exist (--rules)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(f"cannot read rules file {path}: {e}") from e
    return load_rules(text, path)


CANONICAL_RESOURCE = "canonical-resource"
OTHER_ROUTE = "(other)"  # every route beyond --max-routes counts as this one


def route_of(rules: RuleSet, method: str, url: str, headers: list[tuple[str, str]], *,
             trust_header: bool = False) -> str:
    """The user's route templates, then the automatic template (numbers, UUIDs, hex ids, ULIDs
    and tokens become {id}). A `Canonical-Resource` request header wins only with
    `trust_header` (--trust-canonical-resource): else any client could move its traffic
    between routes in the verdict."""
    from shadow.routes import route_template

    if trust_header:
        for k, v in headers:
            if k.lower() == CANONICAL_RESOURCE and v.startswith("/"):
                return v.strip()
    path = url.split("?", 1)[0]
    return rules.route_for(path) or route_template(url)


def capped_route(route: str, admitted: set[str] | frozenset[str]) -> str:
    """`route` if it is among the admitted routes (see --max-routes), else OTHER_ROUTE."""
    return route if route in admitted else OTHER_ROUTE
