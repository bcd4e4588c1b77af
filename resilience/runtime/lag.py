"""Whether the event loop has fallen behind: the queueing time every request meets before it runs.

A monitor task asks to wake every ``interval`` seconds and measures how late
it woke. On a loop that keeps up it wakes on time; on one with more work
than it can do, everything queued meets the same delay, new requests
included. As in CoDel, the rule is on the time spent waiting, not on the
number waiting, and only a *sustained* delay counts: the loop is overloaded
once every wake-up for ``window`` seconds came more than ``target`` late.
A single long pause (a collection, one large body to decode) is over by the
time anyone could shed for it, so it sheds nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from resilience.policies.window import Clock

#: How often the monitor wakes, and how long the lateness must last to count.
INTERVAL = 0.05
WINDOW = 1.0


class LoopLag:
    """The event loop's lateness (``late``, seconds) and whether it has lasted (``overloaded``)."""

    def __init__(self, target: float, window: float = WINDOW, interval: float = INTERVAL,
                 clock: Clock = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.target = target
        self.window = window
        self.interval = interval
        self.late = 0.0
        self._behind_since: float | None = None
        self._clock = clock
        self._sleep = sleep

    @property
    def overloaded(self) -> bool:
        """Every wake-up for the last ``window`` seconds came more than ``target`` late."""
        return self._behind_since is not None and self._clock() - self._behind_since >= self.window

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            await self.tick()

    async def tick(self) -> None:
        """Sleep one interval and record how late the wake-up came."""
        asked = self._clock()
        await self._sleep(self.interval)
        woke = self._clock()
        self.late = max(0.0, woke - asked - self.interval)
        if self.late <= self.target:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = woke
