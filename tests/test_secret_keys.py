"""Where keys and the API token come from, and private files (shadow/secretkey.py,
shadow/private.py, the secret settings), on real files."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from shadow.errors import ConfigError, StoreError
from shadow.private import ensure_private_dir, make_private, read_private_file, restrict_umask
from shadow.sealing import Keyring, Sealer, SecretKey
from shadow.secretkey import data_dir_key, load_keyring, read_key_file, write_key_file
from shadow.settings import load_settings, to_args, to_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def key_file(path: Path, key: SecretKey | None = None, file_mode: int = 0o600) -> SecretKey:
    key = key or SecretKey.generate()
    path.write_text(key.to_text() + "\n")
    path.chmod(file_mode)
    return key


def test_the_keyring_from_a_key_file_the_environment_and_previous_files(tmp_path: Path) -> None:
    current = key_file(tmp_path / "new.key")
    old1, old2 = key_file(tmp_path / "old1.key"), key_file(tmp_path / "old2.key")
    ring = load_keyring(load_settings({
        "secret_key_file": str(tmp_path / "new.key"),
        "previous_secret_key_files": f"{tmp_path / 'old1.key'}, {tmp_path / 'old2.key'}"},
        env={}))
    assert (ring.current, ring.previous) == (current, (old1, old2))
    from_env = load_keyring(load_settings({}, env={"SHADOW_SECRET_KEY": current.to_text()}))
    assert from_env.current == current and from_env.previous == ()
    # what the old key sealed (events still in the streams) opens after the rotation
    assert Sealer(ring).open(Sealer(Keyring(old2)).seal(b"x", b"id"), b"id") == b"x"


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    for loose in (0o644, 0o640, 0o604, 0o660):
        path = tmp_path / f"k{loose:o}.key"
        key_file(path, file_mode=loose)
        with pytest.raises(ConfigError, match=f"--secret-key-file: {path} can be read or changed by "
                                              f"other users .*; run `chmod 600 {path}`"):
            load_keyring(load_settings({"secret_key_file": str(path)}, env={}))
    key_file(tmp_path / "p.key", file_mode=0o644)
    with pytest.raises(ConfigError, match="--previous-secret-key-files: .*chmod 600"):
        load_keyring(load_settings({"previous_secret_key_files": str(tmp_path / "p.key")},
                                   env={"SHADOW_SECRET_KEY": SecretKey.generate().to_text()}))


def test_missing_bad_or_doubled_keys_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no secret key: make one with `shadow keygen -o "
                                          r"shadow.key`.*--secret-key-file.*SHADOW_SECRET_KEY"):
        load_keyring(load_settings({}, env={}))
    with pytest.raises(ConfigError, match="does not exist"):
        load_keyring(load_settings({"secret_key_file": str(tmp_path / "nope")}, env={}))
    (tmp_path / "bad.key").write_text("not-a-key-but-a-secret-looking-text\n")
    (tmp_path / "bad.key").chmod(0o600)
    with pytest.raises(ConfigError, match="does not hold a shadow key") as e:
        load_keyring(load_settings({"secret_key_file": str(tmp_path / "bad.key")}, env={}))
    assert "secret-looking" not in str(e.value)
    with pytest.raises(ConfigError, match="SHADOW_SECRET_KEY does not hold a shadow key"):
        load_settings({}, env={"SHADOW_SECRET_KEY": "oops"})  # checked with every setting
    key_file(tmp_path / "k.key")
    with pytest.raises(ConfigError, match="both SHADOW_SECRET_KEY and --secret-key-file"):
        load_keyring(load_settings({"secret_key_file": str(tmp_path / "k.key")},
                                   env={"SHADOW_SECRET_KEY": SecretKey.generate().to_text()}))


def test_the_data_folder_key_is_made_once_0600_then_reused(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual shell's umask: the file must be private all the same
    try:
        path = data_dir_key(tmp_path)
    finally:
        os.umask(old)
    assert path == tmp_path.resolve() / "secret.key" and mode(path) == 0o600
    first = read_key_file(path, "x")
    assert data_dir_key(tmp_path) == path and read_key_file(path, "x") == first


def test_a_key_file_is_written_0600_and_never_overwritten(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        key = SecretKey.generate()
        write_key_file(tmp_path / "k", key)
    finally:
        os.umask(old)
    assert mode(tmp_path / "k") == 0o600 and read_key_file(tmp_path / "k", "x") == key
    with pytest.raises(ConfigError, match="already exists; shadow never overwrites"):
        write_key_file(tmp_path / "k", SecretKey.generate())
    assert read_key_file(tmp_path / "k", "x") == key


def test_the_api_token_comes_from_the_environment_or_a_0600_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-from-file\n")
    token.chmod(0o600)
    assert load_settings({"api_token_file": str(token)}, env={}).api_token == "tok-from-file"
    assert load_settings({}, env={"SHADOW_API_TOKEN_FILE": str(token)}).api_token == \
        "tok-from-file"
    assert load_settings({"api_token_file": str(token)},
                         env={"SHADOW_API_TOKEN": "tok-env"}).api_token == "tok-env"
    token.chmod(0o644)
    with pytest.raises(ConfigError, match=f"--api-token-file: {token} .*chmod 600 {token}"):
        load_settings({"api_token_file": str(token)}, env={})
    token.chmod(0o600)
    token.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings({"api_token_file": str(token)}, env={})


@pytest.mark.parametrize("name", ["api_token", "secret_key"])
def test_a_settings_file_cannot_hold_a_token_or_a_key(tmp_path: Path, name: str) -> None:
    cfg = tmp_path / "shadow.toml"
    cfg.write_text(f'[shadow]\n{name} = "abcdef"\n')
    with pytest.raises(ConfigError, match=f"{name} is not read from a settings file.*"
                                          f"SHADOW_{name.upper()}.*{name}_file"):
        load_settings({}, env={}, config_file=str(cfg))


def test_settings_show_and_pass_on_no_credential() -> None:
    s = load_settings({"redis": "redis://:redispw@127.0.0.1:1/0", "v1": "http://u:v1pw@v1:80",
                       "store": "mongodb://shadow:mongopw@m:27017/db",
                       "v2_set_headers": "Authorization: Bearer v2pw"},
                      env={"SHADOW_API_TOKEN": "tokpw",
                           "SHADOW_SECRET_KEY": SecretKey.generate().to_text()})
    assert s.secret_key is not None
    for shown in (repr(s), str(s), " ".join(to_args(s))):
        for secret in ("redispw", "v1pw", "mongopw", "v2pw", "tokpw", s.secret_key):
            assert secret not in shown, (secret, shown)
    assert "redis://:***@127.0.0.1:1/0" in repr(s) and "max_queue=10000" in repr(s)
    assert load_settings({}, env=to_env(s)) == s


def test_folders_and_files_found_open_are_made_private(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "redis").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    (data / "redis").chmod(0o755)
    (data / "shadow.db").write_text("x")
    (data / "shadow.db").chmod(0o644)
    (data / "redis" / "appendonly.aof").write_text("x")
    (data / "redis" / "appendonly.aof").chmod(0o664)
    os.symlink("/etc/hostname", data / "link")  # never followed
    before = mode(Path("/etc/hostname"))
    with caplog.at_level(logging.INFO, "shadow.files"):
        ensure_private_dir(data)
    assert (mode(data), mode(data / "redis")) == (0o700, 0o700)
    assert (mode(data / "shadow.db"), mode(data / "redis" / "appendonly.aof")) == (0o600, 0o600)
    assert mode(Path("/etc/hostname")) == before
    assert "made private" in caplog.text
    ensure_private_dir(tmp_path / "new" / "deeper")
    assert mode(tmp_path / "new" / "deeper") == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_data_folder_owned_by_someone_else_is_reported(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "theirs"
    data.mkdir()
    os.chown(data, 54321, 54321)
    with caplog.at_level(logging.WARNING, "shadow.files"):
        make_private(data)
    assert "belongs to user id 54321, not to this user" in caplog.text


def test_the_umask_makes_new_files_private(tmp_path: Path) -> None:
    old = restrict_umask()
    try:
        (tmp_path / "f").write_text("x")
        (tmp_path / "d").mkdir()
    finally:
        os.umask(old)
    assert (mode(tmp_path / "f"), mode(tmp_path / "d")) == (0o600, 0o700)


def test_read_private_file_refuses_what_is_not_a_private_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_private_file(tmp_path, "--x")
    (tmp_path / "f").write_bytes(b"\xff\xfe")
    (tmp_path / "f").chmod(0o600)
    with pytest.raises(ConfigError, match="is not text"):
        read_private_file(tmp_path / "f", "--x")


async def test_a_store_that_cannot_be_opened_is_named_without_its_password() -> None:
    from comparer import open_store

    with pytest.raises(ConfigError) as refused:
        open_store("postgres://shadow:pg-pw-77c2@127.0.0.1:1/db")
    store = open_store("mongodb://shadow:mongo-pw-5e1a@127.0.0.1:1/db")  # nothing listens
    try:
        with pytest.raises(StoreError) as unreachable:
            await store.open()
    finally:
        await store.close()
    assert "postgres://shadow:***@127.0.0.1:1/db" in str(refused.value)
    assert "mongodb://shadow:***@127.0.0.1:1/db" in str(unreachable.value)
    assert "pg-pw-77c2" not in str(refused.value)
    assert "mongo-pw-5e1a" not in str(unreachable.value)
