"""One small error hierarchy for the whole project."""

from __future__ import annotations


class ShadowError(Exception):
    """Base of every error shadow raises on purpose."""


class ConfigError(ShadowError):
    """Bad configuration: the message says what to fix. Stops start-up."""


class StoreError(ShadowError):
    """The exchange store failed or was given something it cannot hold."""


class BusError(ShadowError):
    """Redis could not be started or reached."""


class EventError(ShadowError):
    """A stream entry that is not a valid shadow event (poison message)."""


class SealError(ShadowError):
    """A sealed value that cannot be opened: made with a key this process does not have,
    altered, truncated, or sealed for other associated data. The message names key ids only,
    never key material."""
