"""The `shadow` command: parse the arguments, load and check the settings, configure logging,
run the command. Exit status 2 for a configuration error, 130 for Ctrl-C.

First of all the umask becomes 077: every file shadow and its children (the embedded Redis,
SQLite) create is 0600, every folder 0700. A credential given as a flag (a URL with a
password, --v2-set-headers) is moved into the environment and the command runs again without
it (the same process, re-executed), so `ps` shows it only for that first instant; the
environment (SHADOW_*) or a 0600 file never shows it at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from shadow import logs
from shadow.cli import demo, export, keygen, replay, reports, run
from shadow.cli.parser import SECRET_VALUES, build_parser
from shadow.credentials import has_credentials
from shadow.errors import ConfigError, ShadowError
from shadow.private import restrict_umask
from shadow.settings import (
    ENV_PREFIX,
    Settings,
    check_writable,
    env_only_hint,
    env_only_names,
    field_names,
    load_settings,
)

_REEXECUTED = "_SHADOW_ARGV_SCRUBBED"  # set for the re-executed process only: never twice
# their values are credentials as they are: headers such as Authorization, webhook URLs
_ALWAYS_MOVED = ("v2_set_headers", "notify_url")

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "up": run.cmd_up, "proxy": run.cmd_proxy, "subscriber": run.cmd_subscriber,
    "comparer": run.cmd_comparer, "demo": demo.cmd_demo, "demo-app": demo.cmd_demo_app,
    "replay": replay.cmd_replay,
    "report": reports.cmd_report, "mismatches": reports.cmd_mismatches, "show": reports.cmd_show,
    "classes": reports.cmd_classes, "mark": reports.cmd_mark, "rules": reports.cmd_rules,
    "verdict": reports.cmd_verdict, "tail": reports.cmd_tail, "deploy": reports.cmd_deploy,
    "segments": reports.cmd_segments,
    "export": export.cmd_export,
}


def _without(argv: list[str], values: list[str]) -> list[str]:
    """`argv` without `--flag VALUE` and `--flag=VALUE` for each of `values`."""
    out: list[str] = []
    for i, token in enumerate(argv):
        if i and token in values and out and out[-1] == argv[i - 1] and out[-1].startswith("-"):
            out.pop()
        elif not (token.startswith("--") and token.partition("=")[1] and
                  token.partition("=")[2] in values):
            out.append(token)
    return out


def _credentials_off_the_command_line(args: argparse.Namespace) -> None:
    """Run this command again, without the flags that carry a credential on its command line:
    their values go in the environment as SHADOW_<NAME> (which the flag would have overridden
    anyway). Returns when there is nothing to move."""
    given: list[tuple[str, str]] = getattr(args, SECRET_VALUES, None) or []
    if os.environ.pop(_REEXECUTED, None) or not given:
        return
    moved = {name for name, value in given if name in _ALWAYS_MOVED or has_credentials(value)}
    if not moved:
        return
    argv = _without(sys.orig_argv, [value for name, value in given if name in moved])
    if argv == sys.orig_argv:  # not found as given (an unusual launcher): nothing to gain
        return
    env = {**os.environ, _REEXECUTED: "1",
           **{f"{ENV_PREFIX}{name.upper()}": str(getattr(args, name)) for name in moved}}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def main(argv: list[str] | None = None) -> int:
    restrict_umask()  # before anything is created, here or in a child
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:
        _credentials_off_the_command_line(args)
    flags = {name: getattr(args, name) for name in field_names() if hasattr(args, name)}
    try:
        if args.command == "keygen":  # needs no settings
            return keygen.cmd_keygen(args)
        for name in env_only_names():
            if getattr(args, f"refused_{name}", None) is not None:
                raise ConfigError(env_only_hint(name))
        settings = load_settings(flags, config_file=args.config)
        if args.command in ("up", "comparer"):  # they create the store (and up Redis's files)
            check_writable(settings, embedded_redis=args.command == "up" and not settings.redis)
        logs.configure(settings.log_level, settings.log_format)
        return COMMANDS[args.command](args, settings)
    except ShadowError as e:
        logs.fatal(f"shadow: error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130
