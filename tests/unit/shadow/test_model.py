"""The data model is plain data (shadow/model.py)."""

from __future__ import annotations

from shadow.model import Difference


def test_difference_model_is_plain_data() -> None:
    assert Difference("$.a", "changed", 1, 2) == Difference("$.a", "changed", 1, 2)
