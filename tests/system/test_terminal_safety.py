"""Traffic on a terminal: paths, headers, bodies and diffs from clients and servers are shown as
plain text by every `shadow` view (never Rich markup), with control characters made visible.

Real pipeline, real reports API, real `shadow` commands as child processes."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from comparer.api import HUB_KEY
from shadow import safetext
from tests.conftest import wait_for
from tests.pipeline import Pipeline
from tests.procs import reap

ROOT = Path(__file__).parent.parent.parent
ESC = "\x1b"
OSC8 = "\x1b]8;;http://evil\x1b\\"
MARKUP = "[link=http://evil]x[/link]"
# paths that Rich markup chokes on ([/] closes a tag that is not open) or turns into links
PATHS = ("/x[/]", "/p/[link=http://evil]x[/link]", "/q/[bold]b[/bold]")


def hostile_app(version: int) -> web.Application:
    """V1 and V2 differ, so every exchange is a mismatch whose diff carries hostile text."""

    async def any_path(request: web.Request) -> web.Response:
        body = {"path": request.path, "[/]": version, MARKUP: f"v{version}",
                "esc": f"{ESC}[31mred{ESC}[0m {OSC8}link{version}",
                "bidi": f"abc\u202edcba{version}", "c1": f"\x9b31m{version}",
                f"{ESC}[2Jkey": version}
        return web.json_response(body, headers={"X-Echo": f"[/] {MARKUP} v{version}"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    return app


def run_shadow(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shadow", *args], cwd=ROOT, capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


async def shadow(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(run_shadow, *args)


def assert_safe(done: subprocess.CompletedProcess[bytes], *literals: str, code: int = 0) -> str:
    out = done.stdout.decode()
    assert done.returncode == code, done.stderr.decode()[-3000:]
    assert "Traceback" not in done.stderr.decode()
    assert b"\x1b" not in done.stdout and b"\x1b" not in done.stderr
    for c in ("\x9b", "\u202e", "\x07"):
        assert c not in out
    for literal in literals:
        assert literal in out, (literal, out[-4000:])
    return out


@pytest.fixture
async def hostile_pipeline(http_server, settings_factory, tmp_path: Path):
    v1 = await http_server(hostile_app(1))
    v2 = await http_server(hostile_app(2))
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nroute = "/nothing/*"\nignore = ["$.x"]\n'
                     f'reason = "see [/] and {MARKUP}"\nowner = "[red]team[/red]"\n')
    async with Pipeline(settings_factory(v1=v1, v2=v2, rules=str(rules))) as p, \
            aiohttp.ClientSession() as client:
        for path in PATHS:
            # encoded=True: the brackets go over the wire as they are, as a client may send them
            async with client.get(URL(p.url + path, encoded=True),
                                  headers={"X-Request-Id": f"rid-{PATHS.index(path)}"}) as r:
                assert r.status == 200
                await r.read()

        async def settled() -> bool:
            outcomes = await p.store.outcomes()
            return outcomes.get("mismatch", 0) == len(PATHS)

        await wait_for(settled, 60, "the hostile traffic to be compared")
        yield p


async def test_every_view_prints_traffic_as_plain_text(hostile_pipeline: Pipeline) -> None:
    api = hostile_pipeline.api_url

    assert_safe(await shadow("report", "--api", api), "/x[/]", "/p/[link=http://evil]x[/link]")

    out = assert_safe(await shadow("mismatches", "--api", api), "/x[/]",
                      "/p/[link=http://evil]x[/link]", "/q/[bold]b[/bold]")
    assert "[/]" in out

    listed = json.loads((await shadow("mismatches", "--api", api, "--json")).stdout)["items"]
    assert len(listed) == len(PATHS)
    for x in listed:
        out = assert_safe(await shadow("show", x["id"], "--api", api),
                          "[/] [link=http://evil]x[/link] v1",  # V1's header value, literally
                          "\\u001b[31mred",  # the escape sequence in the body, made visible
                          "\\u001b]8;;http://evil",  # the hyperlink sequence, made visible
                          "abc\\u202edcba1", "\\u009b31m1", x["url"])
        assert MARKUP in out
    shown = assert_safe(await shadow("show", "rid-0", "--api", api), "/x[/]")
    assert "route /x[/]" in shown or "/x[/]" in shown

    assert_safe(await shadow("classes", "--api", api), "[/]", "\\u001b[2Jkey")
    assert_safe(await shadow("verdict", "--api", api, "--min-samples", "1"), "/x[/]",
                "NOT ready", code=1)
    assert_safe(await shadow("rules", "--api", api), "see [/] and [link=http://evil]x[/link]",
                "[red]team[/red]")

    for args in (("report",), ("mismatches",), ("show", "rid-1"), ("classes",), ("verdict",),
                 ("rules",)):  # --json: still valid JSON, and no raw control characters
        done = await shadow(*args, "--api", api, "--json")
        assert done.returncode == (1 if args == ("verdict",) else 0), done.stderr.decode()
        assert b"\x1b" not in done.stdout and "\u202e" not in done.stdout.decode()
        json.loads(done.stdout)
    shown_json = json.loads((await shadow("show", "rid-1", "--api", api, "--json")).stdout)
    assert shown_json["url"] == "/p/[link=http://evil]x[/link]"  # the data is unchanged


async def test_tail_prints_traffic_as_plain_text(hostile_pipeline: Pipeline) -> None:
    """`shadow tail` (lines) and `shadow tail --json` (one JSON object per line)."""
    p = hostile_pipeline
    tails = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadow", "tail", "--api", p.api_url, "--count", str(len(PATHS)),
        *extra, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for extra in ((), ("--json",))]
    try:
        assert tails[0].stderr is not None
        line = await asyncio.wait_for(tails[0].stderr.readline(), 60)
        assert b"following" in line, line
        hub = p.api.app[HUB_KEY]
        await wait_for(lambda: len(hub.listeners) == 2, 60, "both tails to follow")
        await asyncio.wait_for(hub.subscribed.wait(), 60)
        p.comparer.firehose._next_check = 0.0  # see the new listeners now, not in 2 s
        async with aiohttp.ClientSession() as client:
            for path in PATHS:
                async with client.get(URL(p.url + path, encoded=True)) as r:
                    await r.read()
        (out, err), (out_json, err_json) = [await asyncio.wait_for(t.communicate(), 60)
                                            for t in tails]
    finally:
        for t in tails:
            await reap(t)
    done = subprocess.CompletedProcess[bytes]([], tails[0].returncode or 0, out, err)
    assert_safe(done, "/x[/]", "/p/[link=http://evil]x[/link]")
    assert len(out.decode().splitlines()) == len(PATHS)
    done = subprocess.CompletedProcess[bytes]([], tails[1].returncode or 0, out_json, err_json)
    assert_safe(done, "\\u202e", "\\u009b")
    items = [json.loads(line) for line in out_json.decode().splitlines()]
    assert sorted(it["url"] for it in items) == sorted(PATHS)
    assert any("\u202e" in json.dumps(it, ensure_ascii=False) for it in items)  # data kept


def sample_exchange() -> dict[str, Any]:
    def part(v: int) -> dict[str, Any]:
        return {"status": 200, "latency_ms": 1.0, "error": f"[/]{ESC}[31m",
                "headers": [[f"X-{ESC}[1m", f"{OSC8}[/]"]],
                "body": {"text": f'{{"a": "{ESC}[31m\\u202e{v}"}}'}}
    return {"id": "e1", "request_id": f"[/]{ESC}", "method": "GET", "url": "/x[/]",
            "route": MARKUP, "ts": 0, "outcome": "mismatch", "signature": "[/]", "flags": ["[/]"],
            "v1": part(1), "v2": part(2), "noise": [{"path": f"$.{ESC}[/]"}],
            "diff": [{"path": f"$[{MARKUP!r}]", "kind": "changed", "v1": f"{ESC}]8;;x",
                      "v2": "[/]"}]}


def test_show_on_a_real_terminal_emits_no_traffic_escape_sequences() -> None:
    """On a colour terminal Rich writes its own styles; nothing from traffic may add more."""
    from rich.console import Console

    from shadow.cli.views import show_exchange

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="truecolor", width=200)
    show_exchange(sample_exchange(), console)
    out = buf.getvalue()
    assert "\x1b]8" not in out  # no hyperlink (OSC 8) at all
    assert "[/]" in out and "/x[/]" in out and MARKUP in out
    assert "\\u001b[31m" in out and "\\u202e" in out
    rest = re.sub(r"\x1b\[[0-9;]*m", "", out)  # Rich's own colours (SGR) are the only ones
    assert ESC not in rest, repr(rest[rest.index(ESC) - 20:rest.index(ESC) + 20])


@pytest.mark.parametrize("raw, shown", [
    ("plain /users/1", "plain /users/1"),
    ("a\x1b[31mb", "a\\u001b[31mb"),
    ("\x00\x07\x08\r\x7f", "\\u0000\\u0007\\u0008\\u000d\\u007f"),
    ("\x85\x9b\x9f", "\\u0085\\u009b\\u009f"),
    ("\u202eevil\u2066\u200f\u2028", "\\u202eevil\\u2066\\u200f\\u2028"),
    ("line\nnext\tcol", "line\\u000anext\\u0009col"),
    ("[/] [link=x]y[/link] é 日本 😀", "[/] [link=x]y[/link] é 日本 😀"),
])
def test_visible_escapes_control_characters_only(raw: str, shown: str) -> None:
    assert safetext.visible(raw) == shown
    assert safetext.visible(raw, multiline=True) == shown.replace("\\u000a", "\n") \
        .replace("\\u0009", "\t")


def test_visible_keeps_json_valid_and_equal() -> None:
    data = {"k\u202e": "\x7f\x9b\u2029 \x1b", "n": [1, "\u200e"]}
    text = json.dumps(data, ensure_ascii=False, indent=2)
    safe = safetext.visible(text, multiline=True)
    assert json.loads(safe) == data
    assert not any(ord(c) in (0x7f, 0x9b, 0x202e, 0x2029, 0x200e) for c in safe)
