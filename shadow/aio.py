"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has unwound (its `finally` blocks ran)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if me is not None and me.cancelling():
            raise  # the caller itself was cancelled: never swallow that


class Backoff:
    """Exponential retry delay: `first_s`, doubled after each wait, at most `cap_s`;
    `reset()` after a success. `delay` is the wait the next `wait()` will take."""

    __slots__ = ("cap_s", "delay", "first_s")

    def __init__(self, first_s: float = 0.05, cap_s: float = 2.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.delay = first_s

    def next(self) -> float:
        """The delay to wait now; the following one doubles (up to the cap)."""
        delay, self.delay = self.delay, min(self.delay * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self.delay = self.first_s

    async def wait(self) -> None:
        await asyncio.sleep(self.next())


def raise_if_cancelling() -> None:
    """Call at the top of every background loop. redis-py can return normally from a
    command whose task was cancelled (the CancelledError swallowed inside it): a loop
    that does not check would go on for ever, and its `stop()` would never return."""
    me = asyncio.current_task()
    if me is not None and me.cancelling():
        raise asyncio.CancelledError
