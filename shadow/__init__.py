"""shadow: a traffic-shadowing proxy and response comparison service."""

from __future__ import annotations

__version__ = "0.1.0"
