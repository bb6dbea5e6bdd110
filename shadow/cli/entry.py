"""The `shadow` command: parse the arguments, load and check the settings, configure logging,
run the command. Exit status 2 for a configuration error, 130 for Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from shadow.cli import demo, replay, reports, run
from shadow.cli.parser import build_parser
from shadow.errors import ShadowError
from shadow.settings import Settings, check_writable, field_names, load_settings

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "up": run.cmd_up, "proxy": run.cmd_proxy, "subscriber": run.cmd_subscriber,
    "comparer": run.cmd_comparer, "demo": demo.cmd_demo, "demo-app": demo.cmd_demo_app,
    "replay": replay.cmd_replay,
    "report": reports.cmd_report, "mismatches": reports.cmd_mismatches, "show": reports.cmd_show,
    "classes": reports.cmd_classes, "mark": reports.cmd_mark, "rules": reports.cmd_rules,
    "verdict": reports.cmd_verdict, "tail": reports.cmd_tail,
}


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {name: getattr(args, name) for name in field_names() if hasattr(args, name)}
    try:
        settings = load_settings(flags, config_file=args.config)
        if args.command in ("up", "comparer"):  # they create the store (and up Redis's files)
            check_writable(settings, embedded_redis=args.command == "up" and not settings.redis)
        _configure_logging(settings.log_level)
        return COMMANDS[args.command](args, settings)
    except ShadowError as e:
        print(f"shadow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
