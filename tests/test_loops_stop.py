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


async def test_the_comparer_stop_waits_for_the_batch_it_is_storing(settings_factory, redis,
                                                                   keys):
    """A batch being stored is shielded from the cancellation: stop() returns only after it
    has finished, so the store can be closed right after (it was left running: `store is
    not open` in a shadow up under load)."""
    from shadow.codec import encode_event
    from shadow.keys import EVENT_FIELD
    from shadow.model import Request, RequestEvent

    settings = settings_factory()
    store = open_store(settings.store)
    await store.open()
    entered, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    apply = store.apply

    async def slow_apply(*args, **kw):  # type: ignore[no-untyped-def]
        entered.set()
        await release.wait()
        try:
            return await apply(*args, **kw)
        finally:
            finished.set()

    store.apply = slow_apply  # type: ignore[method-assign]
    try:
        comparer = Comparer(settings, redis, store, keys=keys)
        await comparer.start()
        event = RequestEvent(id="x1", request_id="x1", ts=1.0, request=Request("GET", "/a", []))
        await redis.xadd(keys.v1, {EVENT_FIELD: encode_event(event)})
        await asyncio.wait_for(entered.wait(), 60)
        stopping = asyncio.create_task(comparer.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # it waits for the batch...
        release.set()
        await asyncio.wait_for(stopping, 60)
        assert finished.is_set()  # ...which finished before stop() returned
    finally:
        await store.close()
