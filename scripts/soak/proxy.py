"""The fault proxy in front of the logging service, with the counts the soak needs of it."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from resilience.testing.faults import FaultProxy


class SoakProxy(FaultProxy):
    """The fault proxy, plus what the soak needs of it.

    It counts the requests it receives per network phase and the forwards
    in flight (so the soak can wait until none is left before reading back),
    and the 502s answered when the upstream cannot be reached (the logging
    service was killed).
    """

    def __init__(self, upstream: str, *, seed: int) -> None:
        super().__init__(upstream, seed=seed)
        self.in_flight = 0
        self.upstream_failures = 0
        #: The network phase in force, and how many requests reached the proxy in each.
        self.phase = "clean"
        self.received: Counter[str] = Counter()
        #: Set whenever no forward is in flight.
        self.idle = asyncio.Event()
        self.idle.set()

    def clear(self) -> None:
        """No delay, no injected errors, no dropped replies (listening is ``resume()``'s job)."""
        self.delay = 0.0
        self.error_rate = 0.0
        self.drop_rate = 0.0

    async def heal(self) -> None:
        """Clear every fault and listen again."""
        self.clear()
        await self.resume()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.idle.clear()
        self.received[self.phase] += 1
        try:
            response = await super()._forward(request)
            if response.status == 502:
                self.upstream_failures += 1
            return response
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
