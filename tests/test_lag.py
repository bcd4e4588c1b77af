"""Whether the event loop has fallen behind, as the facade's load shedding reads it; on an
injected clock, no sleeps."""

from __future__ import annotations

from resilience.runtime.lag import LoopLag
from resilience.testing import FakeClock


def late_sleeps(clock: FakeClock, lateness: list[float]) -> LoopLag:
    """A monitor whose n-th wake-up comes ``lateness[n]`` seconds late (then on time)."""
    pending = list(reversed(lateness))

    async def sleep(seconds: float) -> None:
        clock.advance(seconds + (pending.pop() if pending else 0.0))

    return LoopLag(target=0.5, window=1.0, interval=0.05, clock=clock, sleep=sleep)


async def test_an_on_time_wake_up_is_no_lag() -> None:
    """Waking exactly one interval later is a lateness of 0, and no overload."""
    clock = FakeClock()
    lag = LoopLag(target=0.5, clock=clock, sleep=clock.sleep)
    await lag.tick()
    assert (lag.late, lag.overloaded) == (0.0, False)
    assert clock.sleeps == [0.05]


async def test_one_long_pause_is_no_overload() -> None:
    """A single wake-up 3 s late is the lateness, but not an overload: nothing lasted yet."""
    clock = FakeClock()
    lag = late_sleeps(clock, [3.0])
    await lag.tick()
    assert abs(lag.late - 3.0) < 1e-9
    assert not lag.overloaded
    await lag.tick()
    assert (lag.late, lag.overloaded) == (0.0, False)


async def test_lateness_that_lasts_the_window_is_an_overload() -> None:
    """Wake-ups 0.6 s late: not yet an overload after the first, one once they have lasted 1 s,
    and none as soon as a wake-up comes on time."""
    clock = FakeClock()
    lag = late_sleeps(clock, [0.6, 0.6])
    await lag.tick()
    assert not lag.overloaded
    await lag.tick()  # 0.65 s after the first late one: not yet the window
    assert not lag.overloaded
    clock.advance(0.35)  # the window since the first late wake-up has now passed
    assert lag.overloaded
    await lag.tick()
    assert (lag.late, lag.overloaded) == (0.0, False)


async def test_lateness_at_the_target_is_no_overload() -> None:
    """Wake-ups exactly the target late, however long, are not over it."""
    clock = FakeClock()
    lag = late_sleeps(clock, [0.5] * 5)
    for _ in range(5):
        await lag.tick()
    assert not lag.overloaded


async def test_an_on_time_wake_up_restarts_the_window() -> None:
    """Late, on time, late: the window counts from the second late wake-up, not the first."""
    clock = FakeClock()
    lag = late_sleeps(clock, [0.6, 0.0, 0.6])
    for _ in range(3):
        await lag.tick()
    clock.advance(0.9)
    assert not lag.overloaded
    clock.advance(0.1)
    assert lag.overloaded
