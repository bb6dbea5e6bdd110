"""Settings from flags, environment and file (shadow/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.settings import load_settings, to_args, to_env


def test_settings_precedence_flags_env_file(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[shadow]\nv1 = "http://file"\nv2 = "http://file2"\nmax_queue = 5\n')
    env = {"SHADOW_V1": "http://env", "SHADOW_MAX_QUEUE": "7"}
    s = load_settings({"v1": "http://flag"}, env=env, config_file=str(cfg))
    assert (s.v1, s.v2, s.max_queue) == ("http://flag", "http://file2", 7)


def test_settings_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SHADOW_MAX_QUEUE"):
        load_settings({}, env={"SHADOW_MAX_QUEUE": "many"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env={}, config_file=str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[shadow]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        load_settings({}, env={}, config_file=str(bad))
    with pytest.raises(ConfigError, match="--store"):
        load_settings({"store": "postgres://x"}, env={})


def test_settings_round_trip_through_child_flags_and_environment() -> None:
    s = load_settings({"v1": "http://a", "max_queue": 9, "allow_side_effects": True,
                       "redis": "redis://:pw@127.0.0.1:1/0"}, env={"SHADOW_API_TOKEN": "tok"})
    args = to_args(s)
    flags = {args[i][2:].replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
    assert load_settings(flags, env=to_env(s)) == s
    # what can carry a credential travels in the environment, never on the command line
    assert "pw" not in " ".join(args) and "tok" not in " ".join(args)
    assert "--v1" not in args and to_env(s)["SHADOW_V1"] == "http://a"
    assert to_env(s)["SHADOW_API_TOKEN"] == "tok"
