"""Supervision, on real processes: `shadow up` (and `shadow proxy --workers N`) never stops the
client-facing proxy because another part fails. A child that keeps dying is restarted forever
(with backoff), the embedded Redis is restarted if it dies, a frozen child is found by its
heartbeat and restarted, every restart is counted in /metrics, and a service started before
Redis waits for it instead of exiting or hanging half-started."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from shadow.cli import demo_apps
from shadow.cli.embedded_redis import EmbeddedRedis, free_port
from shadow.cli.supervisor import overdue, restart_delay
from tests.conftest import wait_for
from tests.procs import ROOT, reap, start_proxy_process, start_up
from tests.system.test_cli import metric


class Lines:
    """Every line a child writes to stderr, collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        self._task = asyncio.create_task(self._read(proc), name="stderr-lines")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            self.lines.append(raw.decode(errors="replace"))

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def seen(self, text: str) -> bool:
        return self.count(text) > 0

    async def close(self) -> None:
        await self._task


def _role(p: psutil.Process) -> str | None:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return None
    if cmd and "redis-server" in cmd[0]:  # it rewrites its title: "redis-server unixsocket:..."
        return "redis"
    return cmd[3] if cmd[1:3] == ["-m", "shadow"] and len(cmd) > 3 else None


async def running(up: asyncio.subprocess.Process, role: str,
                  not_in: set[int] = frozenset()) -> psutil.Process:  # type: ignore[assignment]
    """The child of `up` that plays `role` and is none of `not_in` (waits for it to appear)."""
    found: list[psutil.Process] = []

    def look() -> bool:
        assert up.returncode is None, f"the supervisor exited (code {up.returncode})"
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(up.pid).children():
                if child.pid not in not_in and _role(child) == role and \
                        child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
                    return True
        return False

    await wait_for(look, 90, f"a running {role} child")
    return found[0]


@contextlib.contextmanager
def resumed_at_end(*procs: psutil.Process) -> Iterator[None]:
    """A process a test stopped (SIGSTOP) is continued at the end, whatever happened."""
    try:
        yield
    finally:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.resume()


async def summary(client: aiohttp.ClientSession, api: str) -> dict[str, Any]:
    async with client.get(f"{api}/api/summary") as r:
        return await r.json()  # type: ignore[no-any-return]


async def compared_at_least(client: aiohttp.ClientSession, api: str, n: int) -> bool:
    try:
        return int((await summary(client, api))["compared"]) >= n
    except (aiohttp.ClientError, KeyError, ValueError):
        return False  # the comparer is being restarted


async def restarts(client: aiohttp.ClientSession, url: str, role: str, reason: str) -> float:
    async with client.get(url) as r:
        text = await r.text()
    try:
        return metric(text, f'shadow_child_restarts_total{{reason="{reason}",role="{role}"}}')
    except AssertionError:
        return 0.0


async def get_ok(client: aiohttp.ClientSession, url: str) -> None:
    async with client.get(url) as r:
        assert r.status == 200, (url, r.status)
        await r.read()


async def up(http_server: Any, tmp_path: Path, *extra: str,
             ) -> tuple[asyncio.subprocess.Process, str, str, Lines]:
    v1 = await http_server(demo_apps.build(1))
    v2 = await http_server(demo_apps.build(1))
    proc, proxy, api = await start_up(
        "--v1", v1, "--v2", v2, "--data-dir", str(tmp_path / "data"),
        "--store", f"sqlite:///{tmp_path / 'shadow.db'}", *extra, cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE)
    return proc, proxy, api, Lines(proc)


def test_restart_delay_doubles_up_to_a_cap_and_silence_needs_a_first_beat() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(7) == restart_delay(10_000) == 30.0
    # a child that never beat yet gets the start grace, one that beat gets the timeout
    assert not overdue(now=50.0, started=0.0, last_beat=None, timeout_s=5.0, grace_s=60.0)
    assert overdue(now=61.0, started=0.0, last_beat=None, timeout_s=5.0, grace_s=60.0)
    assert overdue(now=61.0, started=0.0, last_beat=55.0, timeout_s=5.0)
    assert not overdue(now=59.0, started=0.0, last_beat=55.0, timeout_s=5.0)


