"""Properties of the redaction policy (shadow/redact.py), for any input hypothesis makes up:
a canary under any secret name, or matching any detector, never survives, wherever it is put;
what holds no secret comes back as the very same object; tokens are stable per key; and
V1/V2 comparisons find the same differences with and without redaction."""

from __future__ import annotations

import gzip
import json
from typing import Any
from urllib.parse import quote

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shadow.compare import compare
from shadow.model import Answer, Request
from shadow.redact import Policy

KEY = b"property-test-key-0123456789abcd"
POLICY = Policy.build(key=KEY)
SETTINGS = settings(max_examples=150, deadline=None)  # no timing: the suite runs beside hogs

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = LETTERS + "0123456789"
SECRET_NAMES = ["password", "accessToken", "api_key", "X-Api-Key", "sig", "session_id",
                "client_secret", "authToken", "private_key", "cvv", "pin", "iban", "ssn",
                "refresh_token", "csrf", "credentials", "Api-Key", "X-Amz-Security-Token",
                "signature", "jwt", "sid", "key", "passwd", "otp"]
CLEAR_NAMES = ["id", "name", "items", "total", "data", "user", "city", "tags", "note",
               "value", "list", "meta", "page", "state", "kind", "count"]
SAFE_WORDS = ["alpha", "beta", "gamma", "delta", "shipped", "london", "blue", "large", "ok"]

# ---- strategies ----


@st.composite
def spelled(draw: st.DrawFn, names: list[str]) -> str:
    """A secret name as clients write it: any case, `-` or `_` anywhere inside."""
    name = draw(st.sampled_from(names))
    out = []
    for i, c in enumerate(name):
        if i and c.isalpha() and draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from("-_")))
        out.append(c.upper() if draw(st.booleans()) else c.lower())
    return "".join(out)


# "Cq" + letters and digits: never part of a token (lower-case hex), a mask, JSON or a word
canaries = st.text(ALNUM, min_size=6, max_size=24).map(lambda s: "Cq" + s)
clear_leaves = st.one_of(st.integers(-10_000, 10_000), st.booleans(), st.none(),
                         st.lists(st.sampled_from(SAFE_WORDS), max_size=3).map(" ".join))
clear_trees = st.recursive(
    clear_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(CLEAR_NAMES), inner, max_size=3)),
    max_leaves=12)


def with_secret(secret: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON trees where some objects hold a secret-named field (the canary as a string, or
    inside an array or object under that name), at any depth."""
    held = st.one_of(secret, st.lists(secret, min_size=1, max_size=2),
                     st.dictionaries(st.sampled_from(CLEAR_NAMES), secret, min_size=1,
                                     max_size=2))
    objects = st.builds(lambda clear, name, value: {**clear, name: value},
                        st.dictionaries(st.sampled_from(CLEAR_NAMES), clear_leaves, max_size=2),
                        spelled(SECRET_NAMES), held)
    return st.recursive(
        objects,
        lambda inner: st.one_of(st.lists(st.one_of(inner, clear_leaves), min_size=1, max_size=3),
                                st.dictionaries(st.sampled_from(CLEAR_NAMES), inner, min_size=1,
                                                max_size=3)),
        max_leaves=6)


def serialised(doc: Any, style: int) -> bytes:
    """The same JSON as different servers write it: compact, indented, `"key" : value`
    (Jackson), ASCII-escaped (backslashes: the parsed path), and with the canaries' second
    letter escaped (`"C\\u0071...`: the same strings, so the same tokens, either way)."""
    if style == 0:
        return orjson.dumps(doc)
    if style == 1:
        return json.dumps(doc, indent=2).encode()
    if style == 2:
        return json.dumps(doc, separators=(", ", " : ")).encode()
    if style == 3:
        return json.dumps(["\u00e9", doc], ensure_ascii=True).encode()
    return orjson.dumps(doc).replace(b'"Cq', b'"C\\u0071')


@st.composite
def cards(draw: st.DrawFn) -> str:
    """A Luhn-valid card number of 13-19 digits from a network's range, written as people do."""
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "34", "37", "6011", "65", "35"]))
    length = draw(st.integers(13, 19))
    body = prefix + "".join(draw(st.lists(st.sampled_from("0123456789"),
                                          min_size=length - len(prefix) - 1,
                                          max_size=length - len(prefix) - 1)))
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    digits = body + str((10 - total % 10) % 10)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4)) if sep else digits


emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(ALNUM + "._+", min_size=1, max_size=20).filter(lambda s: s[0].isalnum()),
    st.text(ALNUM, min_size=1, max_size=15), st.text(LETTERS, min_size=2, max_size=6))
