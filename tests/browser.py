"""A real headless Chromium (Debian's package, installed by ./scripts/test) driven over the
DevTools protocol: for testing the dashboard as a browser runs it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")


class Browser:
    """`async with Browser() as b: await b.open(url); await b.eval("1 + 1")`."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._profile = tempfile.mkdtemp(prefix="shadow-chromium-")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self.errors: list[str] = []  # uncaught page exceptions

    async def __aenter__(self) -> Browser:
        binary = chromium_binary()
        assert binary, "chromium is not installed: ./scripts/test installs Debian's chromium"
        self._proc = await asyncio.create_subprocess_exec(
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={self._profile}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self._proc.stderr is not None
        while True:
            line = (await asyncio.wait_for(self._proc.stderr.readline(), 60)).decode()
            assert line, "chromium exited at start"
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                break
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{m.group(1)}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self._call("Runtime.enable")
        await self._call("Page.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self._ws.receive_json(), 30)
            if msg.get("method") == "Runtime.exceptionThrown":
                self.errors.append(str(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                return msg.get("result", {})  # type: ignore[no-any-return]

    async def open(self, url: str) -> None:
        """Navigate and wait until the page (not the previous one) has loaded."""
        await self._call("Page.navigate", url=url)
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        deadline = asyncio.get_running_loop().time() + 30
        while not await self.eval(check):
            assert asyncio.get_running_loop().time() < deadline, f"{url} did not load"
            await asyncio.sleep(0.05)

    async def eval(self, expression: str) -> Any:
        result = await self._call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                  returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def viewport(self, width: int, height: int) -> None:
        """Lay the page out as a window of this size (CSS pixels) would."""
        await self._call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
        await self.eval("new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)))")

    async def screenshot(self, path: Path, selector: str | None = None) -> bytes:
        """A PNG of the page (or of the element `selector` finds, whole, even beyond the
        window), written to `path`."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = await self.eval(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                ".getBoundingClientRect(); return {x: r.left + scrollX, y: r.top + scrollY, "
                "width: r.width, height: r.height}; })()")
            params.update(clip={**box, "scale": 1}, captureBeyondViewport=True)
        png = base64.b64decode((await self._call("Page.captureScreenshot", **params))["data"])
        path.write_bytes(png)
        return png
