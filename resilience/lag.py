"""How far behind the event loop is: the queueing time every request meets before it runs.

A monitor task asks to wake every ``interval`` seconds and measures how late
it woke. On a loop that keeps up it wakes on time; on one with more work
than it can do, everything queued meets the same delay, new requests
included. The facade sheds new requests while the lag is over its limit
(load shedding on queueing time, after CoDel's idea that the time spent
waiting, not the number waiting, says a queue is too long).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .window import Clock


class LoopLag:
    """The event loop's latest lateness, in seconds (``value``), measured by ``run()``."""

    def __init__(self, interval: float = 0.05, clock: Clock = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.interval = interval
        self.value = 0.0
        self._clock = clock
        self._sleep = sleep

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            await self.tick()

    async def tick(self) -> None:
        """Sleep one interval and record how late the wake-up came."""
        asked = self._clock()
        await self._sleep(self.interval)
        self.value = max(0.0, self._clock() - asked - self.interval)