async def test_a_child_killed_again_and_again_is_restarted_forever_and_clients_are_served(
        http_server, tmp_path: Path) -> None:
    """Before: the supervisor gave up after 5 restarts in 60 s and stopped everything,
    the proxy included; every client was refused from then on."""
    proc, proxy, api, lines = await up(http_server, tmp_path)
    try:
        async with aiohttp.ClientSession() as client:
            killed: set[int] = set()
            for i in range(1, 7):
                sub = await running(proc, "subscriber", killed)
                sub.kill()
                killed.add(sub.pid)
                await get_ok(client, f"{proxy}/users/{i}")  # the proxy serves throughout
            await running(proc, "subscriber", killed)  # the seventh one
            for i in range(7, 11):
                await get_ok(client, f"{proxy}/users/{i}")
            # nothing was lost: what came while no subscriber ran is replayed by the next one
            await wait_for(lambda: compared_at_least(client, api, 10), 90, "10 compared")
            assert await restarts(client, f"{api}/metrics", "subscriber", "exited") == 6
        assert lines.count("subscriber exited") == 6
        assert proc.returncode is None
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await reap(proc)
        await lines.close()


async def test_a_subscriber_started_while_redis_is_frozen_waits_for_it(http_server,
                                                                       tmp_path: Path) -> None:
    """The issue's scenario: Redis frozen (SIGSTOP), the subscriber killed once. Before, the
    new subscriber exited at every start, the supervisor gave up and stopped the proxy. Now
    it waits for Redis (saying so), clients are served all along, and it works once Redis
    is back."""
    proc, proxy, api, lines = await up(http_server, tmp_path)
    try:
        redis = await running(proc, "redis")
        first = await running(proc, "subscriber")
        async with aiohttp.ClientSession() as client:
            with resumed_at_end(redis):
                redis.suspend()
                first.kill()
                await wait_for(lambda: lines.count("unreachable; retrying") >= 3, 90,
                               "the new subscriber to retry Redis")
                for i in range(1, 6):
                    await get_ok(client, f"{proxy}/users/{i}")  # events dropped, clients served
                second = await running(proc, "subscriber", {first.pid})
                redis.resume()
            await wait_for(lambda: lines.count("reachable again; started") >= 1, 90,
                           "the subscriber to start once Redis is back")
            for i in range(6, 11):
                await get_ok(client, f"{proxy}/users/{i}")
            await wait_for(lambda: compared_at_least(client, api, 5), 90, "5 compared")
            # it waited: restarted once (our kill), never because it exited at start
            assert await restarts(client, f"{api}/metrics", "subscriber", "exited") == 1
            assert await running(proc, "subscriber") == second
    finally:
        await reap(proc)
        await lines.close()


async def test_a_killed_embedded_redis_is_restarted_and_traffic_is_compared_again(
        http_server, tmp_path: Path) -> None:
    proc, proxy, api, lines = await up(http_server, tmp_path)
    try:
        async with aiohttp.ClientSession() as client:
            for i in range(1, 6):
                await get_ok(client, f"{proxy}/users/{i}")
            await wait_for(lambda: compared_at_least(client, api, 5), 90, "5 compared")
            redis = await running(proc, "redis")
            redis.kill()
            # the services keep their Redis URL: comparisons resume only if the new server
            # listens where the old one did
            await running(proc, "redis", {redis.pid})
            for i in range(6, 11):
                await get_ok(client, f"{proxy}/users/{i}")
            # the publisher drops events while Redis is away: send until some get through
            sent = 10

            async def more_compared() -> bool:
                nonlocal sent
                sent += 1
                await get_ok(client, f"{proxy}/users/{sent}")
                await asyncio.sleep(0.1)
                return await compared_at_least(client, api, 6)

            await wait_for(more_compared, 90, "comparisons after Redis came back")
            assert await restarts(client, f"{api}/metrics", "redis", "exited") == 1
    finally:
        await reap(proc)
        await lines.close()


