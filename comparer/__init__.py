"""The comparer: joins the parts per exchange id in the store, diffs, serves the reports."""

from __future__ import annotations

from comparer.api import ReportsApi
from comparer.service import Comparer
from comparer.store import Store, open_store

__all__ = ["Comparer", "ReportsApi", "Store", "open_store"]
