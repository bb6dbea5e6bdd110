"""Credentials masked in what shadow logs and prints (shadow/credentials.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow.credentials import has_credentials, mask_url


@pytest.mark.parametrize("url, shown", [
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("rediss://default:pw@cache.internal:6380", "rediss://default:***@cache.internal:6380"),
    ("redis+cluster://:pw@h1:7000,h2:7001", "redis+cluster://:***@h1:7000,h2:7001"),
    ("redis+sentinel://:pw@s1:26379,s2:26379/mymaster",
     "redis+sentinel://:***@s1:26379,s2:26379/mymaster"),
    ("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("mongodb://shadow:p%40ss@m1:27017,m2:27017/shadow?authSource=admin&replicaSet=rs0",
     "mongodb://shadow:***@m1:27017,m2:27017/shadow?authSource=***&replicaSet=rs0"),
    ("mongodb+srv://u:p@a@cluster0.example.net/db", "mongodb+srv://u:***@cluster0.example.net/db"),
    ("http://TOKEN@v1.internal:8000/api", "http://***@v1.internal:8000/api"),
    ("redis://h:1/0?password=pw&db=0", "redis://h:1/0?password=***&db=0"),
    ("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:tok",
     "mongodb://h/?authMechanismProperties=***"),
    # nothing to hide: unchanged, so logs still say where shadow connects
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("sqlite:///.shadow/shadow.db", "sqlite:///.shadow/shadow.db"),
    ("unix:///tmp/x/redis.sock", "unix:///tmp/x/redis.sock"),
    ("http://v2.internal:8000/users?id=3", "http://v2.internal:8000/users?id=3"),
    ("not a url at all", "not a url at all"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert has_credentials(url) == (url != shown)


def test_urls_inside_a_message_are_masked_the_rest_kept() -> None:
    message = ("Redis at redis://:pw@10.0.0.1:6379/0 unreachable (Error 111 connecting to "
               "10.0.0.1:6379); store 'mongodb://u:pw2@m:27017/db' too")
    assert mask_url(message) == ("Redis at redis://:***@10.0.0.1:6379/0 unreachable (Error 111 "
                                 "connecting to 10.0.0.1:6379); store 'mongodb://u:***@m:27017/db'"
                                 " too")


# printable ASCII without what ends a URL's authority in text (a password in a URL escapes those)
_PASSWORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                  exclude_characters="/?#'\"<>"),
                    min_size=4, max_size=30).filter(lambda p: p.strip() and "***" not in p)


@given(_PASSWORD, st.sampled_from(["redis", "rediss", "mongodb", "redis+cluster", "http"]),
       st.sampled_from(["", "user", "default"]))
def test_no_password_survives_masking(password: str, scheme: str, user: str) -> None:
    url = f"{scheme}://{user}:{password}@db.internal:6379/0"
    shown = mask_url(url)
    assert shown == f"{scheme}://{user}:***@db.internal:6379/0"
    assert f"Error with {shown} (retrying)" == mask_url(f"Error with {url} (retrying)")