async def test_a_frozen_child_is_found_by_its_heartbeat_and_restarted(http_server,
                                                                      tmp_path: Path) -> None:
    """Before, a stopped or stuck child stayed stuck for ever: no comparisons, no restart."""
    proc, proxy, api, lines = await up(http_server, tmp_path, "--heartbeat-timeout-s", "10")
    try:
        async with aiohttp.ClientSession() as client:
            await get_ok(client, f"{proxy}/users/1")
            await wait_for(lambda: compared_at_least(client, api, 1), 90, "1 compared")
            comparer = await running(proc, "comparer")
            with resumed_at_end(comparer):
                comparer.suspend()
                await running(proc, "comparer", {comparer.pid})
            for i in range(2, 6):
                await get_ok(client, f"{proxy}/users/{i}")
            await wait_for(lambda: compared_at_least(client, api, 5), 90, "5 compared")
            assert await restarts(client, f"{api}/metrics", "comparer", "unresponsive") >= 1
        assert lines.count(f"comparer (pid {comparer.pid}) sent no heartbeat") == 1
        assert not comparer.is_running() or comparer.status() == psutil.STATUS_ZOMBIE
    finally:
        await reap(proc)
        await lines.close()


async def test_proxy_workers_are_restarted_forever(http_server, redis_server, keys) -> None:
    """`shadow proxy --workers 2`: before, 6 exits of a worker in a minute stopped the whole
    proxy; now the other worker serves meanwhile and the dead one always comes back."""
    v1 = await http_server(demo_apps.build(1))
    metrics_port = free_port()
    proc, port = await start_proxy_process(
        "--v1", v1, "--listen", "127.0.0.1:0", "--workers", "2", "--redis", redis_server.url,
        "--stream-prefix", keys.prefix, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    drain = asyncio.create_task(_drain(proc))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as c:
            killed: set[int] = set()
            workers: list[psutil.Process] = []

            def two_workers() -> bool:
                assert proc.returncode is None, f"the proxy exited (code {proc.returncode})"
                workers[:] = [w for w in psutil.Process(proc.pid).children()
                              if w.pid not in killed and w.status() != psutil.STATUS_ZOMBIE]
                return len(workers) == 2

            for i in range(1, 7):
                await wait_for(two_workers, 90, "two workers")
                youngest = max(workers, key=lambda w: w.create_time())  # the same slot each time
                youngest.kill()
                killed.add(youngest.pid)
                await get_ok(c, f"http://127.0.0.1:{port}/users/{i}")  # the other one serves
            await wait_for(two_workers, 90, "two workers again")
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            assert await restarts(c, url, "proxy", "exited") == 6
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await reap(proc)
        await drain


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    async for _ in proc.stderr:
        pass


async def test_a_service_started_before_redis_waits_for_it_then_works(tmp_path: Path) -> None:
    """Before, a comparer started while Redis was down failed its start with the store's
    thread still open: it neither worked nor exited, for ever."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "comparer", "--redis", f"redis://127.0.0.1:{port}/0",
        "--store", f"sqlite:///{tmp_path / 'shadow.db'}", "--api", "127.0.0.1:0", cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    lines = Lines(proc)
    server: EmbeddedRedis | None = None
    try:
        await wait_for(lambda: lines.seen(f"Redis at redis://127.0.0.1:{port}/0 unreachable; "
                                          "retrying") or proc.returncode is not None, 90,
                       "the comparer to wait for Redis")
        assert proc.returncode is None, "".join(lines.lines)
        server = EmbeddedRedis(tmp_path / "redis", tcp_port=port, appendonly=False)
        await asyncio.to_thread(server.start)
        await wait_for(lambda: lines.seen("comparer storing to") or proc.returncode is not None,
                       90, "the comparer to start")
        assert proc.returncode is None, "".join(lines.lines)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await reap(proc)
        await lines.close()
        if server is not None:
            server.stop()
