"""The redaction policy (shadow/redact.py): which names and values are secrets, what they
become, and that everything else is left byte for byte (example tests; the hypothesis
properties are in test_redact_properties.py)."""

from __future__ import annotations

import gzip
import re

import orjson
import pytest

from shadow.diff import decoded_body
from shadow.errors import ConfigError
from shadow.model import Answer, Request
from shadow.redact import (
    DEFAULT_FIELDS,
    DEFAULT_HEADERS,
    MASK,
    Changes,
    Policy,
    Redaction,
    normalise,
)
from shadow.settings import Settings, load_settings

KEY = b"unit-test-key-0123456789abcdef!!"
POLICY = Policy.build(key=KEY)
SECRET = "hunter2-s3cr3t"
CARD = "4111 1111 1111 1111"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGEiLCJpYXQiOjE3MDAwMDAwMDB9."
       "c2lnbmF0dXJlLW9mLXRoZS10b2tlbg")
TOKEN = re.compile(r"tok_(?:[a-z]+_)?[0-9a-f]{16}")
JSON = [("Content-Type", "application/json")]


def tok(value: str, kind: str = "") -> str:
    return POLICY.token(value, kind)


def request(url: str = "/", headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", method: str = "POST") -> Request:
    return Request(method, url, list(headers or []), body, len(body))


def json_answer(doc: object, headers: list[tuple[str, str]] | None = None) -> Answer:
    body = orjson.dumps(doc)
    return Answer(200, [*JSON, *(headers or [])], body, len(body))


# ---- names ----

SECRET_NAMES = [
    "accessToken", "access_token", "X-Amz-Security-Token", "Api-Key", "api_key", "apiKey",
    "X-Api-Key", "key", "accesskey", "privateKey", "private_key", "secretKey", "AWS_SECRET",
    "password", "Passwd", "new_password", "PWD", "client_secret", "Authorization",
    "Proxy-Authorization", "X-Auth-Token", "auth", "sig", "signature", "X-Amz-Signature",
    "X-Amz-Credential", "credentials", "session", "sessionId", "JSESSIONID", "PHPSESSID", "sid",
    "connect.sid", "Cookie", "Set-Cookie", "csrf_token", "XSRF-TOKEN", "X-CSRF-Token",
    "csrfmiddlewaretoken", "ssn", "cvv", "CVC", "iban", "pin", "card_number", "cardNumber",
    "pan", "jwt", "otp", "refresh_token", "id_token", "token",
]
CLEAR_NAMES = [
    "Content-Type", "Content-Length", "Cache-Control", "Keep-Alive", "X-Request-Id", "Accept",
    "Accept-Encoding", "Host", "User-Agent", "Date", "ETag", "Vary", "Connection",
    "Transfer-Encoding", "Content-Encoding", "Location", "Referer", "Origin", "If-None-Match",
    "Last-Modified", "Server", "X-Forwarded-For", "Forwarded", "Strict-Transport-Security",
    "Content-Security-Policy", "Access-Control-Allow-Credentials", "WWW-Authenticate", "id",
    "name", "email", "user_id", "username", "created_at", "status", "items", "total",
    "currency", "description", "title", "url", "keyboard", "keywords", "keyId", "author",
    "prompt_tokens", "company", "shipping", "inside", "design", "spinner", "pinned", "span",
    "expires_in", "scope",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_matched_after_normalisation(name: str) -> None:
    assert POLICY.is_secret(name)
    assert POLICY.is_secret(name.upper()) and POLICY.is_secret(name.lower())


@pytest.mark.parametrize("name", CLEAR_NAMES)
def test_ordinary_names_are_never_secrets(name: str) -> None:
    assert not POLICY.is_secret(name)


def test_normalisation_ignores_case_dashes_and_underscores() -> None:
    assert normalise("X-Api-Key") == normalise("x_api_key") == normalise("xApiKey") == "xapikey"
    assert normalise("api_key") == normalise("Api-Key") == normalise("apiKey") == "apikey"


def test_names_from_the_settings_extend_and_narrow_the_defaults() -> None:
    settings = Settings(redact_names="x-tenant-*, OTP_seed", redact_allow="*session*,monkey",
                        redact_headers="X-Internal", redact_fields="nickname")
    policy = Policy.from_settings(settings, KEY)
    assert policy.is_secret("X-Tenant-Id") and policy.is_secret("otpSeed")  # --redact-names
    assert policy.is_secret("x_internal") and policy.is_secret("NickName")  # headers, fields
    assert not policy.is_secret("session_id") and not policy.is_secret("Monkey")  # allowed
    assert policy.is_secret("password")  # the other defaults stay
    both = Policy.from_settings(Settings(redact_names="author", redact_allow="author"), KEY)
    assert both.is_secret("author")  # --redact-names wins over --redact-allow
    assert POLICY.is_secret("monkey")  # `*key` over-matches by design: cheaper than a leak


def test_redaction_settings_are_checked_with_messages_that_say_what_to_write() -> None:
    with pytest.raises(ConfigError, match="token, mask or drop"):
        load_settings(env={"SHADOW_REDACT_ACTION": "hash"})
    with pytest.raises(ConfigError, match="unknown detector 'ssn'.*card, jwt, email, bearer"):
        load_settings(env={"SHADOW_REDACT_DETECTORS": "card,ssn"})
    with pytest.raises(ConfigError, match="--redact-names: '--' is empty"):
        load_settings(env={"SHADOW_REDACT_NAMES": "x,--"})
    with pytest.raises(ConfigError, match="--redact-allow: .*quote"):
        load_settings(env={"SHADOW_REDACT_ALLOW": '"x"'})
    s = load_settings(env={"SHADOW_REDACT_ACTION": "mask", "SHADOW_REDACT_DETECTORS": "",
                           "SHADOW_REDACT_NAMES": "x-tenant"})
    policy = Policy.from_settings(s, KEY)
    assert policy.action == "mask" and not policy.detectors
    assert Settings().redact_detectors == "card,jwt,email,bearer"
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Policy.build(key=b"short")


# ---- the cases the issue names ----

def test_access_token_at_any_depth_in_json() -> None:
    body = orjson.dumps({"data": {"auth": [{"x": 1}], "items": [{"accessToken": SECRET,
                                                                  "n": 1}]}})
    out = POLICY.request(request("/api", JSON, body))
    doc = orjson.loads(out.body)
    assert doc["data"]["items"][0] == {"accessToken": tok(SECRET), "n": 1}
    assert SECRET.encode() not in out.body


def test_sig_in_a_signed_url_and_the_rest_of_the_url_kept() -> None:
    url = f"/files/report.pdf?se=2026-12-01&sp=r&sig={SECRET}&sv=2024"
    out = POLICY.request(request(url, method="GET"))
    assert out.url == f"/files/report.pdf?se=2026-12-01&sp=r&sig={tok(SECRET)}&sv=2024"


def test_amz_security_token_and_api_key_headers() -> None:
    headers = [("X-Amz-Security-Token", SECRET), ("Api-Key", "k-" + SECRET),
               ("X-Amz-Date", "20261201T000000Z"), ("Accept", "*/*")]
    out = POLICY.request(request(headers=headers, method="GET"))
    assert out.headers == [("X-Amz-Security-Token", tok(SECRET)), ("Api-Key", tok("k-" + SECRET)),
                           ("X-Amz-Date", "20261201T000000Z"), ("Accept", "*/*")]


def test_a_token_inside_a_location_header_is_redacted_as_a_url() -> None:
    for name in ("Location", "Content-Location", "Referer"):
        a = Answer(302, [(name, f"https://example.com/next?token={SECRET}&step=2#frag")])
        out = POLICY.answer(a)
        assert out.headers == [(name, f"https://example.com/next?token={tok(SECRET)}&step=2#frag")]
    oauth = Answer(302, [("Location", f"https://app.example/cb#access_token={SECRET}&state=x")])
    assert SECRET not in POLICY.answer(oauth).headers[0][1]
    creds = Answer(302, [("Location", f"https://ada:{SECRET}@internal.example/x")])
    assert POLICY.answer(creds).headers[0][1] == f"https://ada:{tok(SECRET)}@internal.example/x"


def test_a_card_number_under_an_unrelated_name_only_its_span_replaced() -> None:
    body = orjson.dumps({"note": f"pay with {CARD} today", "ref": "4111111111111112",
                         "amex": "3782-822463-10005", "n": 4111111111111111})
    doc = orjson.loads(POLICY.request(request("/", JSON, body)).body)
    assert doc["note"] == f"pay with {tok(CARD, 'card')} today"
    assert doc["ref"] == "4111111111111112"  # fails the Luhn check: not a card
    assert doc["amex"] == tok("3782-822463-10005", "card")
    assert doc["n"] == tok("4111111111111111", "card")  # a bare number becomes a string
    cut = "4111 1111 1111 1111 12 25 and 1700000000000 and 17000000000000000000"
    assert POLICY.text(cut) == \
        f"{tok(CARD, 'card')} 12 25 and 1700000000000 and 17000000000000000000"


def test_a_jwt_in_a_text_body_only_its_span_replaced() -> None:
    body = f"line one\nthe session is {JWT}, keep it\n".encode()
    out = POLICY.answer(Answer(200, [("Content-Type", "text/plain")], body, len(body)))
    assert out.body == f"line one\nthe session is {tok(JWT, 'jwt')}, keep it\n".encode()


def test_email_addresses_everywhere() -> None:
    email = "ada.lovelace+shadow@analytical-engine.example.org"
    a = json_answer({"contact": email, "text": f"write to <{email}>."},
                    [("X-Contact", email)])
    out = POLICY.answer(a)
    doc = orjson.loads(out.body)
    assert doc == {"contact": tok(email, "email"), "text": f"write to <{tok(email, 'email')}>."}
    assert dict(out.headers)["X-Contact"] == tok(email, "email")
    assert POLICY.url(f"/users/{email}/x?cc={email}") == \
        f"/users/{tok(email, 'email')}/x?cc={tok(email, 'email')}"
    assert POLICY.text("not@an-address and a@b") == "not@an-address and a@b"


def test_bearer_credentials_and_long_random_strings() -> None:
    key = "sk_live_51HxAbCdEfGhIjKlMnOp4QrStUvWxYz0123"
    text = f"sent Authorization: Bearer abc.DEF-123 with {key}; basic authentication failed"
    assert POLICY.text(text) == (f"sent Authorization: Bearer {tok('abc.DEF-123', 'cred')} "
                                 f"with {tok(key, 'cred')}; basic authentication failed")
    kept = ["01JDK4M3ZQ8V6T5R2N1P0W9X8Y", "550e8400-e29b-41d4-a716-446655440000",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "/api/v2/Users/Documents/Reports/annual-2026.pdf",
            "https://example.com/some/LongerPath/with-words-2026"]
    for value in kept:
        assert POLICY.text(value) == value


def test_cookies_by_cookie_name_and_authorization_whole() -> None:
    headers = [("Authorization", f"Bearer {SECRET}"),
               ("Cookie", f"theme=dark; session={SECRET}; lang=en"),
               ("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y")]
    out, changes = POLICY.redact_request(request(headers=headers, method="GET"))
    assert out.headers == [("Authorization", tok(f"Bearer {SECRET}")),
                           ("Cookie", f"theme=dark; session={tok(SECRET)}; lang=en"),
                           ("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y")]
    assert changes == Changes(headers=frozenset({"authorization", "cookie"}))
    a = Answer(200, [("Set-Cookie", f"sid={SECRET}; Path=/; HttpOnly"),
                     ("Set-Cookie", "theme=light; Max-Age=60")])
    assert POLICY.answer(a).headers == [("Set-Cookie", f"sid={tok(SECRET)}; Path=/; HttpOnly"),
                                        ("Set-Cookie", "theme=light; Max-Age=60")]


def test_form_and_multipart_bodies() -> None:
    form = f"user=ada&password={SECRET}&remember=on&card={CARD.replace(' ', '+')}".encode()
    out = POLICY.request(request("/login", [("Content-Type", "application/x-www-form-urlencoded")],
                                 form))
    assert out.body == (f"user=ada&password={tok(SECRET)}&remember=on&card="
                        f"{tok(CARD, 'card').replace(' ', '+')}").encode()
    boundary = "----b0undary"
    parts = [("user", "ada"), ("password", SECRET), ("bio", "mail me: ada@example.com")]
    body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n"
                   for n, v in parts) + f"--{boundary}--\r\n"
    ctype = [("Content-Type", f"multipart/form-data; boundary={boundary}")]
    out = POLICY.request(request("/signup", ctype, body.encode()))
    text = out.body.decode()
    assert SECRET not in text and "ada@example.com" not in text
    assert f'name="password"\r\n\r\n{tok(SECRET)}\r\n' in text
    assert f"mail me: {tok('ada@example.com', 'email')}\r\n" in text
    assert text.count(f"--{boundary}") == 4 and 'name="user"\r\n\r\nada\r\n' in text


def test_text_bodies_get_the_detectors_and_secret_name_pairs() -> None:
    body = (f'error: login failed for {{"user": "ada", "password": "{SECRET}"}}\n'
            f"retry with password={SECRET}&user=ada\n"
            f"Api-Key: {SECRET}\n<user><pin>{SECRET}</pin></user>\n").encode()
    out = POLICY.answer(Answer(500, [("Content-Type", "text/plain")], body, len(body))).body
    assert SECRET.encode() not in out
    assert out.count(tok(SECRET).encode()) == 4 and b'"user": "ada"' in out


def test_truncated_and_escaped_json() -> None:
    cut = b'{"user": "ada", "items": [1, 2], "password": "hunter2-s3cr'
    out = POLICY.answer(Answer(200, JSON, cut, 4096, body_truncated=True))
    assert b"hunter2" not in out.body and out.body_truncated and out.body_size == 4096
    escaped = '{"user": "ad\\u0061", "pass\\u0077ord": "x\\"y", "note": "a\\u0040b.example"}'
    doc = orjson.loads(POLICY.answer(Answer(200, JSON, escaped.encode())).body)
    assert doc == {"user": "ada", "password": tok('x"y'), "note": tok("a@b.example", "email")}
    deep = b'{"a": ' * 300 + b'{"password": "x1234567"}' + b"}" * 300
    assert b"x1234567" not in POLICY.answer(Answer(200, JSON, deep)).body


def test_escapes_never_hide_a_secret_from_the_checks() -> None:
    """`\\n` glues its `n` to the next word (`nbearer`, `npin`): with any backslash in the
    body every string gets the full checks, parsed or, when cut, in place."""
    body = b'{"note": "alpha\\nBearer Q7abcdefgh\\nbeta", "url": "/x?a=1\\npin=12345678"}'
    doc = orjson.loads(POLICY.answer(Answer(200, JSON, body)).body)
    assert doc == {"note": f"alpha\nBearer {tok('Q7abcdefgh', 'cred')}\nbeta",
                   "url": f"/x?a=1\npin={tok('12345678')}"}
    cut = POLICY.answer(Answer(200, JSON, body[:-3], len(body), body_truncated=True)).body
    assert b"Q7abcdefgh" not in cut and b"123456" not in cut


def test_names_split_by_dots_or_digits_are_still_found_by_the_word_pre_check() -> None:
    """The pre-check reads letters only; `*sid` and `*key` must end a word, `csrf*` start one:
    a name that matches still shows it, whatever else the text holds."""
    doc = {"connect.sid": "s1", "x.private_key": "k1", "v2.session.token": "t1",
           "app.2csrf": "c1", "inside": "side", "keyboard": "ok", "user.monkey": "m1"}
    out = orjson.loads(POLICY.request(request("/", JSON, orjson.dumps(doc))).body)
    assert out == {"connect.sid": tok("s1"), "x.private_key": tok("k1"),
                   "v2.session.token": tok("t1"), "app.2csrf": tok("c1"), "inside": "side",
                   "keyboard": "ok", "user.monkey": tok("m1")}


def test_secret_named_containers_keep_their_shape() -> None:
    body = orjson.dumps({"credentials": {"user": "ada", "keys": ["k1", "k2"], "active": True,
                                         "n": 3}})
    doc = orjson.loads(POLICY.request(request("/", JSON, body)).body)
    assert doc == {"credentials": {"user": tok("ada"), "keys": [tok("k1"), tok("k2")],
                                   "active": True, "n": tok("3")}}


# ---- actions, tokens, what changed ----

def test_mask_and_drop_actions() -> None:
    r = request(f"/x?a=1&token={SECRET}&b=2",
                [("Api-Key", SECRET), ("Cookie", f"sid={SECRET}; theme=dark"), *JSON],
                orjson.dumps({"password": SECRET, "user": "ada", "note": f"card {CARD}"}))
    masked = Policy.build(action="mask", key=KEY).request(r)
    assert masked.url == f"/x?a=1&token={MASK}&b=2"
    assert dict(masked.headers)["Api-Key"] == MASK
    assert orjson.loads(masked.body) == {"password": MASK, "user": "ada", "note": f"card {MASK}"}
    dropped = Policy.build(action="drop", key=KEY).request(r)
    assert dropped.url == "/x?a=1&b=2"
    assert dropped.headers == [("Cookie", "theme=dark"), *JSON]
    assert orjson.loads(dropped.body) == {"user": "ada", "note": f"card {MASK}"}
    without_key = Policy.build().request(r)  # no key: tokens are masks
    assert without_key.url == masked.url and without_key.body == masked.body


def test_tokens_are_stable_per_key_and_labelled_by_detector() -> None:
    other = Policy.build(key=b"another-key-0123456789abcdef!!!!")
    assert tok(SECRET) == Policy.build(key=KEY).token(SECRET)
    assert tok(SECRET) != other.token(SECRET) and tok(SECRET) != tok(SECRET + "x")
    assert TOKEN.fullmatch(tok(SECRET)) and tok(SECRET).startswith("tok_")
    assert tok(CARD, "card").startswith("tok_card_") and TOKEN.fullmatch(tok(CARD, "card"))
    assert tok(CARD, "card")[9:] == tok(CARD)[4:]  # one HMAC; the kind is a label


def test_nothing_to_redact_gives_back_the_same_objects() -> None:
    body = orjson.dumps({"id": 7, "name": "Ada", "tags": ["x"], "at": "2026-12-01T00:00:00Z"})
    r = request("/users/7?expand=orders", [("Accept", "application/json"), *JSON], body)
    assert POLICY.request(r) is r
    a = json_answer({"ok": True}, [("X-Request-Id", "01JDK4M3ZQ8V6T5R2N1P0W9X8Y")])
    assert POLICY.answer(a) is a
    assert POLICY.redact_request(r)[1] == Changes() and not POLICY.redact_request(r)[1]
    image = b"\x89PNG\r\n\x1a\n" + b"4111111111111111 ada@example.com" * 4
    png = Answer(200, [("Content-Type", "image/png")], image)
    assert POLICY.answer(png) is png  # binary bodies are kept as they are


def test_redacting_twice_changes_nothing() -> None:
    r = request(f"/x?token={SECRET}", [("Authorization", f"Bearer {SECRET}"), *JSON],
                orjson.dumps({"password": SECRET, "n": 1234, "mail": "ada@example.com",
                              "card": CARD}))
    once = POLICY.request(r)
    assert once is not r and POLICY.request(once) is once
    assert Policy.build().request(once) is once  # a display-only pass keeps tokens


def test_changes_say_what_the_replay_needs_back() -> None:
    r = request(f"/x?api_key={SECRET}", [("X-Api-Key", SECRET), ("Accept", "*/*"), *JSON],
                orjson.dumps({"password": SECRET}))
    out, changes = POLICY.redact_request(r, echoes=True)
    assert changes.url and changes.body and changes.headers == {"x-api-key"}
    assert out.method == r.method and out.body_size == r.body_size
    assert out.headers[1] is r.headers[1]
    assert changes.echoes == {SECRET.encode()}
    echoed = json_answer({"echo": SECRET, "ok": True}, [("X-Debug", f"key was {SECRET}")])
    answered = POLICY.answer(echoed, changes.echoes)
    assert SECRET.encode() not in answered.body and SECRET not in str(answered.headers)
    assert POLICY.answer(echoed) is echoed  # without the echoes nothing names it a secret
    only_body = POLICY.redact_request(request("/", JSON, orjson.dumps({"pin": 1234})))[1]
    assert only_body == Changes(body=True)


def test_compressed_bodies_are_redacted_decoded() -> None:
    raw = orjson.dumps({"user": "ada", "password": SECRET})
    packed = gzip.compress(raw)
    a = Answer(200, [*JSON, ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")],
               packed, len(packed))
    out, changes = POLICY.redact_answer(a)
    assert out.headers == [*JSON, ("Vary", "Accept-Encoding")]
    assert orjson.loads(out.body) == {"user": "ada", "password": tok(SECRET)}
    assert out.body_size == len(packed) and changes.headers == {"content-encoding"}
    clean = gzip.compress(orjson.dumps({"user": "ada"}))
    kept = Answer(200, [*JSON, ("Content-Encoding", "gzip")], clean, len(clean))
    assert POLICY.answer(kept) is kept
    assert decoded_body(kept) == b'{"user":"ada"}'


def test_bytes_that_are_not_utf8_never_make_redaction_fail() -> None:
    """Servers hand over undecodable header and path bytes as surrogate escapes (and JSON can
    hold lone surrogates): redaction keeps them as they are and never raises (the proxy would
    drop the event)."""
    odd = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    r = request(f"/p/{odd}?q={odd}&token={odd}%41&n=%FF",
                [("X-Note", f"{odd} ada@example.com"), ("Cookie", f"a={odd}; sid={odd}"),
                 ("Content-Type", "application/x-www-form-urlencoded")],
                b"a=caf\xe9&password=\xff\xfe&b=%E9")
    out = POLICY.request(r)
    assert out.url.startswith(f"/p/{odd}?q={odd}&token=tok_") and out.url.endswith("&n=%FF")
    assert out.headers[0] == ("X-Note", f"{odd} {tok('ada@example.com', 'email')}")
    assert out.headers[1][1].startswith(f"a={odd}; sid=tok_")
    assert out.body.startswith(b"a=caf\xe9&password=tok_") and out.body.endswith(b"&b=%E9")
    assert POLICY.text("lone \ud800 surrogate and a@b.example") == \
        f"lone \ud800 surrogate and {tok('a@b.example', 'email')}"
    assert POLICY.request(out) is out


def test_errors_logs_and_diff_paths() -> None:
    a = Answer(None, error=f"Cannot connect to host v2:80 for /x?token={SECRET}")
    assert POLICY.answer(a).error == f"Cannot connect to host v2:80 for /x?token={tok(SECRET)}"
    assert POLICY.text("plain words") == "plain words"
    assert POLICY.sensitive_path("$.user.accessToken") and POLICY.sensitive_path("Set-Cookie")
    assert POLICY.sensitive_path("$.items[0]['api_key']")
    assert not POLICY.sensitive_path("$.items[0].name") and not POLICY.sensitive_path("line[3]")
    assert POLICY.value({"Pin": 1, "x": [{"otp": "a"}], "y": "ada@example.com"}) == \
        {"Pin": tok("1"), "x": [{"otp": tok("a")}], "y": tok("ada@example.com", "email")}


def test_off_redacts_nothing_and_the_firehose_name_still_builds_a_policy() -> None:
    r = request(f"/x?token={SECRET}", [("Authorization", SECRET)])
    assert Policy.off().request(r) is r and not Policy.off().enabled
    firehose = Redaction.from_settings(DEFAULT_HEADERS, DEFAULT_FIELDS)
    assert firehose.url(f"/x?token={SECRET}") == f"/x?token={MASK}"
    assert firehose.header_pairs([("x-internal", "a")]) == [("x-internal", "a")]
    mine = Redaction.from_settings("X-Internal", "Otp")
    assert mine.header_pairs([("x-internal", "a")]) == [("x-internal", MASK)]
