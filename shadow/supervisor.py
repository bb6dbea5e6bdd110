"""Child processes: `shadow up` and `shadow proxy --workers N`.

`shadow up` runs Redis (embedded unless --redis) and the three services as child
processes. The supervisor binds the proxy's and the API's sockets itself and
hands them to the children, so clients can connect from the first moment, proxy
workers share one port, and a restarted child takes over the same port.
Children die with the supervisor (PR_SET_PDEATHSIG), run in their own session
(a terminal's Ctrl-C reaches the supervisor only, which stops them in order),
and a child that crashes is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from shadow import metrics
from shadow.embedded_redis import EmbeddedRedis, die_with_parent_hook
from shadow.errors import ShadowError
from shadow.rules import load_rules_file
from shadow.settings import Settings, check_access, parse_hostport, replace, to_args

log = logging.getLogger("shadow.up")

_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 60.0


def bind(hostport: str, what: str) -> socket.socket:
    host, port = parse_hostport(hostport, what)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048, reuse_port=True)
    except OSError as e:
        raise ShadowError(f"{what}: cannot listen on {hostport}: {e.strerror or e}; "
                          f"pick another with {what} HOST:PORT") from e
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Child:
    role: str  # the `shadow` subcommand
    args: list[str]
    fds: tuple[int, ...] = ()
    process: asyncio.subprocess.Process | None = None
    restarts: list[float] = field(default_factory=list)


class Children:
    """Start `shadow <role>` processes, restart the ones that crash, stop them in order."""

    def __init__(self, env: dict[str, str] | None = None, *,
                 metrics_dir: Path | None = None) -> None:
        self.env = env
        self.metrics_dir = metrics_dir
        if metrics_dir is not None:  # every child writes its metrics there; one /metrics sums
            metrics_dir.mkdir(parents=True, exist_ok=True)
            for old in metrics_dir.glob("*.db"):
                old.unlink()  # a new run starts from zero, as a restarted exporter would
            self.env = {**(env if env is not None else os.environ),
                        metrics.MULTIPROC_ENV: str(metrics_dir)}
        self.children: list[Child] = []
        self.failed = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, children: list[Child]) -> None:
        self.children = children
        for child in children:
            await self._spawn(child)
        self._monitor = asyncio.create_task(self._watch(), name="shadow-children")

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shadow", child.role, *child.args, pass_fds=child.fds,
            stdin=asyncio.subprocess.DEVNULL, env=self.env, preexec_fn=die_with_parent_hook(),
            start_new_session=True,
        )
        log.info("%s started (pid %d)", child.role, child.process.pid)

    async def _watch(self) -> None:
        waits = {asyncio.create_task(c.process.wait(), name=f"wait-{c.role}"): c  # type: ignore[union-attr]
                 for c in self.children}
        while waits and not self._stopping:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                child = waits.pop(task)
                if self._stopping:
                    return
                code = task.result()
                if self.metrics_dir is not None and child.process is not None:
                    # its counters still count; its live gauges (queue depth) no longer do
                    mark_process_dead(child.process.pid, str(self.metrics_dir))
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < _RESTART_WINDOW_S]
                if len(child.restarts) >= _MAX_RESTARTS:
                    log.error("%s keeps exiting (code %s); giving up", child.role, code)
                    self.failed.set()
                    return
                child.restarts.append(now)
                log.warning("%s exited with code %s; restarting it", child.role, code)
                await asyncio.sleep(0.5)
                if self._stopping:
                    return
                await self._spawn(child)
                waits[asyncio.create_task(child.process.wait(),  # type: ignore[union-attr]
                                          name=f"wait-{child.role}")] = child

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM each child in start order and wait for it (SIGKILL after the timeout)."""
        if self._stopping:
            return
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for child in self.children:
            proc = child.process
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                log.warning("%s did not stop in %.0f s; killing it", child.role, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


class Supervisor:
    """Everything `shadow up` runs: Redis, proxy worker(s), subscriber, comparer."""

    def __init__(self, settings: Settings) -> None:
        settings.require("v1", "v2")
        check_access(settings)
        load_rules_file(settings.rules)  # a bad rules file stops `up` before anything starts
        self.settings = settings
        self.redis: EmbeddedRedis | None = None
        env = dict(os.environ)  # the token travels in the environment, never on a command line
        if settings.api_token:
            env["SHADOW_API_TOKEN"] = settings.api_token
        self.group = Children(env, metrics_dir=Path(settings.data_dir) / "metrics")
        self.failed = self.group.failed
        self._sockets: list[socket.socket] = []
        self.proxy_address = ""
        self.api_address = ""

    async def start(self) -> None:
        s = self.settings
        if s.redis is None:
            self.redis = EmbeddedRedis(Path(s.data_dir) / "redis")
            await asyncio.to_thread(self.redis.start)
            s = replace(s, redis=self.redis.url)
            log.info("embedded Redis at %s (data in %s)", self.redis.url, self.redis.data_dir)
        listen = bind(s.listen, "--listen")
        api = bind(s.api, "--api")
        self._sockets = [listen, api]
        self.proxy_address = address(listen)
        self.api_address = address(api)
        common = to_args(s, skip=("listen", "api", "api_token", "consumer", "workers",
                                  "metrics_listen"))
        # Stable consumer names: a restarted child re-reads its own pending entries at once.
        name = f"{socket.gethostname()}-up{os.getpid()}"
        proxy_args = [*common, "--listen", self.proxy_address, "--listen-fd", str(listen.fileno())]
        await self.group.start([
            *(Child("proxy", proxy_args, (listen.fileno(),)) for _ in range(s.workers)),
            Child("subscriber", [*common, "--consumer", f"subscriber-{name}"]),
            Child("comparer", [*common, "--consumer", f"comparer-{name}", "--api",
                               self.api_address, "--api-fd", str(api.fileno())], (api.fileno(),)),
        ])

    def reload_rules(self) -> None:
        """SIGHUP: the comparer reads --rules again (a bad file leaves the old rules)."""
        for child in self.group.children:
            if child.role == "comparer" and child.process is not None and \
                    child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGHUP)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Proxies first (no new events), then subscriber and comparer, then Redis. Idempotent."""
        await self.group.stop(timeout_s)
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
            self.redis = None
