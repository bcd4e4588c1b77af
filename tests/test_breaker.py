"""The rate-based circuit breaker, driven on an injected clock with exact counts.

As resilience4j's state-machine tests do: each test feeds a known sequence of
outcomes and pins the state after each step that matters.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from resilience import (
    AsyncCircuitBreaker,
    BreakerRule,
    CircuitOpen,
    InvalidArgument,
    Overloaded,
    ServiceUnavailable,
)
from resilience.policies.breaker import wilson_lower_bound
from resilience.testing import FakeClock

# Small numbers keep the counts readable; the defaults are pinned in their own test.
RULE = BreakerRule(failure_rate=0.5, slow_call_rate=0.8, slow_call_duration=0.5, window=10.0,
                   min_calls=10, fast_window=1.0, open_duration=5.0,
                   open_duration_max=12.0, trial_calls=3)


class Boom(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("logging", "boom")


def fail(breaker: AsyncCircuitBreaker, times: int = 1, took: float = 0.0,
         clock: FakeClock | None = None) -> None:
    def failing() -> None:
        if clock is not None:
            clock.advance(took)
        raise Boom()

    for _ in range(times):
        with pytest.raises(ServiceUnavailable), breaker.guard():
            failing()


def succeed(breaker: AsyncCircuitBreaker, times: int = 1, took: float = 0.0,
            clock: FakeClock | None = None) -> None:
    for _ in range(times):
        with breaker.guard():
            if clock is not None:
                clock.advance(took)


def trip(breaker: AsyncCircuitBreaker) -> None:
    """Open a closed breaker with the window's minimum of failures."""
    fail(breaker, RULE.min_calls)
    assert breaker.state == "open"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> AsyncCircuitBreaker:
    return AsyncCircuitBreaker("logging.write", service="logging", rule=RULE, clock=clock)


def test_defaults_are_the_documented_ones() -> None:
    """The shipped rule: 50 % of ≥ 20 calls over 10 s (or surely 50 % in the newest second), slow
    ≥ 0.5 s at 80 %, open 5 s growing to 60 s, 3 trials."""
    rule = BreakerRule()
    assert (rule.failure_rate, rule.window, rule.min_calls, rule.fast_window) == (0.5, 10.0, 20, 1.0)
    assert (rule.slow_call_duration, rule.slow_call_rate) == (0.5, 0.8)
    assert (rule.open_duration, rule.open_duration_max, rule.trial_calls) == (5.0, 60.0, 3)
    assert (rule.trial_failures_to_reopen, rule.trial_successes_to_close) == (2, 2)


def test_stays_closed_below_the_minimum_number_of_calls(breaker: AsyncCircuitBreaker) -> None:
    """Nine failures out of nine calls are not enough calls to judge: closed."""
    fail(breaker, RULE.min_calls - 1)
    assert breaker.state == "closed"


def test_opens_when_the_failure_rate_reaches_the_threshold(breaker: AsyncCircuitBreaker) -> None:
    """5 successes and 4 failures stay closed; the 5th failure makes 5 of 10 = 50 %: open."""
    succeed(breaker, 5)
    fail(breaker, 4)
    assert breaker.state == "closed"
    fail(breaker)  # the failure itself goes on to the caller (the policy decides what follows)
    assert breaker.state == "open"


def test_a_lossy_link_below_the_rate_never_opens(breaker: AsyncCircuitBreaker) -> None:
    """Runs of failures do not matter, only the share: 3 failures in a row then 7 successes, for
    1,000 calls (30 % failed), never open it."""
    for _ in range(100):
        fail(breaker, 3)
        succeed(breaker, 7)
        assert breaker.state == "closed"
    assert breaker.failure_rate() == pytest.approx(0.3)