b64url = st.text(ALNUM + "-_", min_size=10, max_size=40)
jwts = st.builds(lambda h, p, s: f"eyJ{h}.eyJ{p}.{s}", b64url, b64url, b64url)
randoms = st.text(ALNUM, min_size=29, max_size=60).map(lambda s: "AqZ9" + s)
bearers = st.builds(lambda scheme, cred: (f"{scheme} {cred}", cred),
                    st.sampled_from(["Bearer", "bearer", "Basic", "token"]),
                    st.text(ALNUM + "-._~+/", min_size=6, max_size=40).map(lambda s: "Q7" + s))


@st.composite
def detected(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(text holding a detector's hit, the strings that must not survive)."""
    kind = draw(st.sampled_from(["card", "email", "jwt", "random", "bearer"]))
    if kind == "bearer":
        text, cred = draw(bearers)
        return text, [cred]
    value = draw({"card": cards(), "email": emails, "jwt": jwts, "random": randoms}[kind])
    must_go = [value, value.replace(" ", "").replace("-", "")] if kind == "card" else [value]
    return value, must_go


def leaks(secrets: list[str], *where: bytes | str) -> list[str]:
    text = b"\n".join(w.encode() if isinstance(w, str) else w for w in where)
    return [s for s in secrets if s.encode() in text]


def everything(r: Request | Answer) -> list[bytes | str]:
    out: list[bytes | str] = [r.body, *(f"{k}: {v}" for k, v in r.headers)]
    if isinstance(r, Request):
        out.append(r.url)
    return out


# ---- a secret never survives ----

@SETTINGS
@given(canaries, spelled(SECRET_NAMES), spelled(SECRET_NAMES), spelled(SECRET_NAMES),
       st.sampled_from(["token", "mask", "drop"]))
def test_a_canary_under_a_secret_name_never_survives_in_headers_cookies_or_the_url(
        canary: str, header: str, cookie: str, param: str, action: str) -> None:
    policy = Policy.build(key=KEY, action=action)
    r = Request("GET", f"/a/b?page=2&{quote(param)}={canary}&x=y#{param}={canary}",
                [("Accept", "*/*"), (header, canary),
                 ("Cookie", f"theme=dark; {cookie}={canary}; lang=en")])
    out = policy.request(r)
    assert not leaks([canary], *everything(out))
    assert ("Accept", "*/*") in out.headers and "page=2" in out.url and "x=y" in out.url


@SETTINGS
@given(canaries, st.data(), st.integers(0, 3), st.sampled_from(["token", "mask", "drop"]),
       st.booleans())
def test_a_canary_under_a_secret_name_never_survives_in_json_at_any_depth(
        canary: str, data: st.DataObject, style: int, action: str, compressed: bool) -> None:
    doc = data.draw(with_secret(st.just(canary)))
    body = serialised(doc, style)
    assume(canary.encode() in body)
    headers = [("Content-Type", "application/json")]
    if compressed:
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    policy = Policy.build(key=KEY, action=action)
    for out in (policy.request(Request("POST", "/", headers, body, len(body))),
                policy.answer(Answer(200, headers, body, len(body)))):
        assert not leaks([canary], *everything(out))
        assert out.body_size == len(body)
        if action != "drop":
            assert orjson.loads(out.body) is not None  # still JSON


@SETTINGS
@given(canaries, st.data(), st.integers(0, 3))
def test_a_canary_under_a_secret_name_never_survives_a_truncated_json_body(
        canary: str, data: st.DataObject, style: int) -> None:
    doc = data.draw(with_secret(st.just(canary)))
    body = serialised(doc, style)
    at = body.find(canary.encode())
    assume(at >= 0)
    kept = data.draw(st.integers(3, len(canary)))
    cut = body[:at + kept]  # the capture cap cut the body inside (or just after) the secret
    a = Answer(200, [("Content-Type", "application/json")], cut, len(body), body_truncated=True)
    out = POLICY.answer(a)
    assert canary[:kept].encode() not in out.body
    assert out.body_truncated and out.body_size == len(body)


@SETTINGS
@given(canaries, spelled(SECRET_NAMES), st.sampled_from(["token", "mask", "drop"]))
def test_a_canary_under_a_secret_name_never_survives_in_forms_multipart_or_text(
        canary: str, name: str, action: str) -> None:
    policy = Policy.build(key=KEY, action=action)
    form = f"user=ada&{quote(name)}={canary}&remember=on".encode()
    boundary = "XyZ0boundary"
    parts = [("user", "ada"), (name, canary), ("note", "hello")]
    multipart = ("".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n'
                         f"{v}\r\n" for n, v in parts) + f"--{boundary}--\r\n").encode()
    text = (f'failed: {{"{name}": "{canary}", "user": "ada"}}\n{name}={canary}&x=1\n'
            f"{name}: {canary}\n<{name}>{canary}</{name}>\n").encode()
    for ctype, body in (("application/x-www-form-urlencoded", form),
                        (f"multipart/form-data; boundary={boundary}", multipart),
                        ("text/plain; charset=utf-8", text)):
        out = policy.request(Request("POST", "/", [("Content-Type", ctype)], body, len(body)))
        assert not leaks([canary], *everything(out)), ctype
        assert b"ada" in out.body


@SETTINGS
@given(detected(), st.data(), st.integers(0, 3))
def test_a_detected_value_never_survives_under_any_name_at_any_depth(
        hit: tuple[str, list[str]], data: st.DataObject, style: int) -> None:
    value, must_go = hit
    words = st.sampled_from(SAFE_WORDS)
    text = st.builds(lambda a, b, sep: f"{a}{sep}{value}{sep}{b}", words, words,
                     st.sampled_from([" ", ", ", " (", "\n", ": "]))
    placed = data.draw(st.one_of(st.just(value), text))
    tree = data.draw(st.recursive(
        st.just(placed),
        lambda inner: st.one_of(st.lists(st.one_of(inner, clear_leaves), min_size=1, max_size=3)
                                .map(lambda xs: [*xs, placed] if placed not in xs else xs),
                                st.dictionaries(st.sampled_from(CLEAR_NAMES), inner, min_size=1,
                                                max_size=3)),
        max_leaves=5))
    body = serialised(tree, style)
    assume(all(s.encode() in body or json.dumps(s)[1:-1].encode() in body for s in must_go[:1]))
    header_value = placed.replace("\n", " ")
    r = Request("POST", f"/p?q={quote(value, safe='')}&n=1",
                [("Content-Type", "application/json"), ("X-Note", header_value),
                 ("Cookie", f"theme={quote(value, safe='')}")], body, len(body))
    out = POLICY.request(r)
    assert not leaks(must_go, *everything(out)), (out.url, out.headers, out.body)
    plain = POLICY.answer(Answer(200, [("Content-Type", "text/plain")], placed.encode()))
    assert not leaks(must_go, plain.body)
    assert not leaks(must_go, POLICY.text(f"log: {placed}"))


# ---- nothing else changes ----

clear_text = st.lists(st.sampled_from(SAFE_WORDS + ["12", "7", "a-b", "x_y"]),
                      max_size=6).map(" ".join)
clear_headers = st.lists(st.tuples(st.sampled_from(["Accept", "X-Trace", "User-Agent", "X-Mode",
                                                    "Cookie", "Location", "X-Request-Id"]),
                                   clear_text), max_size=5)


@SETTINGS
@given(clear_trees, st.integers(0, 3), clear_headers,
       st.lists(st.tuples(st.sampled_from(CLEAR_NAMES), clear_text), max_size=4),
       st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                        None]))
