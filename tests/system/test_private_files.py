"""What shadow leaves on the machine, on real processes: every file it writes is 0600 and every
folder 0700 whatever the shell's umask; no credential on any command line `ps` shows; the
key is made once per data folder and reused; services run alone are told how to get a key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import redis
from aiohttp import web

from shadow.cli.embedded_redis import find_server_binary, free_port
from shadow.sealing import SecretKey
from shadow.secretkey import read_key_file
from tests.conftest import wait_for
from tests.procs import ROOT, reap, start_up


@contextlib.contextmanager
def shell_umask(mask: int = 0o022) -> Iterator[None]:
    """The children started inside inherit a usual shell's umask, not a careful one."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}


def app(seen: list[str | None] | None = None) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request.headers.get("Authorization"))
        return web.json_response({"id": request.match_info["n"]})

    a = web.Application()
    a.router.add_get("/items/{n}", item)
    return a


async def compared(api: str, n: int, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(headers=headers) as c, c.get(f"{api}/api/summary") as r:
            return r.status == 200 and int((await r.json())["compared"]) >= n
    except aiohttp.ClientError:
        return False


async def send(proxy: str, n: int) -> None:
    async with aiohttp.ClientSession() as c:
        for i in range(n):
            async with c.get(f"{proxy}/items/{i}") as r:
                assert r.status == 200
                await r.read()


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 60) == 0


def loose_modes(*roots: Path) -> list[str]:
    """Every path under `roots` (and each root) that is not private: a file not 0600, a
    folder not 0700, anything else (a socket) open to group or others."""
    bad = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            mode = stat.S_IMODE(st.st_mode)
            ok = mode == 0o600 if stat.S_ISREG(st.st_mode) else \
                mode == 0o700 if stat.S_ISDIR(st.st_mode) else not mode & 0o077
            if not ok:
                bad.append(f"{path} {mode:04o}")
    return bad


