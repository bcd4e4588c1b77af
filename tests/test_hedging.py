"""Hedged tries and the latency tracker behind their delay: exact counts, no network, no real sleeps.

Each try is a future the test settles; each hedge delay is a timer the test fires.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from resilience import CircuitOpen, ServiceUnavailable
from resilience.policies.budget import RetryBudget
from resilience.policies.hedging import Hedging, LatencyTracker
from resilience.policies.retry import is_transient
from resilience.testing import FakeClock


class Timer:
    """A timer handle: its callback, and whether it was cancelled."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """An injected ``call_later`` whose timers go off only when the test fires them."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._pending: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.delays.append(delay)
        self._pending.append(Timer(callback))
        return self._pending[-1]

    def fire(self) -> None:
        """Set off the oldest timer not cancelled."""
        while self._pending:
            timer = self._pending.pop(0)
            if not timer.cancelled:
                timer.callback()
                return
        raise AssertionError("no timer to fire")


class Tries:
    """``start()`` for a race: each try is a future the test settles by index."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[str]] = []

    async def start(self) -> str:
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return await future

    @property
    def cancelled(self) -> list[int]:
        return [i for i, f in enumerate(self.futures) if f.cancelled()]


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def hedging(timers: Timers, *, ratio: float = 10.0, floor: float = 0.0, **kwargs: object) -> Hedging:
    budget = RetryBudget(ratio=ratio, floor=floor, window=10.0, clock=FakeClock())
    return Hedging(budget, call_later=timers.call_later, hedge_on=is_transient, **kwargs)  # type: ignore[arg-type]


async def racing(**kwargs: object) -> tuple[Timers, Tries, Hedging, asyncio.Task[str]]:
    """A race under way: its first try started, its first timer running."""
    timers, tries = Timers(), Tries()
    h = hedging(timers, **kwargs)
    race = asyncio.create_task(h.race(tries.start))
    await turns()
    return timers, tries, h, race


async def fire(timers: Timers) -> None:
    """The hedge delay passes, and the race acts on it."""
    timers.fire()
    await turns()


def down() -> ServiceUnavailable:
    return ServiceUnavailable("logging", "reset")


def test_the_tracker_reads_quantiles_of_the_kept_latencies() -> None:
    """Of 1..100 ms the 0.95 quantile is 95 ms and the 0.5 quantile 50 ms; none while empty."""
    tracker = LatencyTracker(size=100)
    assert tracker.quantile(0.95) is None
    for ms in range(100, 0, -1):
        tracker.record(ms / 1000)
    assert tracker.quantile(0.95) == 0.095
    assert tracker.quantile(0.5) == 0.05
    assert tracker.quantile(1.0) == 0.1


def test_the_tracker_forgets_the_oldest_latencies() -> None:
    """Past ``size`` samples the oldest go: 10 slow then 10 fast in a tracker of 10 reads fast."""
    tracker = LatencyTracker(size=10)
    for _ in range(10):
        tracker.record(1.0)
    for _ in range(10):
        tracker.record(0.001)
    assert len(tracker) == 10
    assert tracker.quantile(1.0) == 0.001


def test_the_delay_is_the_quantile_within_its_bounds() -> None:
    """max_delay until min_samples tries succeeded, then the quantile, kept within the bounds."""
    h = hedging(Timers(), min_delay=0.005, max_delay=0.25, min_samples=20)
    for _ in range(19):
        h.tracker.record(0.01)
    assert h.delay() == 0.25
    h.tracker.record(0.01)
    assert h.delay() == 0.01
    for _ in range(256):
        h.tracker.record(0.0001)
    assert h.delay() == 0.005
    for _ in range(256):
        h.tracker.record(10.0)
    assert h.delay() == 0.25


async def test_a_try_on_time_sends_no_hedge() -> None:
    """The first try answers before the delay: its result, no hedge, the timer cancelled."""
    _timers, tries, h, race = await racing()
    tries.futures[0].set_result("first")
    assert await race == "first"
    assert (len(tries.futures), h.sent, h.won) == (1, 0, 0)


async def test_a_late_try_gets_a_hedge_and_the_first_answer_wins() -> None:
    """Once the delay passes a hedge is sent; it answers first: its result, the late try cancelled."""
    timers, tries, h, race = await racing()
    await fire(timers)
    assert len(tries.futures) == 2
    tries.futures[1].set_result("hedge")
    assert await race == "hedge"
    assert tries.cancelled == [0]
    assert (h.sent, h.won) == (1, 1)


async def test_at_most_max_hedges_are_sent() -> None:
    """With max_hedges=2, three tries at most, however many delays pass."""
    timers, tries = Timers(), Tries()
    h = hedging(timers, max_hedges=2)
    race = asyncio.create_task(h.race(tries.start))
    for _ in range(2):
        await turns()
        await fire(timers)
    assert len(tries.futures) == 3
    assert len(timers.delays) == 2  # no third timer
    tries.futures[0].set_result("first")
    assert await race == "first"
    assert tries.cancelled == [1, 2]
    assert (h.sent, h.won) == (2, 0)


async def test_a_failed_try_is_left_to_the_retry_loop() -> None:
    """A lone try that fails raises its error at once: hedging answers lateness, not failures."""
    _timers, tries, h, race = await racing()
    tries.futures[0].set_exception(down())
    with pytest.raises(ServiceUnavailable, match="reset"):
        await race
    assert (len(tries.futures), h.sent) == (1, 0)


async def test_a_hedge_that_fails_leaves_the_late_try_running() -> None:
    """The hedge fails while the first try is in flight: the race waits for the first."""
    timers, tries, _h, race = await racing(max_hedges=1)
    await fire(timers)
    tries.futures[1].set_exception(down())
    await turns()
    assert not race.done()
    tries.futures[0].set_result("first")
    assert await race == "first"


async def test_when_every_try_fails_the_first_failure_is_raised() -> None:
    """All tries failed: the first one's error, which says best what went wrong."""
    timers, tries, _h, race = await racing(max_hedges=1)
    await fire(timers)
    tries.futures[0].set_exception(ServiceUnavailable("logging", "first"))
    tries.futures[1].set_exception(ServiceUnavailable("logging", "second"))
    with pytest.raises(ServiceUnavailable, match="first"):
        await race