def test_what_holds_no_secret_comes_back_as_the_very_same_object(
        doc: Any, style: int, headers: list[tuple[str, str]], query: list[tuple[str, str]],
        ctype: str | None) -> None:
    body = serialised(doc, style) if ctype in ("application/json", None) else \
        "&".join(f"{k}={quote(v)}" for k, v in query).encode() if ctype and "form" in ctype \
        else " and ".join(v for _, v in query).encode()
    hs = [*headers, *([("Content-Type", ctype)] if ctype else [])]
    url = "/items/42" + ("?" + "&".join(f"{k}={quote(v)}" for k, v in query) if query else "")
    r = Request("POST", url, hs, body, len(body))
    a = Answer(200, list(hs), body, len(body))
    assert POLICY.request(r) is r
    assert POLICY.answer(a) is a
    compressed = gzip.compress(body)
    z = Answer(200, [*hs, ("Content-Encoding", "gzip")], compressed, len(compressed))
    assert POLICY.answer(z) is z


@SETTINGS
@given(st.text(max_size=80))
def test_any_text_redacted_twice_is_redacted_once(text: str) -> None:
    once = POLICY.text(text)
    assert POLICY.text(once) == once  # tokens and masks are never redacted again


@SETTINGS
@given(st.text("abcdefghijklmnopqrstuvwxyz .,!?-'()\n", max_size=200))
def test_prose_is_kept_as_the_same_object(text: str) -> None:
    assert POLICY.text(text) is text


# ---- tokens ----

