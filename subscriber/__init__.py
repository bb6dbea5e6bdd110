"""The subscriber: replays admitted requests against V2 and publishes candidates."""

from __future__ import annotations

from subscriber.policy import replay_decision
from subscriber.service import Subscriber

__all__ = ["Subscriber", "replay_decision"]