async def test_a_refused_hedge_sends_no_more() -> None:
    """A hedge refused by a breaker ends hedging for the attempt; the late try still counts."""
    timers, tries, h, race = await racing(max_hedges=2)
    await fire(timers)
    tries.futures[1].set_exception(CircuitOpen("logging", "circuit breaker open", retry_after=1.0))
    await turns()
    with pytest.raises(AssertionError, match="no timer"):
        timers.fire()  # the timer for a second hedge was cancelled
    tries.futures[0].set_result("first")
    assert await race == "first"
    assert h.sent == 1


async def test_the_budget_bounds_the_hedges() -> None:
    """With no ratio and no floor the budget refuses every hedge: counted, and the try waited for."""
    timers, tries, h, race = await racing(ratio=0.0, floor=0.0)
    await fire(timers)
    assert len(tries.futures) == 1
    tries.futures[0].set_result("first")
    assert await race == "first"
    assert (h.sent, h.refused) == (0, 1)


async def test_a_cancelled_race_cancels_its_tries() -> None:
    """The caller gives up: every try in flight is cancelled, none left running."""
    timers, tries, _h, race = await racing()
    await fire(timers)
    race.cancel()
    with pytest.raises(asyncio.CancelledError):
        await race
    assert tries.cancelled == [0, 1]


def test_tracker_size_must_be_positive() -> None:
    """A tracker that keeps nothing is refused."""
    with pytest.raises(ValueError, match="size"):
        LatencyTracker(size=0)
    assert math.isfinite(LatencyTracker().quantile(0.5) or 0.0)
