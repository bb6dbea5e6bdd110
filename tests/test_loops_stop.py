"""Every consumer loop stops when asked, wherever the cancellation lands (#17).

redis-py can swallow the cancellation of a command in flight and return normally. A loop
that did not check for it read on for ever and its `stop()` never returned: a comparer or
subscriber that would not shut down, and a test suite that hung in a teardown on a busy
machine (seen in a fresh-clone run beside two CPU hogs). Cancel each loop at every step of
its Redis read in turn: every stop() returns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from comparer import Comparer, open_store
from subscriber import Subscriber


async def stops_at_every_step(start: Callable[[], Awaitable[object]],
                              stop: Callable[[], Awaitable[object]], what: str) -> None:
    for steps in range(60):
        await start()
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(stop())
        await asyncio.wait([stopping], timeout=60)  # (asyncio.wait cancels nothing)
        assert stopping.done(), f"{what}.stop() hung, cancelled {steps} steps into a read"
        await stopping


async def test_the_comparer_stops_wherever_its_read_is_cancelled(settings_factory, redis, keys):
    settings = settings_factory()
    store = open_store(settings.store)
    await store.open()
    try:
        comparer = Comparer(settings, redis, store, keys=keys)
        await stops_at_every_step(comparer.start, comparer.stop, "Comparer")
    finally:
        await store.close()


async def test_the_subscriber_stops_wherever_its_read_is_cancelled(settings_factory, redis,
                                                                    keys):
    subscriber = Subscriber(settings_factory(v2="http://127.0.0.1:9"), redis, keys=keys)
    await stops_at_every_step(subscriber.start, subscriber.stop, "Subscriber")
