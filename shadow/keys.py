"""Every Redis key name shadow uses, in one place.

A prefix (setting `stream_prefix`, default "shadow") lets several shadow setups,
or several tests, share one Redis without seeing each other's data.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLAYERS = "replayers"
COMPARERS = "comparers"
EVENT_FIELD = b"e"
# Fields of the shared stats hash (Keys.stats)
DROPPED_EVENTS = "dropped_events"  # events the proxy could not hand to Redis
TRIMMED_UNPROCESSED = "trimmed_unprocessed:"  # + group: pending entries trimmed before it processed them
TRIMMED_UNREAD = "trimmed_unread:"  # + stream label (v1, v2): entries a safety limit deleted before
# some group was given them


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "shadow"

    @property
    def v1(self) -> str:
        """Requests and V1's responses, written by the proxy."""
        return f"{self.prefix}:v1"

    @property
    def v2(self) -> str:
        """Candidates (V2's answers), written by the subscriber."""
        return f"{self.prefix}:v2"

    @property
    def streams(self) -> dict[str, str]:
        """The event streams the drain empties, by label (the /api/summary names)."""
        return {"v1": self.v1, "v2": self.v2}

    @property
    def required_groups(self) -> dict[str, tuple[str, ...]]:
        """Per event stream, the consumer groups that must exist (and have processed an entry)
        before the drain deletes anything: the subscriber's and the comparer's on the proxy's
        stream, the comparer's on the candidates'."""
        return {self.v1: (REPLAYERS, COMPARERS), self.v2: (COMPARERS,)}

    @property
    def dead(self) -> str:
        """Entries that could not be processed, with the reason."""
        return f"{self.prefix}:dead"

    @property
    def stats(self) -> str:
        """Hash of counters the services share (dropped events, ...)."""
        return f"{self.prefix}:stats"

    @property
    def firehose(self) -> str:
        """Pub/sub channel of redacted exchanges."""
        return f"{self.prefix}:firehose"
