"""Secrets never rest in clear: canaries sent through `shadow up` appear in no byte shadow
wrote or served (Redis's files, the store, logs, the reports API, the firehose), while V2
still got the real credentials (#11)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import urllib.parse
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.conftest import wait_for
from tests.procs import reap, start_up

AUTH = "Bearer CanaryAuthQ7Zk2Wd9Xp4Lm8Rt"
COOKIE_SECRET = "CanaryCookieH3Jv6Bn1Yc5Ks0"
API_KEY = "CanaryApiKeyT8Gf2Qw6Ez4Ua9"
PASSWORD = "CanaryPasswordN5Dx7Vm3Pb1"
CARD = "4111 1111 1111 1111"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjYW5hcnktand0LXN1YmplY3QifQ."
       "c2lnbmF0dXJlLWNhbmFyeS1qd3Qtc2lnbmF0dXJl")
LOCATION_TOKEN = "CanaryLocationR2Hs8Kq4Wn6"
SET_COOKIE_SECRET = "CanarySetCookieM9Lp3Zx7Cv1"
EMAIL = "canary.person@example.org"

CANARIES = {
    "authorization": AUTH.split(" ", 1)[1], "cookie": COOKIE_SECRET, "api_key": API_KEY,
    "password": PASSWORD, "card": CARD.replace(" ", ""), "card spaced": CARD,
    "jwt": JWT.split(".")[1], "location token": LOCATION_TOKEN, "set-cookie": SET_COOKIE_SECRET,
    "email": EMAIL,
}


def forms(secret: str) -> list[bytes]:
    """How a secret may be written down: as is, JSON- or URL-escaped, or inside base64 at
    any alignment (bodies travel and rest base64-encoded)."""
    raw = secret.encode()
    out = {raw, urllib.parse.quote(secret).encode(), urllib.parse.quote_plus(secret).encode(),
           json.dumps(secret)[1:-1].encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        out.add(encoded[4 * ((shift + 2) // 3) + 4:-4])  # the part that depends on the secret only
    return sorted(x for x in out if len(x) >= 8)


def leaks(data: bytes) -> list[str]:
    return [name for name, secret in CANARIES.items() if any(f in data for f in forms(secret))]


async def test_canaries_are_nowhere_shadow_writes_and_v2_gets_the_real_credentials(
        http_server, tmp_path: Path) -> None:
    seen_by_v2: list[dict[str, str]] = []

    def app(name: str) -> web.Application:
        async def login(request: web.Request) -> web.Response:
            body = await request.json()
            if name == "v2":
                seen_by_v2.append({"authorization": request.headers.get("Authorization", ""),
                                   "cookie": request.headers.get("Cookie", ""),
                                   "api_key": request.query.get("api_key", ""),
                                   "password": body.get("password", "")})
            resp = web.json_response({"ok": True, "user": {"email": EMAIL, "card": CARD,
                                                            "session_token": JWT},
                                      "side": "same"},
                                     status=201)
            resp.headers["Location"] = f"https://example.com/next?token={LOCATION_TOKEN}"
            resp.headers["Set-Cookie"] = f"sid={SET_COOKIE_SECRET}; HttpOnly"
            return resp

        a = web.Application()
        a.router.add_post("/login", login)
        return a

    v1, v2 = await http_server(app("v1")), await http_server(app("v2"))
    data_dir, store = tmp_path / "data", tmp_path / "store" / "shadow.db"
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log_file:
        proc, proxy, api = await start_up(
            "--v1", v1, "--v2", v2, "--data-dir", str(data_dir), "--store", f"sqlite:///{store}",
            "--allow-side-effects", "--log-level", "debug", cwd=tmp_path, stderr=log_file.fileno())
        served = b""
        try:
            async with aiohttp.ClientSession() as client:
                firehose: list[bytes] = []
                reader = asyncio.create_task(_read_firehose(client, api, firehose))
                sent = 0

                async def send() -> None:
                    nonlocal sent
                    async with client.post(
                            f"{proxy}/login?api_key={API_KEY}&n={sent}",
                            json={"user": "ann", "password": PASSWORD, "card": CARD,
                                  "note": f"my card is {CARD}", "jwt": JWT},
                            headers={"Authorization": AUTH,
                                     "Cookie": f"theme=dark; session={COOKIE_SECRET}"}) as r:
                        assert r.status == 201
                        assert r.headers["Set-Cookie"].startswith(f"sid={SET_COOKIE_SECRET}")
                    sent += 1

                async def compared() -> bool:
                    async with client.get(f"{api}/api/summary") as r:
                        return (await r.json()).get("compared") == sent

                for _ in range(5):
                    await send()
                await wait_for(compared, 60, "5 compared exchanges")

                async def firehose_spoke() -> bool:  # it may have subscribed after the first ones
                    if any(line.startswith(b"data:") for line in firehose):
                        return True
                    await send()
                    await wait_for(compared, 60, f"{sent} compared exchanges")
                    return False

                await wait_for(firehose_spoke, 60, "an item on the firehose")
                reader.cancel()
                served += b"".join(firehose)
                for path in ("/api/summary", "/api/routes", "/api/classes", "/api/mismatches",
                             "/api/verdict"):
                    async with client.get(api + path) as r:
                        served += await r.read()
                async with client.get(f"{api}/api/mismatches?outcome=match&limit=5") as r:
                    ids = [x["id"] for x in (await r.json())["items"]]
                assert ids
                for ident in ids:
                    async with client.get(f"{api}/api/exchanges/{ident}") as r:
                        shown = await r.read()
                    # whole-body digests are keyed (a digest of a short secret is no leak)
                    assert shown.count(b'"digest":"b2k-') == 2, shown
                    served += shown
        finally:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 60)
            await reap(proc)

    # V2 was sent the request exactly as V1 got it, credentials included
    assert len(seen_by_v2) == sent
    assert all(s == {"authorization": AUTH, "cookie": f"theme=dark; session={COOKIE_SECRET}",
                     "api_key": API_KEY, "password": PASSWORD} for s in seen_by_v2)
    written = [p for p in (data_dir, store.parent, log_path) for p in
               ([p] if p.is_file() else p.rglob("*")) if p.is_file()]
    assert any("aof" in p.name or p.suffix == ".rdb" for p in written), written
    assert any(p.name.endswith("-wal") or p.suffix == ".db" for p in written), written
    found = {str(p): leaks(p.read_bytes()) for p in written}
    assert not any(found.values()), found
    assert not leaks(served), leaks(served)


async def _read_firehose(client: aiohttp.ClientSession, api: str, into: list[bytes]) -> None:
    async with client.get(f"{api}/api/firehose") as r:
        async for line in r.content:
            into.append(line)