@SETTINGS
@given(canaries, spelled(SECRET_NAMES), spelled(SECRET_NAMES))
def test_tokens_are_equal_for_equal_secrets_and_differ_by_key(
        canary: str, name1: str, name2: str) -> None:
    body = orjson.dumps({"outer": {name2: canary}})
    r = Request("POST", f"/x?{quote(name1)}={canary}", [("Content-Type", "application/json")],
                body, len(body))
    token = Policy.build(key=KEY).token(canary)
    again = Policy.build(key=KEY).request(r)  # a new policy, the same key: the same tokens
    assert token in again.url and token.encode() in again.body
    assert POLICY.request(r).url == again.url and POLICY.request(r).body == again.body
    other = Policy.build(key=b"a-different-key-0123456789abcdef").request(r)
    assert token not in other.url and token.encode() not in other.body


# ---- comparisons stay exact ----

def _comparable(answer: Answer) -> tuple[Any, ...]:
    return answer.status, answer.headers, answer.body


def _diff(v1: Answer, v2: Answer) -> list[tuple[str, str, Any, Any]]:
    c = compare(None, v1, v2, "/r")
    return [(d.path, d.kind, d.v1, d.v2) for d in c.diff]


@SETTINGS
@given(st.data(), canaries, clear_trees, clear_trees, st.sampled_from([0, 1, 2, 4]),
       st.sampled_from([0, 1, 2, 4]), st.booleans())
def test_comparisons_find_the_same_differences_with_and_without_redaction(
        data: st.DataObject, canary: str, clear1: Any, clear2: Any, style1: int, style2: int,
        secrets_differ: bool) -> None:
    secrets = data.draw(with_secret(st.just(canary)))
    other = data.draw(canaries) if secrets_differ else canary
    assume(other != canary or not secrets_differ)
    v2_secrets = orjson.loads(orjson.dumps(secrets).replace(canary.encode(), other.encode()))
    headers = [("Content-Type", "application/json"),
               ("Location", f"/next?token={canary}&page=2"), ("Set-Cookie", f"sid={canary}")]
    v2_headers = [(k, v.replace(canary, other)) for k, v in headers]

    def answer(hs: list[tuple[str, str]], doc: Any, style: int) -> Answer:
        body = serialised(doc, style)
        return Answer(200, hs, body, len(body))

    v1 = answer(headers, {"secrets": secrets, "clear": clear1}, style1)
    v2 = answer(v2_headers, {"secrets": v2_secrets, "clear": clear2}, style2)
    r1, r2 = POLICY.answer(v1), POLICY.answer(v2)
    raw, redacted = _diff(v1, v2), _diff(r1, r2)
    if not secrets_differ:  # differences outside secrets: exactly the same diff
        assert redacted == raw
    else:  # the same places differ; the values shown there are tokens
        assert [(p, k) for p, k, _, _ in redacted] == [(p, k) for p, k, _, _ in raw]
        assert not leaks([canary, other], repr(redacted))


# ---- anything at all ----

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
fragments = st.sampled_from([b'{"', b'"password": "', b'":', b"=", b"&token=", b"\\", b"\\u00",
                             b"4111 1111 1111 1111", b"a@b.co", b"Bearer ", b"eyJ", b"--b\r\n",
                             b'name="pin"\r\n\r\n', b"\r\n\r\n", b"\xff", b"}", b"]", b"[", b" "])
bodies = st.one_of(st.binary(max_size=200),
                   st.lists(st.one_of(fragments, st.binary(max_size=8)), max_size=30)
                   .map(b"".join))


@SETTINGS
@given(bodies, st.sampled_from(["application/json", "text/plain", "multipart/form-data; "
                                "boundary=b", "application/x-www-form-urlencoded", None,
                                "image/png"]),
       st.sampled_from([None, "gzip", "br", "deflate"]), any_text, any_text, any_text,
       st.booleans(), st.sampled_from(["token", "mask", "drop"]))
def test_any_input_is_redacted_without_failing_and_a_second_pass_changes_nothing(
        body: bytes, ctype: str | None, encoding: str | None, url: str, name: str,
        value: str, truncated: bool, action: str) -> None:
    policy = Policy.build(key=KEY, action=action)
    headers = [(name or "X", value), ("Cookie", f"{name}={value}"), ("Location", value)]
    headers += [("Content-Type", ctype)] if ctype else []
    headers += [("Content-Encoding", encoding)] if encoding else []
    r = Request("POST", "/" + url, headers, body, len(body), truncated)
    a = Answer(200, headers, body, len(body), truncated, error=value or None)
    once_r, once_a = policy.request(r), policy.answer(a)
    assert policy.request(once_r) is once_r
    assert policy.answer(once_a) is once_a
    assert once_r.body_size == once_a.body_size == len(body)
