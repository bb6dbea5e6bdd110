"""The launcher: the `shadow` command line and the composition root, the only code that
imports the services (proxy/, subscriber/, comparer/). Nothing in the core imports it.

  entry.py           parse, load the settings, dispatch (the console script's `main`)
  parser.py          every command's arguments and help
  run.py             up, proxy (and --workers N), subscriber, comparer
  reports.py         the reports-API client and report, mismatches, show, tail, classes, mark,
                     rules, verdict
  demo.py            `shadow demo`, with its sample V1 and V2 in demo_apps.py
  keygen.py          `shadow keygen`: a new secret key, printed or in a new 0600 file
  export.py          `shadow export`: stored exchanges as HAR or JSON lines, from the API
  replay.py          `shadow replay`
  views.py           terminal views (rich tables, JSON for scripts, progress)
  supervisor.py      `shadow up`'s and `shadow proxy --workers N`'s child processes
  embedded_redis.py  the embedded Redis server
  loop.py            an event loop per command, and waiting for a signal
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The `shadow` command (imported lazily, so `shadow.cli.embedded_redis` and friends load
    without the whole command line)."""
    from shadow.cli.entry import main as run

    return run(argv)


__all__ = ["main"]
