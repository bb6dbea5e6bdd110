"""nginx in front (nginx/shadow.conf): when the proxy dies, clients are served by V1 directly."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from tests.nginxctl import Nginx, free_port, nginx_binary, shadow_front_conf
from tests.procs import reap, start_proxy_process

if nginx_binary() is None:
    if os.environ.get("CI"):
        raise RuntimeError("nginx is required in CI: ./scripts/test installs it")
    pytest.skip("nginx is not installed (./scripts/test installs Debian's nginx-light)",
                allow_module_level=True)


def v1_app(posts: Counter[str]) -> web.Application:
    async def get(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    async def post(request: web.Request) -> web.Response:
        body = await request.text()
        posts[body] += 1
        return web.json_response({"stored": body}, status=201)

    app = web.Application()
    app.router.add_get("/{tail:.*}", get)
    app.router.add_post("/{tail:.*}", post)
    return app


async def test_clients_never_see_the_proxy_die(http_server, redis_server, keys, tmp_path):
    posts: Counter[str] = Counter()
    v1 = await http_server(v1_app(posts))
    proxy_port, front_port = free_port(), free_port()
    proxy, _ = await start_proxy_process("--v1", v1, "--listen", f"127.0.0.1:{proxy_port}",
                                         "--redis", redis_server.url, "--stream-prefix",
                                         keys.prefix)
    nginx = Nginx(tmp_path / "nginx", shadow_front_conf(
        front_port, f"127.0.0.1:{proxy_port}", v1.removeprefix("http://"))).start(front_port)
    front = f"http://127.0.0.1:{front_port}"
    failures: list[str] = []
    served = 0
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as client:
            async def get_loop(worker: int) -> None:
                nonlocal served
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        async with client.get(f"{front}/w{worker}/{i}") as r:
                            body = await r.json()
                            if r.status != 200 or body["path"] != f"/w{worker}/{i}":
                                failures.append(f"GET {r.status}")
                    except aiohttp.ClientError as e:
                        failures.append(f"GET {e!r}")
                    served += 1

            loops = [asyncio.create_task(get_loop(w)) for w in range(8)]
            while served < 300:
                await asyncio.sleep(0.01)
            proxy.send_signal(signal.SIGKILL)  # the proxy dies mid-traffic
            await proxy.wait()
            target = served + 600
            while served < target:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*loops)
            assert failures == []

            # With the proxy gone, non-idempotent requests go to V1 directly, exactly once.
            for i in range(50):
                async with client.post(f"{front}/orders", data=f"order-{i}") as r:
                    assert r.status == 201
            assert all(posts[f"order-{i}"] == 1 for i in range(50))
    finally:
        nginx.stop()
        await reap(proxy)
