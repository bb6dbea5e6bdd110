"""Every setting is checked before anything starts: a bad value stops `shadow up` at once with a
message naming the flag and what to write instead; no port is bound, no child started.

Real `shadow up` processes (each in its own session, so a run that wrongly starts can be ended
with everything it started)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.settings import load_settings

ROOT = Path(__file__).parent.parent.parent

# (extra arguments, what the message must say: the flag, and the expected form)
BAD = [
    (["--sample-percent", "200"], ["--sample-percent", "0-100"]),
    (["--sample-percent", "-1"], ["--sample-percent", "0-100"]),
    (["--sample-percent", "nan"], ["--sample-percent", "finite"]),
    (["--v2-read-timeout-s", "nan"], ["--v2-read-timeout-s", "finite"]),
    (["--v2-set-headers", "X-Env shadow"], ["--v2-set-headers", "'Name: value; Name2: value'"]),
    (["--v2-set-headers", "Bad Name: x"], ["--v2-set-headers", "'Bad Name'", "header name"]),
    (["--v2-remove-headers", "Cookie, X Y"], ["--v2-remove-headers", "'X Y'", "header name"]),
    (["--v2-strip-prefix", "api"], ["--v2-strip-prefix", "start with '/'", "'/api'"]),
    (["--v2-add-prefix", "v2/x"], ["--v2-add-prefix", "start with '/'", "'/v2/x'"]),
    (["--v2-add-prefix", "/v2?x=1"], ["--v2-add-prefix", "'?'"]),
    (["--replay-include", "/api/*, users/*"], ["--replay-include", "'users/*'", "'/users/*'"]),
    (["--replay-exclude", "admin"], ["--replay-exclude", "'admin'", "'/admin'"]),
    (["--ordered-by", "X Session"], ["--ordered-by", "'X Session'", "header or cookie name"]),
    (["--request-id-header", "X Request Id"], ["--request-id-header", "header name"]),
    (["--redact-headers", "Authorization,Set Cookie"], ["--redact-headers", "'Set Cookie'"]),
    (["--log-level", "loud"], ["--log-level", "debug, info, warning or error"]),
    (["--api-token", "s3cret"], ["--api-token", "not accepted on the command line",
                                 "SHADOW_API_TOKEN", "--api-token-file", "chmod 600"]),
    (["--rules", "no-such-rules.toml"], ["no-such-rules.toml"]),
    (["--store", "sqlite:///a-file/shadow.db"], ["--store", "a-file", "not a directory"]),
    (["--data-dir", "a-file/redis"], ["--data-dir", "a-file", "not a directory"]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_up(cwd: Path, *args: str) -> tuple[int, str, str]:
    """`shadow up` with fixed ports; returns (exit code, stdout, stderr) once it exits. If it
    starts instead (the bug), it is ended with its whole session and the test fails."""
    proc = subprocess.Popen([sys.executable, "-m", "shadow", "up", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "" once it exited; "shadow is up ..." if it started
    if "shadow is up" in first:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"`shadow up {' '.join(args)}` started instead of refusing")
    out, err = proc.communicate(timeout=120)
    return proc.returncode, first + out, err


@pytest.mark.parametrize("extra, says", BAD, ids=[" ".join(e) for e, _ in BAD])
def test_up_refuses_a_bad_setting_before_starting_anything(
        tmp_path: Path, extra: list[str], says: list[str]) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    listen, api = free_port(), free_port()
    code, out, err = run_up(tmp_path, "--v1", "http://127.0.0.1:9", "--v2", "http://127.0.0.1:9",
                            "--listen", f"127.0.0.1:{listen}", "--api", f"127.0.0.1:{api}",
                            *extra)
    assert code == 2, (code, out, err)
    assert err.startswith("shadow: error: ") and "Traceback" not in err, err
    for fragment in says:
        assert fragment in err, (fragment, err)
    assert "shadow is up" not in out
    # nothing started: no data directory, no store, no Redis files; both ports still free
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert port_is_free(listen) and port_is_free(api)


def test_the_same_checks_hold_for_env_and_good_values_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--sample-percent"):
        load_settings({}, env={"SHADOW_SAMPLE_PERCENT": "101"})
    with pytest.raises(ConfigError, match="SHADOW_API_TOKEN.*printable ASCII.*token_urlsafe"):
        load_settings({}, env={"SHADOW_API_TOKEN": "has space"})
    good = load_settings({"sample_percent": "0", "v2_set_headers": "Authorization: Bearer x; X-A:",
                          "v2_remove_headers": "Cookie, X-Api-Key", "v2_strip_prefix": "/api",
                          "v2_add_prefix": "/v2/", "replay_include": "/api/*,*.json",
                          "replay_exclude": "/admin/*, ?", "ordered_by": "session_id",
                          "request_id_header": "X-Trace-Id", "api_token": "abc.DEF_123-~+/="},
                         env={})
    assert good.sample_percent == 0


def test_a_sqlite_store_in_a_directory_to_create_is_fine(tmp_path: Path) -> None:
    """Directories are created at start, so a path under one that does not exist yet passes
    (checking creates nothing)."""
    from shadow.settings import check_writable

    check_writable(load_settings({"store": f"sqlite:///{tmp_path}/new/deeper/shadow.db",
                                  "data_dir": str(tmp_path / "d")}, env={}), embedded_redis=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="--store"):
        check_writable(load_settings({"store": f"sqlite:///{tmp_path}"}, env={}),
                       embedded_redis=False)  # a directory, not a database file
