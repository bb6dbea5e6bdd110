"""`shadow up --log-format json`: every line any of its processes writes to stderr is one JSON
object with the time in UTC, the level, the component and the message, plus the exchange's
ids on per-exchange lines."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import socket
from pathlib import Path

import aiohttp

from tests.conftest import wait_for
from tests.procs import reap, start_up


async def test_every_stderr_line_of_shadow_up_is_a_json_object(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: V1 and V2 refuse connections
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proc, proxy, _ = await start_up(
        "--v1", dead, "--v2", dead, "--data-dir", str(tmp_path / "data"), "--workers", "1",
        "--store", f"sqlite:///{tmp_path / 'shadow.db'}", "--log-format", "json",
        cwd=tmp_path, stderr=asyncio.subprocess.PIPE)
    lines: list[bytes] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            lines.append(line)

    reader = asyncio.create_task(read(), name="stderr")
    try:
        async with aiohttp.ClientSession() as client, \
                client.get(f"{proxy}/users/1", headers={"X-Request-Id": "json-log-1"}) as r:
            assert r.status == 502  # V1 refused: the proxy logs it, with the request id
        await wait_for(lambda: any(b"json-log-1" in line for line in lines), 60,
                       "the proxy's line about request json-log-1")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await asyncio.wait_for(reader, 30)
    finally:
        await reap(proc)
        closed.close()
    assert len(lines) >= 3
    docs = []
    for line in lines:
        doc = json.loads(line)  # every line, of every process
        assert isinstance(doc, dict), line
        assert {"time", "level", "component", "message"} <= doc.keys(), line
        when = datetime.datetime.fromisoformat(doc["time"])
        assert when.utcoffset() == datetime.timedelta(0) and doc["time"].endswith("Z"), line
        assert doc["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        docs.append(doc)
    (about,) = [d for d in docs if "json-log-1" in d["message"]]
    assert about["component"] == "shadow.proxy" and about["request_id"] == "json-log-1"
    assert about["level"] == "WARNING" and "V1 unreachable" in about["message"]
    components = {d["component"] for d in docs}  # the supervisor's and a proxy's at least
    assert "shadow.proxy" in components and len({d["pid"] for d in docs}) >= 2, components
