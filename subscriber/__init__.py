"""The subscriber: replays admitted requests against V2 and publishes candidates."""

from __future__ import annotations

from subscriber.service import Subscriber

__all__ = ["Subscriber"]
