"""--redis URLs (shadow.redisurl): one Redis, a Redis Cluster, a Sentinel-watched master."""

from __future__ import annotations

import pytest

from shadow.errors import ConfigError
from shadow.redisurl import is_cluster_url, parse_redis_url
from shadow.settings import load_settings


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380",
                                 "unix:///tmp/redis.sock"])
def test_one_redis_urls_go_to_redis_py_as_they_are(url: str) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.url) == ("single", url)


def test_a_cluster_url_names_its_startup_nodes_and_credentials() -> None:
    target = parse_redis_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert target.kind == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (target.username, target.password, target.tls) == ("app", "s@cret", False)
    assert target.client_options() == {"username": "app", "password": "s@cret"}
    assert is_cluster_url("redis+cluster://h:1") and is_cluster_url("rediss+cluster://h:1")
    assert not is_cluster_url("redis://h:1") and not is_cluster_url(None)


def test_a_sentinel_url_names_the_sentinels_and_the_master() -> None:
    target = parse_redis_url("rediss+sentinel://:pw@s1:26379,s2/mymaster"
                             "?sentinel_password=spw&ssl_cert_reqs=none&db=2")
    assert target.kind == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26379))
    assert (target.service, target.password, target.tls) == ("mymaster", "pw", True)
    assert target.options["sentinel_password"] == "spw"  # the sentinels' own password
    assert target.client_options() == {"password": "pw", "ssl": True, "ssl_cert_reqs": "none",
                                       "db": 2}


@pytest.mark.parametrize(("url", "says"), [
    ("http://h:1", "expected redis://"),
    ("redis+cluster://", "no HOST:PORT"),
    ("redis+cluster://h:notaport", "bad port"),
    ("redis+cluster://h:1/3", "database 0 only"),
    ("redis+sentinel://h:1", "name the master"),
    ("redis+sentinel://h:1/a/b", "name the master"),
    ("redis+cluster://h:1?colour=red", "unknown option(s) colour"),
    ("redis+cluster://h:1?ssl_ca_certs=/ca.pem", "need the rediss+cluster:// scheme"),
    ("redis+sentinel://h:1/m?db=x", "db must be a number"),
])
def test_bad_urls_say_what_is_expected(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+")):
        parse_redis_url(url)


def test_the_password_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigError) as e:
        parse_redis_url("redis+sentinel://:hunter2@h:1")
    assert "hunter2" not in str(e.value)


def test_the_settings_accept_cluster_and_sentinel_urls_and_check_the_shard_count() -> None:
    s = load_settings({"redis": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                       "stream_shards": 6, "max_replay_rate_global": 50.0,
                       "publish_wait_replicas": 1}, env={}, config_file=None)
    assert (s.stream_shards, s.max_replay_rate_global, s.publish_wait_replicas) == (6, 50.0, 1)
    load_settings({"redis": "rediss+sentinel://h:26379/mymaster"}, env={}, config_file=None)
    with pytest.raises(ConfigError, match="--redis: .*name the master"):
        load_settings({"redis": "redis+sentinel://h:26379"}, env={}, config_file=None)
    with pytest.raises(ConfigError, match="--stream-shards: 1-256"):
        load_settings({"stream_shards": 0}, env={}, config_file=None)
