"""The event loop's lag, as the facade's load shedding reads it; on an injected clock, no sleeps."""

from __future__ import annotations

from resilience.lag import LoopLag
from resilience.testing import FakeClock


async def test_an_on_time_wake_up_is_no_lag() -> None:
    """Waking exactly one interval later is a lag of 0."""
    clock = FakeClock()
    lag = LoopLag(interval=0.05, clock=clock, sleep=clock.sleep)
    await lag.tick()
    assert lag.value == 0.0


async def test_a_late_wake_up_is_the_lag() -> None:
    """Waking 0.3 s after the interval was due is a lag of 0.3 s; the next on-time one resets it."""
    clock = FakeClock()
    late = [0.3]

    async def sleep(seconds: float) -> None:
        clock.advance(seconds + (late.pop() if late else 0.0))

    lag = LoopLag(interval=0.05, clock=clock, sleep=sleep)
    await lag.tick()
    assert abs(lag.value - 0.3) < 1e-9
    await lag.tick()
    assert lag.value == 0.0