def test_old_calls_age_out_of_the_window(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """Successes older than the window no longer dilute new failures."""
    succeed(breaker, 30)  # within the window, these would keep 10 failures at 25 %
    clock.advance(RULE.window + 1)
    fail(breaker, RULE.min_calls - 1)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_the_newest_second_trips_a_crash_under_load(breaker: AsyncCircuitBreaker,
                                                    clock: FakeClock) -> None:
    """After 200 successes, ten failures in the newest second open it (the whole window is at 5 %):
    a busy downstream that crashes is cut off in about a second; nine are not yet sure enough."""
    succeed(breaker, 200)
    clock.advance(RULE.fast_window + 0.1)
    fail(breaker, 9)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_chance_runs_in_the_newest_second_do_not_trip_it(clock: FakeClock) -> None:
    """6 failures in 10 calls, or 20 in 40, look like 50 % and more in the newest second but are not
    sure enough to open it (the long window has not its minimum here)."""
    rule = BreakerRule(min_calls=1000)
    breaker = AsyncCircuitBreaker("logging.write", rule=rule, clock=clock)
    for failures, successes in ((6, 4), (20, 20)):
        clock.advance(rule.window)
        for _ in range(successes // 2):
            succeed(breaker, 2)
            fail(breaker, 2)
        fail(breaker, failures - successes // 2 * 2)
        assert breaker.state == "closed"


@pytest.mark.parametrize(("hits", "calls", "low", "high"), [
    (0, 0, 0.0, 0.0), (10, 10, 0.51, 0.52), (9, 9, 0.48, 0.49), (30, 100, 0.18, 0.19),
    (50, 100, 0.35, 0.36),
])
def test_wilson_lower_bound(hits: int, calls: int, low: float, high: float) -> None:
    """The bound is n / (n + z²) when every call is a hit, and well under the share for few calls."""
    assert low <= wilson_lower_bound(hits, calls) <= high


def test_slow_calls_open_it_at_the_slow_call_rate(breaker: AsyncCircuitBreaker,
                                                  clock: FakeClock) -> None:
    """Calls that take ≥ slow_call_duration count as slow; a failure that makes 8 slow of 10 opens it."""
    succeed(breaker, 2)
    succeed(breaker, 7, took=RULE.slow_call_duration, clock=clock)
    assert breaker.state == "closed"
    fail(breaker, took=RULE.slow_call_duration, clock=clock)
    assert breaker.state == "open"
    assert "8 of 10 calls took 0.5 s or more" in breaker._reason


def test_a_success_never_opens_it(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """A success that completes a window of failures and slow calls (a backlog drained) leaves it closed."""
    fail(breaker, RULE.min_calls - 1)
    assert breaker.state == "closed"
    succeed(breaker, 1, took=RULE.slow_call_duration, clock=clock)  # 9 of 10 failed, 10 slow
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_a_slow_successful_trial_closes_it(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """Half-open, trials that succeed slowly (a recovered downstream drains its backlog) close it."""
    trip(breaker)
    clock.advance(RULE.open_duration)
    succeed(breaker, RULE.trial_successes_to_close, took=RULE.slow_call_duration, clock=clock)
    assert breaker.state == "closed"


def test_open_breaker_fails_fast_without_running_the_call(breaker: AsyncCircuitBreaker,
                                                          clock: FakeClock) -> None:
    """While open, guard() raises CircuitOpen before the block runs, with the time left."""
    trip(breaker)
    clock.advance(2.0)
    ran = False
    with pytest.raises(CircuitOpen) as info, breaker.guard():
        ran = True
    assert not ran
    assert info.value.retry_after == pytest.approx(3.0)
    assert breaker.calls["not_permitted"] == 1


def test_half_open_admits_the_trial_calls_then_refuses(breaker: AsyncCircuitBreaker,
                                                       clock: FakeClock) -> None:
    """After the open duration, three trials are let through at once; a fourth is refused."""
    trip(breaker)
    clock.advance(RULE.open_duration)
    trials = [breaker.guard() for _ in range(RULE.trial_calls)]
    assert breaker.state == "half-open"
    with pytest.raises(CircuitOpen, match="trial calls in flight"):
        breaker.guard()
    for trial in trials:
        with trial:
            pass
    assert breaker.state == "closed"


def test_two_successful_trials_close_it(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """pybreaker's success_threshold (2 of 3) closes it; one success alone does not."""
    trip(breaker)
    clock.advance(RULE.open_duration)
    succeed(breaker)
    assert breaker.state == "half-open"
    succeed(breaker)
    assert breaker.state == "closed"


def test_one_failed_trial_among_three_does_not_reopen(breaker: AsyncCircuitBreaker,
                                                      clock: FakeClock) -> None:
    """A single lost trial reply is not an outage: 1 failure then 2 successes close it."""
    trip(breaker)
    clock.advance(RULE.open_duration)
    fail(breaker)
    assert breaker.state == "half-open"
    succeed(breaker, 2)
    assert breaker.state == "closed"


def test_two_failed_trials_reopen_it_for_longer_each_time(breaker: AsyncCircuitBreaker,
                                                          clock: FakeClock) -> None:
    """Failed trials reopen it for the open duration times the openings in a row, capped; closing
    resets the growth."""
    trip(breaker)
    for expected in (10.0, 12.0, 12.0):  # 5 x 2, 5 x 3 capped at 12, capped again
        clock.advance(breaker.retry_after())
        fail(breaker, 2)
        assert breaker.state == "open"
        assert breaker.retry_after() == pytest.approx(expected)
    clock.advance(breaker.retry_after())
    succeed(breaker, 2)
    trip(breaker)
    assert breaker.retry_after() == pytest.approx(RULE.open_duration)


def test_a_late_outcome_has_no_say_after_a_transition(breaker: AsyncCircuitBreaker,
                                                      clock: FakeClock) -> None:
    """A call admitted while closed that ends after the breaker half-opened is not a trial: its
    success neither closes the breaker nor uses a trial's place."""
    slow_call = breaker.guard()
    trip(breaker)
    clock.advance(RULE.open_duration)
    succeed(breaker)  # the first real trial
    with slow_call:
        pass
    assert breaker.state == "half-open"
    succeed(breaker)
    assert breaker.state == "closed"


def test_outcomes_in_the_open_state_change_nothing(breaker: AsyncCircuitBreaker,
                                                   clock: FakeClock) -> None:
    """Calls still in flight when it opened may fail or succeed; it stays open until its time."""
    in_flight = [breaker.guard() for _ in range(5)]
    trip(breaker)
    for call in in_flight[:3]:
        with call:
            pass
    for call in in_flight[3:]:
        with pytest.raises(Boom), call:
            raise Boom()
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(RULE.open_duration)


async def test_cancellation_is_no_outcome(breaker: AsyncCircuitBreaker) -> None:
    """A cancelled call stays a CancelledError and counts neither way, even one short of the trip."""
    fail(breaker, RULE.min_calls - 1)

    async def hang() -> None:
        with breaker.guard():
            await asyncio.Event().wait()

    for _ in range(5):
        task = asyncio.create_task(hang())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert breaker.state == "closed"
    assert breaker.calls == {"successful": 0, "failed": RULE.min_calls - 1, "ignored": 0,
                             "not_permitted": 0}


def test_a_cancelled_trial_frees_its_place(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """A trial that ends with no outcome lets another trial in, and does not count as a success."""
    trip(breaker)
    clock.advance(RULE.open_duration)
    trials = [breaker.guard() for _ in range(RULE.trial_calls)]
    with pytest.raises(asyncio.CancelledError), trials[0]:
        raise asyncio.CancelledError
    succeed(breaker)  # the freed place
    assert breaker.state == "half-open"
    with trials[1]:
        pass
    assert breaker.state == "closed"


def test_caller_errors_and_shed_calls_are_ignored(breaker: AsyncCircuitBreaker) -> None:
    """Expected errors (the caller's fault) and Overloaded (never sent) are no failures."""
    for _ in range(RULE.min_calls * 2):
        with pytest.raises(InvalidArgument), breaker.guard():
            raise InvalidArgument("bad")
        with pytest.raises(Overloaded), breaker.guard():
            raise Overloaded("logging", "full")
    assert breaker.state == "closed"
    assert breaker.failure_rate() is None
    assert breaker.calls["ignored"] == RULE.min_calls * 4


def test_transitions_are_logged_with_their_reason(breaker: AsyncCircuitBreaker,
                                                  clock: FakeClock) -> None:
    """Every state change is a warning naming the breaker, the states, and why it opened."""
    with capture_logs() as logs:
        trip(breaker)
        clock.advance(RULE.open_duration)
        succeed(breaker, 2)
    changes = [(e["old_state"], e["new_state"]) for e in logs
               if e["event"] == "circuit breaker state changed"]
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    opened = next(e for e in logs if e.get("new_state") == "open")
    assert (opened["breaker"], opened["downstream"], opened["reason"], opened["open_for"]) == (
        "logging.write", "logging", "10 of 10 calls failed in the last 1.0 s", 5.0)


class Probe:
    """A health probe whose answers the test sets; it records each time it is asked."""

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.asked = 0

    async def __call__(self) -> bool:
        self.asked += 1
        return self.healthy


class Ticks:
    """An injected ``sleep`` whose sleeps end when the test says ``tick()``."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[None]] = []

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        await future

    async def tick(self) -> None:
        """End the sleep in progress and let the probe run."""
        for _ in range(3):
            await asyncio.sleep(0)
        self.waiting.pop(0).set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)


def probed_breaker(clock: FakeClock, probe: Probe, ticks: Ticks) -> AsyncCircuitBreaker:
    return AsyncCircuitBreaker("logging.write", service="logging", rule=RULE, clock=clock, probe=probe,
                               probe_interval=0.5, sleep=ticks.sleep)


async def test_an_open_breaker_probes_and_half_opens_when_the_probe_succeeds(clock: FakeClock) -> None:
    """Open, the breaker probes after an interval, without any call; healthy: half-open at once,
    long before the open duration, and trials close it."""
    probe, ticks = Probe(healthy=True), Ticks()
    breaker = probed_breaker(clock, probe, ticks)
    trip(breaker)
    assert probe.asked == 0
    await ticks.tick()
    assert probe.asked == 1
    assert breaker.state == "half-open"
    succeed(breaker, RULE.trial_successes_to_close)
    assert breaker.state == "closed"


async def test_a_failing_probe_leaves_it_open_and_probes_again(clock: FakeClock) -> None:
    """An unhealthy answer keeps it open and refusing; the next interval probes again."""
    probe, ticks = Probe(healthy=False), Ticks()
    breaker = probed_breaker(clock, probe, ticks)
    trip(breaker)
    await ticks.tick()
    assert (probe.asked, breaker.state) == (1, "open")
    with pytest.raises(CircuitOpen):
        breaker.guard()
    probe.healthy = True
    await ticks.tick()
    assert (probe.asked, breaker.state) == (2, "half-open")
    await breaker.aclose()


async def test_a_probe_that_answers_after_the_state_changed_has_no_say(clock: FakeClock) -> None:
    """A probe of one opening that answers after the breaker moved on changes nothing, and stops."""
    gate = asyncio.Event()

    async def slow_probe() -> bool:
        await gate.wait()
        return True

    ticks = Ticks()
    breaker = AsyncCircuitBreaker("logging.write", service="logging", rule=RULE, clock=clock,
                                  probe=slow_probe, sleep=ticks.sleep)
    trip(breaker)
    await ticks.tick()  # the first opening's probe is now waiting for its answer
    clock.advance(RULE.open_duration)
    fail(breaker, RULE.trial_failures_to_reopen)  # half-open, trials fail: open again
    assert breaker.state == "open"
    gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert breaker.state == "open"
    await breaker.aclose()


def test_failures_in_a_row_open_it_whatever_came_before(breaker: AsyncCircuitBreaker,
                                                         clock: FakeClock) -> None:
    """After 100 successes, ten failures in a row (each burst of five older than the fast window
    by the next) open it: earlier successes no longer hide a downstream gone bad."""
    succeed(breaker, 100)
    fail(breaker, 5)
    clock.advance(RULE.fast_window + 0.1)
    fail(breaker, 4)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"
    assert breaker._reason == "10 calls in a row failed"


def test_a_success_between_failures_breaks_the_row(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    """Nine failures, a success, nine failures (apart in time, among many successes): closed."""
    succeed(breaker, 100)
    fail(breaker, 9)
    clock.advance(RULE.fast_window + 0.1)
    succeed(breaker)
    fail(breaker, 9)
    assert breaker.state == "closed"
