"""The intercepting reverse proxy: serves every client from V1, hands events to the publisher."""

from __future__ import annotations

from proxy.app import Proxy
from proxy.publisher import Discard, Publisher

__all__ = ["Discard", "Proxy", "Publisher"]
