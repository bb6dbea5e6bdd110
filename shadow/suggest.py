"""Rule suggestions (pure): from noise evidence and from values that look like UUIDs or
timestamps. Suggestions are shown and printable as TOML; they are never applied."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from shadow.model import Difference
from shadow.noise import is_noise
from shadow.reports_model import MismatchClass, RouteSummary

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")
_ISO = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$")
UUID_REGEX = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
ISO_REGEX = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?"


def looks_like(value: Any) -> str | None:
    if isinstance(value, str):
        if _UUID.match(value):
            return "uuid"
        if _ISO.match(value):
            return "timestamp"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 1e9 <= value < 2e10 or 1e12 <= value < 2e13:  # unix seconds or milliseconds
            return "timestamp"
    return None


def suggest(routes: Sequence[RouteSummary],
            class_examples: Sequence[tuple[MismatchClass, list[Difference]]],
            ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for r in routes:
        for entries, evidence in (
                (r.get("noise", []), "V1 disagreed with itself at {} in {} of {} exchanges"),
                (r.get("suspected_noise", []),
                 "V1's answers to identical requests changed at {} in {} of {} repeats")):
            for n in entries:
                key, rate = (r["method"], r["route"], n["path"]), n.get("rate")
                if key in seen or not is_noise(rate, n["observed"]):
                    continue
                seen.add(key)
                out.append({"method": r["method"], "route": r["route"], "path": n["path"],
                            "rule": "ignore", "evidence":
                            evidence.format(n["path"], n["count"], n["observed"])
                            + f" ({rate * 100:.0f}%)"})
    for cls, diff in class_examples:
        for d in diff:
            if d.kind != "changed":
                continue
            a, b = looks_like(d.v1), looks_like(d.v2)
            if a is None or a != b:
                continue
            path = re.sub(r"\[\d+\]", "[*]", d.path)
            key = (cls["method"], cls["route"], path)
            if key in seen:
                continue
            seen.add(key)
            out.append({"method": cls["method"], "route": cls["route"], "path": path,
                        "rule": "normalize", "pattern": UUID_REGEX if a == "uuid" else ISO_REGEX,
                        "evidence": f"class {cls['signature']} ({cls['count']} mismatches): both "
                                    f"sides hold a {a} at {path}, e.g. {d.v1!r} vs {d.v2!r}"})
    return out


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(suggestions: list[dict[str, Any]]) -> str:
    """Paste-able [[rules]] tables, each with its evidence as the reason."""
    blocks = []
    for s in suggestions:
        lines = ["[[rules]]", f"route = {_q(s['route'])}", f"method = {_q(s['method'])}"]
        if s["rule"] == "ignore":
            lines.append(f"ignore = [{_q(s['path'])}]")
        else:
            lines.append(f"normalize = [{{ path = {_q(s['path'])}, regex = {_q(s['pattern'])}, "
                         f"replace = \"<{'uuid' if 'a-fA-F' in s['pattern'] else 'time'}>\" }}]")
        lines.append(f"reason = {_q('suggested by shadow: ' + s['evidence'])}")
        lines.append('owner = ""  # who decides')
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
