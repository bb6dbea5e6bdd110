"""The comparer's segment names (#13 item 5): a tenant under a secret-looking name that the
proxy masks or drops cannot be segmented by, and the comparer says so at start, with what to
change; under the default (tokens) it says nothing."""

from __future__ import annotations

import logging

from comparer import Comparer, open_store


async def test_a_segment_the_proxy_masks_is_refused_with_a_warning(redis, keys, settings_factory,
                                                                     caplog):
    for action, warned in (("mask", True), ("drop", True), ("token", False)):
        settings = settings_factory(segment_by="header:X-Api-Key", redact_action=action)
        store = open_store(settings.store)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shadow.comparer"):
            Comparer(settings, redis, store, keys=keys)
        said = [r.getMessage() for r in caplog.records if "--segment-by" in r.getMessage()]
        assert bool(said) is warned, action
        if warned:
            assert f"with --redact-action {action}, so every exchange falls in one segment: " \
                   "use --redact-action token" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shadow.comparer"):  # not a secret name
        Comparer(settings_factory(segment_by="header:X-Tenant", redact_action="mask"), redis,
                 open_store(settings.store), keys=keys)
    assert not [r for r in caplog.records if "--segment-by" in r.getMessage()]
