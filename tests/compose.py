"""docker-compose.yml as `docker compose` would read it, for tests on a machine without Docker:
the YAML (anchors merged), the ${...} substitution from an env file, the nginx image's
template rendering, and its services' commands moved onto loopback ports."""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
NGINX_TEMPLATE = ROOT / "nginx" / "compose.conf"
DOCKERFILE = ROOT / "Dockerfile"

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY|AUTH", re.IGNORECASE)

# $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME
_VARIABLE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
                       r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(Exception):
    """`docker compose` would refuse to start: a ${NAME:?message} is unset or empty."""


def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def pyproject_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines, as `docker compose` reads .env (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def filled_env() -> dict[str, str]:
    """The example env file with every secret filled in, each by a value found nowhere else
    (a key: the URL-safe base64 of 32 bytes, as `shadow keygen` makes)."""
    def fill(name: str) -> str:
        if name.endswith("SECRET_KEY"):
            return base64.urlsafe_b64encode(hashlib.sha256(name.encode()).digest()).decode()
        return f"canary-{name.lower().replace('_', '-')}-7f3a9c"

    return {k: fill(k) if SECRET_NAME.search(k) and not v else v
            for k, v in read_env_file().items()}


def variables(text: str) -> list[tuple[str, str | None]]:
    """Every ${NAME...} or $NAME in text, as (name, operator or None); $$ is no variable."""
    return [(m.group("braced") or m.group("plain"), m.group("op"))
            for m in _VARIABLE.finditer(text) if not m.group("dollar")]


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution of one value."""
    def one(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("plain")
        value, op, arg = env.get(name), m.group("op"), m.group("arg")
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if missing else str(value)
        if op in ("?", ":?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return value or ""

    return _VARIABLE.sub(one, text)


def render(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file with its values substituted (keys are not, as in compose)."""
    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, env)
        if isinstance(node, list):
            return [walk(x) for x in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    return walk(raw())  # type: ignore[no-any-return]


def strings(node: Any) -> list[str]:
    """Every string value in a YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for x in node for s in strings(x)]
    if isinstance(node, dict):
        return [s for x in node.values() for s in strings(x)]
    return []


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def shadow_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run shadow's own image (built from ./Dockerfile)."""
    return {n: s for n, s in compose["services"].items() if s.get("build") == "."}


def nginx_envsubst(template: str, env: Mapping[str, str]) -> str:
    """What the nginx image's 20-envsubst-on-templates.sh writes: only the variables defined
    in its environment whose name matches NGINX_ENVSUBST_FILTER are substituted."""
    pattern = re.compile(env.get("NGINX_ENVSUBST_FILTER", ""))
    names = {n for n in env if pattern.search(n)}

    def one(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        if m.group("dollar") or name not in names or m.group("op"):
            return m.group(0)
        return env[name]

    return _VARIABLE.sub(one, template)


def upstream_hosts(conf: str) -> list[str]:
    """The host of every `server HOST:PORT` line inside the upstream blocks."""
    hosts = []
    for block in re.findall(r"upstream\s+\S+\s*\{(.*?)\}", conf, re.S):
        hosts += re.findall(r"^\s*server\s+([^:\s;]+):\d+", block, re.M)
    return hosts


def listen_ports(command: list[str]) -> set[int]:
    """The ports a service's command listens on (0.0.0.0:PORT arguments)."""
    return {int(p) for arg in command for p in re.findall(r"^0\.0\.0\.0:(\d+)$", arg)}


def healthcheck_ports(service: Mapping[str, Any]) -> set[int]:
    return {int(p) for part in service["healthcheck"]["test"]
            for p in re.findall(r"127\.0\.0\.1:(\d+)", part)}
