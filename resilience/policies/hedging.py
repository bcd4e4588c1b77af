"""Hedged requests: when a try is later than recent latency makes likely, send another beside it.

A reply that never comes (a swallowed reply, a stalled connection) would
otherwise cost its callers a whole per-attempt timeout. "The Tail at Scale"
(Dean and Barroso, 2013) sends a backup request once the first is later than
the 95th percentile of recent latency, and takes whichever answers first: in
their measurements the 99.9th percentile fell from 1,800 ms to 74 ms for 2 %
more requests. Finagle's backup requests, gRPC's hedging policy and Polly
v8's hedging strategy do the same. Like Finagle's, hedges are budgeted
(``RetryBudget``), so a slow downstream is not sent twice the load. Unlike
gRPC's, a failed try does not send the next hedge at once: a failure is the
retry loop's business, with its backoff; hedging answers lateness only.

Only calls that are safe to send twice may be hedged, as only those may be
retried: reads, and writes the downstream deduplicates (by an ID the caller
minted once). A policy with hedging assumes its calls are such.

The delay is the ``quantile`` of the latencies of recent successful tries
(``LatencyTracker``), kept within ``[min_delay, max_delay]``; ``max_delay``
until ``min_samples`` tries have succeeded.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from resilience.policies.budget import RetryBudget

T = TypeVar("T")


class Cancellable(Protocol):
    """A timer a race can cancel (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


class LatencyTracker:
    """The latencies of the last ``size`` successful tries, and their quantiles.

    The samples are kept in arrival order (to forget the oldest) and sorted
    (to read a quantile by index): O(size) per sample, exact, fixed memory.
    """

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def record(self, seconds: float) -> None:
        """One try's latency; the oldest is forgotten once ``size`` are kept."""
        if len(self._recent) == self._recent.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._recent[0])]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, q: float) -> float | None:
        """The smallest kept latency that at least ``q`` of them do not exceed (None when empty)."""
        if not self._sorted:
            return None
        index = max(0, min(len(self._sorted) - 1, -int(-q * len(self._sorted) // 1) - 1))
        return self._sorted[index]


def call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    """The running loop's ``call_later``: the default timer of a race."""
    return asyncio.get_running_loop().call_later(delay, callback)


@dataclass
class Hedging:
    """Up to ``max_hedges`` extra tries of one attempt, each sent ``delay()`` after the last.

    ``race(start)`` runs ``start()`` (one try) and, while no try has
    succeeded and one is still in flight, starts another each time
    ``delay()`` passes, as long as the budget allows; the first success is
    returned and the other tries are cancelled (a cancelled try is no outcome
    for a breaker). When every try failed, the first failure is raised: it
    says best what went wrong. After an error ``hedge_on`` refuses (a breaker
    refused the try, the caller's fault), no further hedge is sent.

    The delay is a timer callback (``call_later``, injected in tests), not a
    sleeping task: a try that answers in time, the common case, costs one
    task and one timer handle.
    """

    budget: RetryBudget
    quantile: float = 0.95
    min_delay: float = 0.005
    max_delay: float = 0.25
    max_hedges: int = 2
    min_samples: int = 20
    tracker: LatencyTracker = field(default_factory=LatencyTracker)
    call_later: Callable[[float, Callable[[], None]], Cancellable] = call_later
    hedge_on: Callable[[BaseException], bool] = lambda exc: True
    #: Hedges sent, hedges whose try succeeded first, hedges the budget refused.
    sent: int = 0
    won: int = 0
    refused: int = 0

    def delay(self) -> float:
        """How late a try may be before the next is sent."""
        if len(self.tracker) < self.min_samples:
            return self.max_delay
        observed = self.tracker.quantile(self.quantile) or self.max_delay
        return min(self.max_delay, max(self.min_delay, observed))

    async def race(self, start: Callable[[], Awaitable[T]]) -> T:
        """The result of the first try of ``start()`` to succeed (see the class docstring)."""
        self.budget.record_call()
        changed = asyncio.Event()  # a try ended or the timer fired
        late = False
        tries: list[asyncio.Future[T]] = []  # in flight, in the order they started

        def on_late() -> None:
            nonlocal late
            late = True
            changed.set()

        def begin() -> asyncio.Future[T]:
            future = asyncio.ensure_future(start())
            future.add_done_callback(lambda _: changed.set())
            tries.append(future)
            return future

        first = begin()
        failures: list[BaseException] = []
        hedges = 0
        timer = self.call_later(self.delay(), on_late) if self.max_hedges else None
        try:
            while True:
                await changed.wait()
                changed.clear()
                for future in [future for future in tries if future.done()]:
                    tries.remove(future)
                    exc = future.exception()
                    if exc is None:
                        if future is not first:
                            self.won += 1
                        return future.result()
                    failures.append(exc)
                    if not self.hedge_on(exc):
                        hedges = self.max_hedges  # refused, or the caller's fault: no more tries
                if not tries:
                    raise failures[0]
                if late:
                    late, timer = False, None
                    if hedges < self.max_hedges:
                        if self.budget.try_retry():
                            hedges += 1
                            self.sent += 1
                            begin()
                        else:
                            self.refused += 1
                            hedges = self.max_hedges  # none now, none later in this attempt
                if hedges >= self.max_hedges and timer is not None:
                    timer.cancel()
                    timer = None
                elif hedges < self.max_hedges and timer is None:
                    timer = self.call_later(self.delay(), on_late)
        finally:
            if timer is not None:
                timer.cancel()
            for future in tries:
                future.cancel()
            if tries:
                await asyncio.gather(*tries, return_exceptions=True)
