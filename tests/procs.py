"""Real `shadow` processes for tests: started, their addresses read from what they print."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from shadow.sealing import SecretKey

ROOT = Path(__file__).parent.parent
TEST_KEY = SecretKey.generate().to_text()  # one key for the session's services: they share it


def with_key(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a `shadow proxy` or `shadow subscriber` run alone: they need the
    secret key (`shadow up` makes its own), the same for both."""
    return {**(os.environ if env is None else env), "SHADOW_SECRET_KEY": TEST_KEY}


def shadow(*args: str) -> subprocess.CompletedProcess[str]:
    """`shadow ARGS` run to its end (60 s at most), its output captured as text."""
    return subprocess.run([sys.executable, "-m", "shadow", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


async def start_proxy_process(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    """`shadow proxy ARGS` as a child; returns it once it logged its port, and the port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "proxy", *args, cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        env=with_key())
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "proxy exited at start"
        m = re.search(r"proxy on port (\d+)", line)
        if m:
            return proc, int(m.group(1))


async def reap(proc: asyncio.subprocess.Process) -> None:
    """End of a test: a child that is still running is killed and waited for."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def start_up(*args: str, cwd: Path,
                   stderr: int = asyncio.subprocess.DEVNULL, env: dict[str, str] | None = None,
                   ) -> tuple[asyncio.subprocess.Process, str, str]:
    """`shadow up ARGS --listen/--api on ephemeral ports` as a child (in `env`, default ours);
    returns it once it said where it serves, with the proxy's and the reports API's URLs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "up", *args, "--listen", "127.0.0.1:0",
        "--api", "127.0.0.1:0", cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    proxy = re.search(r"send clients to (http://\S+)", line)
    api = re.search(r"--api (http://\S+)", line)
    if not (proxy and api):
        await reap(proc)
        raise AssertionError(f"`shadow up` did not say where it serves: {line!r}")
    return proc, proxy.group(1), api.group(1)
