"""Request and exchange ids (shadow/ids.py)."""

from __future__ import annotations

import pytest

from shadow.ids import is_sane_request_id, new_id


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 26 for i in ids)
    assert ids[0] < ids[-1] or ids[0][:10] == ids[-1][:10]


@pytest.mark.parametrize("value, sane", [
    ("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("", False), (None, False),
    ("has space", False), ("tab\t", False), ("ünïcode", False), ("a\r\nX-Evil: 1", False),
])
def test_request_id_sanity(value: str | None, sane: bool) -> None:
    assert is_sane_request_id(value) is sane
