"""Child processes: `shadow up` and `shadow proxy --workers N`.

`shadow up` runs Redis (embedded unless --redis) and the three services as child
processes. The supervisor binds the proxy's and the API's sockets itself and
hands them to the children, so clients can connect from the first moment, proxy
workers share one port, and a restarted child takes over the same port.
Children die with the supervisor (PR_SET_PDEATHSIG), run in their own session
(a terminal's Ctrl-C reaches the supervisor only, which stops them in order).
Children get their settings as flags, except those that can carry a credential (URLs with a
password, the API token, the key): those travel in their environment (settings.to_env), so
`ps` shows none. Without a configured key, `shadow up` makes <data-dir>/secret.key (0600)
on its first start and reuses it; its children get the file's path.

A child that exits is restarted, forever: half a second later the first time,
then after a delay that doubles while it keeps failing (up to 30 s; a run longer
than that starts the count again), so one broken part never stops the others,
and above all never the client-facing proxy. A child that is
alive but stuck (frozen, deadlocked) is found by its heartbeat: every `shadow`
child writes a byte to a pipe from its event loop every second; one silent for
--heartbeat-timeout-s is killed and restarted. Each restart is logged and
counted (shadow_child_restarts_total{role, reason}).
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead
from redis.exceptions import RedisError

from shadow import metrics
from shadow.aio import cancel_and_wait
from shadow.cli.embedded_redis import EmbeddedRedis, die_with_parent_hook
from shadow.credentials import mask_url
from shadow.errors import BusError, ShadowError, StoreError
from shadow.private import ensure_private_dir
from shadow.rules import load_rules_file
from shadow.secretkey import configured, data_dir_key, load_keyring
from shadow.settings import (
    Settings,
    available_cores,
    check_access,
    parse_hostport,
    replace,
    to_args,
    to_env,
)

log = logging.getLogger("shadow.up")
start_log = logging.getLogger("shadow.start")

FIRST_DELAY_S = 0.5  # before the first restart of a child that exited
MAX_DELAY_S = 30.0  # the delay doubles while it keeps failing, up to this
START_GRACE_S = 60.0  # a child's first heartbeat may come this late (imports on a busy machine)
_CHECK_EVERY_S = 1.0


def restart_delay(failures: int, first_s: float = FIRST_DELAY_S,
                  cap_s: float = MAX_DELAY_S) -> float:
    """Seconds to wait before restarting a child that failed `failures` times in a row."""
    return min(cap_s, first_s * 2 ** min(max(failures, 1) - 1, 32))


def beat_every(timeout_s: float) -> float:
    """How often a child beats: every second, or often enough for a small timeout."""
    return min(1.0, timeout_s / 4)


def overdue(now: float, started: float, last_beat: float | None, timeout_s: float,
            grace_s: float = START_GRACE_S) -> bool:
    """Whether a child has gone silent: no beat for `timeout_s`, or none at all since it
    started `max(timeout_s, grace_s)` ago (a start on a busy machine is slow, not stuck)."""
    if last_beat is None:
        return now - started > max(timeout_s, grace_s)
    return now - last_beat > timeout_s


class Heartbeat:
    """A child's side of the heartbeat: one byte to the supervisor's pipe per beat, written by
    a task of the event loop, so a frozen or blocked loop stops beating. Without a pipe (a
    service run on its own) it does nothing."""

    def __init__(self, fd: int | None, timeout_s: float) -> None:
        self.fd = fd
        self.every_s = beat_every(timeout_s)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.fd is not None and self._task is None:
            os.set_blocking(self.fd, False)
            self._task = asyncio.create_task(self._run(), name="shadow-heartbeat")

    async def _run(self) -> None:
        assert self.fd is not None
        while True:
            try:
                os.write(self.fd, b".")
            except BlockingIOError:
                pass  # the supervisor has not read for a while: it has beats enough
            except OSError:
                return  # the supervisor is gone; we get SIGTERM (PR_SET_PDEATHSIG)
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def __aenter__(self) -> Heartbeat:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


UNREACHABLE = (RedisError, OSError, StoreError, BusError)


async def keep_trying(what: str, start: Callable[[], Awaitable[None]],
                      undo: Callable[[], Awaitable[None]], *, first_s: float = FIRST_DELAY_S,
                      cap_s: float = MAX_DELAY_S) -> None:
    """Run `start` until it succeeds. When it fails because `what` (Redis, the store) cannot be
    reached, `undo` closes what it opened, and it is tried again later (the delay doubles,
    capped): a service started before its dependencies waits for them instead of exiting,
    and is never left half-started. Any other error propagates (after `undo`)."""
    failures = 0
    while True:
        try:
            await start()
            if failures:
                start_log.info("%s reachable again; started", what)
            return
        except UNREACHABLE as e:
            failures += 1
            await undo()
            delay = restart_delay(failures, first_s, cap_s)
            start_log.warning("%s unreachable; retrying in %.1f s (%s)", what, delay,
                              mask_url(str(e)) or type(e).__name__)
            await asyncio.sleep(delay)
        except BaseException:
            await undo()
            raise


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
    role: str  # the `shadow` subcommand (or a name for `program`)
    args: list[str]
    fds: tuple[int, ...] = ()
    program: list[str] | None = None  # another command than `shadow <role> ARGS` (Redis)
    heartbeat: bool = True  # it takes --heartbeat-fd and beats (every `shadow` child)
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    last_beat: float | None = None
    beat_fd: int | None = None  # our end of its heartbeat pipe
    failures: int = 0  # short runs in a row: the restart delay doubles with each
    restarts: int = 0


class Children:
    """Start `shadow <role>` processes, restart the ones that exit or hang, stop them in order.

    `start` may be called more than once: what started later may depend on what started
    earlier (the services on Redis), so `stop` stops the last batch first."""

    def __init__(self, env: dict[str, str] | None = None, *,
                 metrics_dir: Path | None = None, heartbeat_timeout_s: float = 30.0,
                 max_delay_s: float = MAX_DELAY_S) -> None:
        self.env = env
        self.metrics_dir = metrics_dir
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_delay_s = max_delay_s
        if metrics_dir is not None:  # every child writes its metrics there; one /metrics sums
            metrics_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for old in metrics_dir.glob("*.db"):
                old.unlink()  # a new run starts from zero, as a restarted exporter would
            self.env = {**(env if env is not None else os.environ),
                        metrics.MULTIPROC_ENV: str(metrics_dir)}
            metrics.write_to(str(metrics_dir))  # our restart counts are summed there too
        self.batches: list[list[Child]] = []
        self._keepers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def children(self) -> list[Child]:
        return [c for batch in self.batches for c in batch]

    async def start(self, children: list[Child]) -> None:
        self.batches.append(children)
        for child in children:
            await self._spawn(child)
            self._keepers.append(asyncio.create_task(self._keep(child),
                                                     name=f"shadow-keep-{child.role}"))

    async def _spawn(self, child: Child) -> None:
        args, fds, ours, theirs = child.args, child.fds, None, None
        if child.heartbeat:
            ours, theirs = os.pipe()
            os.set_blocking(ours, False)
            args, fds = [*args, "--heartbeat-fd", str(theirs)], (*fds, theirs)
        try:
            command = child.program or [sys.executable, "-m", "shadow", child.role, *args]
            child.process = await asyncio.create_subprocess_exec(
                *command, pass_fds=fds, stdin=asyncio.subprocess.DEVNULL, env=self.env,
                preexec_fn=die_with_parent_hook(), start_new_session=True,
            )
        except BaseException:
            if ours is not None:
                os.close(ours)
            raise
        finally:
            if theirs is not None:
                os.close(theirs)
        child.beat_fd, child.started, child.last_beat = ours, time.monotonic(), None
        log.info("%s started (pid %d)", child.role, child.process.pid)

    async def _keep(self, child: Child) -> None:
        """Restart `child` whenever it ends, for as long as we run."""
        while True:
            reason = await self._until_gone(child) if child.process is not None else "spawn_failed"
            ran_s = time.monotonic() - child.started
            self._forget(child)
            child.failures = 1 if ran_s >= self.max_delay_s else child.failures + 1
            delay = restart_delay(child.failures, cap_s=self.max_delay_s)
            child.restarts += 1
            metrics.CHILD_RESTARTS.labels(child.role, reason).inc()
            code = child.process.returncode if child.process is not None else None
            log.warning("%s %s (code %s); restarting it in %.1f s (restart %d)", child.role,
                        "exited" if reason == "exited" else reason.replace("_", " "),
                        code, delay, child.restarts)
            await asyncio.sleep(delay)
            try:
                await self._spawn(child)
            except OSError as e:
                log.error("%s could not be started: %s", child.role, e)
                child.process, child.started = None, time.monotonic()

    async def _until_gone(self, child: Child) -> str:
        """Wait until the child exits ("exited"), or kill it when its heartbeat stops."""
        proc = child.process
        assert proc is not None
        wait = asyncio.ensure_future(proc.wait())
        try:
            while not (await asyncio.wait({wait}, timeout=_CHECK_EVERY_S))[0]:
                now = time.monotonic()
                self._read_beats(child, now)
                if child.heartbeat and overdue(now, child.started, child.last_beat,
                                               self.heartbeat_timeout_s):
                    log.error("%s (pid %d) sent no heartbeat for %.0f s: frozen or stuck; "
                              "killing it", child.role, proc.pid, now - (child.last_beat or
                                                                        child.started))
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()  # SIGKILL ends a stopped (SIGSTOP) process too
                    await wait
                    return "unresponsive"
            return "exited"
        finally:
            wait.cancel()

    @staticmethod
    def _read_beats(child: Child, now: float) -> None:
        """Any byte in the pipe since the last look is a beat (read only when we look: beats
        that waited while we were busy still count, so a slow supervisor kills no one)."""
        if child.beat_fd is None:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            if os.read(child.beat_fd, 65536):
                child.last_beat = now

    def _forget(self, child: Child) -> None:
        """A child has ended: close its heartbeat pipe; its live gauges stop counting."""
        if child.beat_fd is not None:
            os.close(child.beat_fd)
            child.beat_fd = None
        if self.metrics_dir is not None and child.process is not None:
            # its counters still count; its live gauges (queue depth) no longer do
            mark_process_dead(child.process.pid, str(self.metrics_dir))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM each child and wait for it (SIGKILL after the timeout): the last batch first,
        each batch in start order."""
        if self._stopping:
            return
        self._stopping = True
        for task in self._keepers:
            await cancel_and_wait(task)
        for batch in reversed(self.batches):
            for child in batch:
                await self._stop_one(child, timeout_s)
                self._forget(child)

    @staticmethod
    async def _stop_one(child: Child, timeout_s: float) -> None:
        proc = child.process
        if proc is None or proc.returncode is not None:
            return
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
        key_given = configured(settings)
        if key_given:
            load_keyring(settings)  # a bad key (file) stops `up` before anything is created
        ensure_private_dir(settings.data_dir)  # 0700, and what an older version left private
        if not key_given:  # the data folder's key, made on the first start, reused after
            settings = replace(settings, secret_key_file=str(data_dir_key(settings.data_dir)))
            load_keyring(settings)
        self.settings = settings
        self.redis: EmbeddedRedis | None = None
        # credentials (URLs with passwords, the token, the key) travel to the children in their
        # environment, never on a command line `ps` shows
        env = {**os.environ, **to_env(settings)}
        self.group = Children(env, metrics_dir=Path(settings.data_dir) / "metrics",
                              heartbeat_timeout_s=settings.heartbeat_timeout_s)
        self._sockets: list[socket.socket] = []
        self.proxy_address = ""
        self.api_address = ""

    async def start(self) -> None:
        """Start everything, or raise: then call stop(), which ends what did start."""
        s = self.settings
        if s.redis is None:
            # supervised like the services: restarted on the same socket and data dir if it dies
            self.redis = EmbeddedRedis(Path(s.data_dir) / "redis")
            server = Child("redis", [], program=self.redis.command(), heartbeat=False)
            await self.group.start([server])
            first = server.process
            assert first is not None
            await self.redis.wait_ready(lambda: first.returncode is None)
            s = replace(s, redis=self.redis.url)
            log.info("embedded Redis at %s (data in %s)", self.redis.url, self.redis.data_dir)
        self.group.env = {**(self.group.env or os.environ), **to_env(s)}
        listen = bind(s.listen, "--listen")
        api = bind(s.api, "--api")
        self._sockets = [listen, api]
        self.proxy_address = address(listen)
        self.api_address = address(api)
        common = to_args(s, skip=("listen", "api", "consumer", "workers", "metrics_listen"))
        # Stable consumer names: a restarted child re-reads its own pending entries at once.
        name = f"{socket.gethostname()}-up{os.getpid()}"
        proxy_args = [*common, "--listen", self.proxy_address, "--listen-fd", str(listen.fileno())]
        await self.group.start([
            *(Child("proxy", proxy_args, (listen.fileno(),))
              for _ in range(s.workers or available_cores())),
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
            self.redis.cleanup()
            self.redis = None