async def test_every_file_and_folder_shadow_up_writes_is_private(http_server,
                                                                 tmp_path: Path) -> None:
    """Started from a shell with umask 022 on a data folder an older version left 0755: the
    folder becomes 0700, and the SQLite store (db, -wal, -shm, in a folder of its own), the
    embedded Redis's append-only files, log and socket, the metrics files and the key are all
    private, while running and after it stopped. The key is made on the first start and the
    next start reuses it."""
    v1, v2 = await http_server(app()), await http_server(app())
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "left-by-an-older-version.log").write_text("x")
    (data / "left-by-an-older-version.log").chmod(0o644)
    args = ("--v1", v1, "--v2", v2, "--data-dir", str(data),
            "--store", f"sqlite:///{store / 'shadow.db'}")
    with shell_umask():
        proc, proxy, api = await start_up(*args, cwd=tmp_path, env=without_key())
    try:
        await send(proxy, 20)
        await wait_for(lambda: compared(api, 20), 90, "20 compared exchanges")
        written = {p.name for p in [*data.rglob("*"), *store.rglob("*")]}
        assert {"secret.key", "redis.log", "redis.sock", "shadow.db", "shadow.db-wal",
                "shadow.db-shm"} <= written, written
        assert any(name.endswith(".aof") for name in written), written
        assert any(name.endswith(".db") for name in {p.name for p in (data / "metrics").iterdir()})
        assert loose_modes(data, store) == []
        key = read_key_file(data / "secret.key", "the data folder's key")
        await stop(proc)
        assert loose_modes(data, store) == []
        with shell_umask():
            proc, proxy, api = await start_up(*args, cwd=tmp_path, env=without_key())
        await send(proxy, 1)
        await wait_for(lambda: compared(api, 21), 90, "one more compared exchange")
        assert read_key_file(data / "secret.key", "x") == key  # the same key, not a new one
        await stop(proc)
        assert loose_modes(data, store) == []
    finally:
        await reap(proc)


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real redis-server (the embedded one's binary) that requires a password."""
    password, port = "redis-pw-7c1f9e", free_port()
    server = subprocess.Popen(
        [str(find_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_timeout=2)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                assert server.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.01)
        yield port, password
    finally:
        client.close()
        server.kill()
        server.wait()


async def _lines(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    async for raw in stream:
        into.append(raw.decode(errors="replace"))


async def test_no_credential_appears_on_any_command_line(http_server, tmp_path: Path,
                                                         redis_with_password) -> None:
    """`shadow up --redis redis://:PASSWORD@...` with SHADOW_API_TOKEN set and V2 credentials
    in --v2-set-headers: the system works (V2 gets its credentials, the exchange is compared
    through the password-protected Redis), yet neither the password, the token, V2's
    credentials nor the key appear in the command line of `shadow up` or of any of its
    children, nor in its logs."""
    port, password = redis_with_password
    token, v2_secret = "api-token-4b8d2a", "v2-bearer-93e0c1"
    seen_by_v2: list[str | None] = []
    v1, v2 = await http_server(app()), await http_server(app(seen_by_v2))
    data = tmp_path / "data"
    proc, proxy, api = await start_up(
        "--v1", v1, "--v2", v2, "--redis", f"redis://:{password}@127.0.0.1:{port}/0",
        "--v2-set-headers", f"Authorization: Bearer {v2_secret}", "--data-dir", str(data),
        "--store", f"sqlite:///{tmp_path / 'shadow.db'}", cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE, env={**without_key(), "SHADOW_API_TOKEN": token})
    logs: list[str] = []
    reader = asyncio.create_task(_lines(proc.stderr, logs))
    try:
        await send(proxy, 1)
        await wait_for(lambda: compared(api, 1, token), 90, "the exchange compared")
        assert seen_by_v2 == [f"Bearer {v2_secret}"]
        key = (data / "secret.key").read_text().strip()
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        roles = [p.cmdline()[3] for p in tree]
        assert sorted(set(roles)) == ["comparer", "proxy", "subscriber", "up"], roles
        for p in tree:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().decode()
            for secret in (password, token, v2_secret, key, SecretKey.from_text(key, "k").key_id):
                assert secret not in cmdline, (secret, cmdline)
        await stop(proc)
        await reader
        text = "".join(logs)
        assert "proxy on port" in text  # the logs were read
        for secret in (password, token, v2_secret, key):
            assert secret not in text
    finally:
        await reap(proc)
        reader.cancel()


def shadow(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=without_key() if env is None else env, check=False, **kw)


def test_a_service_alone_without_a_usable_key_is_told_how_to_get_one(tmp_path: Path) -> None:
    redis_url = "redis://127.0.0.1:9/0"
    for command in (["subscriber", "--v2", "http://127.0.0.1:9"],
                    ["proxy", "--v1", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"]):
        done = shadow(*command, "--redis", redis_url)
        assert done.returncode == 2, done.stderr
        assert "no secret key: make one with `shadow keygen -o shadow.key`" in done.stderr
        assert "--secret-key-file" in done.stderr and "Traceback" not in done.stderr
    loose = tmp_path / "loose.key"
    loose.write_text(SecretKey.generate().to_text())
    loose.chmod(0o644)
    done = shadow("subscriber", "--v2", "http://127.0.0.1:9", "--redis", redis_url,
                  "--secret-key-file", str(loose))
    assert done.returncode == 2 and f"run `chmod 600 {loose}`" in done.stderr, done.stderr


def test_keygen_writes_a_private_key_file_and_never_overwrites_one(tmp_path: Path) -> None:
    out = tmp_path / "shadow.key"
    done = shadow("keygen", "-o", str(out), preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = read_key_file(out, "x")
    assert key.key_id in done.stderr and key.to_text() not in done.stderr + done.stdout
    again = shadow("keygen", "-o", str(out))
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert read_key_file(out, "x") == key
    # `shadow keygen > FILE`: the shell made FILE 0644; it is 0600 before the key is in it
    redirected = tmp_path / "redirected.key"
    with open(redirected, "w") as f:
        os.chmod(redirected, 0o644)
        done = subprocess.run([sys.executable, "-m", "shadow", "keygen"], cwd=ROOT, stdout=f,
                              stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(redirected.stat().st_mode) == 0o600
    assert read_key_file(redirected, "x") != key


def test_a_credential_in_a_refused_value_is_masked_in_the_error() -> None:
    done = shadow("up", "--v1", "http://127.0.0.1:9", "--v2", "http://127.0.0.1:9",
                  "--redis", "redis+bogus://:cluster-pw-1d2e@127.0.0.1:7000")
    assert done.returncode == 2
    assert "redis+bogus://:***@127.0.0.1:7000" in done.stderr, done.stderr
    assert "cluster-pw-1d2e" not in done.stderr
