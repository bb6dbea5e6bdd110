"""Real `shadow proxy` processes for tests: started, and their port read from the log."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


async def start_proxy_process(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    """`shadow proxy ARGS` as a child; returns it once it logged its port, and the port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "proxy", *args, cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "proxy exited at start"
        m = re.search(r"proxy on port (\d+)", line)
        if m:
            return proc, int(m.group(1))
