"""Run a real nginx (Debian's package) as our own child, on loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).parent.parent


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def shadow_front_conf(listen_port: int, proxy: str, v1: str) -> str:
    """nginx/shadow.conf, the file users deploy, pointed at this run's addresses."""
    conf = (REPO / "nginx" / "shadow.conf").read_text()
    conf = conf.replace("127.0.0.1:8080 max_fails", f"{proxy} max_fails")
    conf = conf.replace("server 127.0.0.1:8000 backup", f"server {v1} backup")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    assert proxy in conf and v1 in conf and str(listen_port) in conf
    return conf


class Nginx:
    def __init__(self, workdir: Path, server_blocks: str, worker_processes: int = 1) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(f"""
{user}
worker_processes {worker_processes};
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    default_type application/octet-stream;
    {server_blocks}
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *ports: int) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed: ./scripts/test installs Debian's nginx-light")
        self.process = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        for port in ports:
            wait_port(port, deadline - time.monotonic(), what="nginx", check=self._check_alive)
        return self

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise RuntimeError(f"nginx exited: {err}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()


def wait_port(port: int, timeout_s: float, *, what: str = "a server",
              check: Callable[[], None] | None = None) -> None:
    """Until something accepts on 127.0.0.1:port; `check()` may raise when its server died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}") from None
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
