"""The launcher: the `shadow` command line, the composition root (see entry.py)."""

from __future__ import annotations

from shadow.cli.main import main

__all__ = ["main"]
