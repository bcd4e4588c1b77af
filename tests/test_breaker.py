"""The circuit breaker: open, fail fast, half-open with one trial, closed; cancellation is no outcome."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from resilience import AsyncCircuitBreaker, CircuitOpen, InvalidArgument, ServiceUnavailable
from resilience.testing import FakeClock


class Boom(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("logging", "boom")


def fail(breaker: AsyncCircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ServiceUnavailable), breaker.guard():
            raise Boom()


def succeed(breaker: AsyncCircuitBreaker) -> None:
    with breaker.guard():
        pass


async def cancel_mid_call(breaker: AsyncCircuitBreaker) -> None:
    """Start a guarded call, cancel it while it waits, and check it stays a CancelledError."""
    async def hang() -> None:
        with breaker.guard():
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> AsyncCircuitBreaker:
    return AsyncCircuitBreaker("logging", fail_max=3, reset_timeout=10.0, clock=clock)


def test_opens_after_fail_max_consecutive_failures(breaker: AsyncCircuitBreaker) -> None:
    """The failure that reaches fail_max opens the breaker and raises CircuitOpen from it."""
    fail(breaker, 2)
    assert breaker.state == "closed"
    with pytest.raises(CircuitOpen) as info, breaker.guard():
        raise Boom()
    assert breaker.state == "open"
    assert isinstance(info.value.__cause__, Boom)
    assert info.value.reason == "circuit breaker open after boom"
    assert info.value.retry_after == pytest.approx(10.0)


def test_success_resets_the_failure_count(breaker: AsyncCircuitBreaker) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    fail(breaker, 2)
    succeed(breaker)
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.fail_counter == 2


def test_open_breaker_fails_fast_without_running_the_call(
    breaker: AsyncCircuitBreaker, clock: FakeClock
) -> None:
    """While open, guard() raises CircuitOpen with the time left until the trial call."""
    fail(breaker, 3)
    clock.advance(4.0)
    ran = False
    with pytest.raises(CircuitOpen) as info, breaker.guard():
        ran = True
    assert not ran
    assert info.value.retry_after == pytest.approx(6.0)
    assert breaker.retry_after() == pytest.approx(6.0)


def test_half_open_trial_success_closes(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """After reset_timeout one trial call goes through; its success closes the breaker."""
    fail(breaker, 3)
    clock.advance(10.0)
    succeed(breaker)
    assert breaker.state == "closed"
    assert breaker.fail_counter == 0


def test_half_open_trial_failure_reopens_for_a_full_timeout(
    breaker: AsyncCircuitBreaker, clock: FakeClock
) -> None:
    """A failed trial reopens the breaker, and the wait restarts from the trial's failure."""
    fail(breaker, 3)
    clock.advance(10.0)
    fail(breaker, 1)
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(10.0)


async def test_half_open_admits_one_trial_at_a_time(
    breaker: AsyncCircuitBreaker, clock: FakeClock
) -> None:
    """While the trial call is in flight, every other caller is refused at once."""
    fail(breaker, 3)
    clock.advance(10.0)
    release = asyncio.Event()
    calls = 0

    async def call() -> None:
        nonlocal calls
        with breaker.guard():
            calls += 1
            await release.wait()

    trial = asyncio.create_task(call())
    await asyncio.sleep(0)
    assert breaker.state == "half-open"
    for _ in range(5):
        with pytest.raises(CircuitOpen):
            await call()
    release.set()
    await trial
    assert calls == 1
    assert breaker.state == "closed"


async def test_cancellation_is_neither_failure_nor_trip(breaker: AsyncCircuitBreaker) -> None:
    """A cancelled call leaves the count alone and stays a CancelledError, even at fail_max - 1."""
    fail(breaker, 2)
    await cancel_mid_call(breaker)
    assert breaker.state == "closed"
    assert breaker.fail_counter == 2


async def test_cancelled_trial_neither_closes_nor_blocks_the_next_trial(
    breaker: AsyncCircuitBreaker, clock: FakeClock
) -> None:
    """Cancelling the half-open trial keeps the breaker half-open and frees the trial slot."""
    fail(breaker, 3)
    clock.advance(10.0)
    await cancel_mid_call(breaker)
    assert breaker.state == "half-open"
    succeed(breaker)
    assert breaker.state == "closed"


def test_expected_errors_are_not_failures(breaker: AsyncCircuitBreaker) -> None:
    """A caller's mistake (an ExpectedError) never opens the breaker."""
    for _ in range(10):
        with pytest.raises(InvalidArgument), breaker.guard():
            raise InvalidArgument("bad")
    assert breaker.state == "closed"


def test_transitions_are_logged(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """Every state change writes a log line naming the breaker and both states."""
    with capture_logs() as logs:
        fail(breaker, 3)
        clock.advance(10.0)
        succeed(breaker)
    changes = [(e["old_state"], e["new_state"]) for e in logs
               if e["event"] == "circuit breaker state changed"]
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert all(e["breaker"] == "logging" for e in logs if "breaker" in e)
