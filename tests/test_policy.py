"""The retry policy: what it retries, how long it waits, when it gives up; no real sleeps."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs
from tenacity import RetryCallState

from facade.settings import FacadeSettings
from resilience import (
    AsyncCircuitBreaker,
    BreakerRule,
    CallPolicy,
    CircuitOpen,
    ConcurrencyLimit,
    Conflict,
    Overloaded,
    RemoteError,
    RetryBudget,
    ServiceUnavailable,
    downstream_policies,
)
from resilience.policies.balancer import Balancer, Target
from resilience.policies.pipeline import breaker_rule
from resilience.policies.retry import is_transient, wait_full_jitter_or_retry_after
from resilience.testing import FakeClock


def make_policy(clock: FakeClock, *, attempts: int = 5, deadline: float = 3.0,
                min_calls: int = 100, budget: RetryBudget | None = None,
                limit: ConcurrencyLimit | None = None, failure_rate: float = 0.5) -> CallPolicy:
    rule = BreakerRule(min_calls=min_calls, open_duration=10.0, failure_rate=failure_rate)
    breaker = AsyncCircuitBreaker("logging.write", service="logging", rule=rule, clock=clock)
    return CallPolicy(balancer=Balancer([Target("http://logging", breaker)]), limit=limit,
                      budget=budget, attempts=attempts, deadline=deadline, timeout=1.0,
                      backoff_base=0.1, backoff_max=1.0, clock=clock, sleep=clock.sleep,
                      rng=lambda low, high: high)


class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"; records the timeouts it was given."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.timeouts: list[float] = []

    async def __call__(self, url: str, timeout: float) -> str:
        self.timeouts.append(timeout)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def down(reason: str = "refused", retry_after: float | None = None) -> ServiceUnavailable:
    return ServiceUnavailable("logging", reason, retry_after)


async def test_transient_failures_are_retried_until_success() -> None:
    """Refused connections and 503s are retried; the caller sees only the final success."""
    clock = FakeClock()
    flaky = Flaky(down(), down("HTTP 503"))
    assert await make_policy(clock).call(flaky) == "ok"
    assert len(flaky.timeouts) == 3


async def test_backoff_is_exponential_full_jitter_capped() -> None:
    """Waits are drawn from [0, min(cap, base * 2**(n-1))]: here the upper bound each time."""
    clock = FakeClock()
    flaky = Flaky(*[down() for _ in range(6)])
    with pytest.raises(ServiceUnavailable):
        await make_policy(clock, attempts=6, deadline=100.0).call(flaky)
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_full_jitter_draws_from_zero_to_the_ceiling() -> None:
    """The jitter asks its random source for a value between 0 and the exponential ceiling."""
    asked: list[tuple[float, float]] = []
    wait = wait_full_jitter_or_retry_after(0.1, 1.0, lambda a, b: asked.append((a, b)) or 0.0)
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = 3
    assert wait(state) == 0.0
    assert asked == [(0.0, 0.4)]


async def test_retry_after_is_honoured_up_to_the_cap() -> None:
    """A Retry-After hint lengthens the wait, but never past backoff_max."""
    clock = FakeClock()
    flaky = Flaky(down("HTTP 503", retry_after=0.7), down("HTTP 503", retry_after=30))
    assert await make_policy(clock, deadline=100.0).call(flaky) == "ok"
    assert clock.sleeps == [0.7, 1.0]


async def test_attempts_are_bounded() -> None:
    """After ``attempts`` tries the last error is raised as it is."""
    clock = FakeClock()
    errors = [down(f"try {i}") for i in range(10)]
    with pytest.raises(ServiceUnavailable) as info:
        await make_policy(clock, attempts=3, deadline=100.0).call(Flaky(*errors))
    assert info.value.reason == "try 2"


async def test_total_deadline_is_bounded() -> None:
    """No attempt starts past the deadline, whatever the attempt budget: waits of 0.1, 0.2, 0.4 and
    0.8 s bring the fifth attempt to 1.5 s, and the next wait (1.0 s) would pass 2.0 s."""
    clock = FakeClock()
    flaky = Flaky(*[down() for _ in range(50)])
    with pytest.raises(ServiceUnavailable):
        await make_policy(clock, attempts=50, deadline=2.0).call(flaky)
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8]
    assert len(flaky.timeouts) == 5


async def test_attempt_timeout_never_runs_past_the_deadline() -> None:
    """Each attempt gets the per-attempt timeout, cut to what is left of the deadline."""
    clock = FakeClock()
    flaky = Flaky(down(), down(), down())
    policy = make_policy(clock, deadline=1.5)
    await policy.call(flaky)
    assert flaky.timeouts[0] == 1.0
    assert all(t <= 1.5 - s for t, s in zip(flaky.timeouts[1:], _elapsed(clock.sleeps), strict=False))


def _elapsed(sleeps: list[float]) -> list[float]:
    total, out = 0.0, []
    for s in sleeps:
        total += s
        out.append(total)
    return out


@pytest.mark.parametrize("error", [
    Conflict("same uuid, other text"),
    RemoteError("logging", "ZeroDivisionError", "bug", 500),
    ValueError("not a network problem"),
])
async def test_non_transient_errors_are_not_retried(error: Exception) -> None:
    """Declared errors, remote bugs and local bugs end the call on the first attempt."""
    clock = FakeClock()
    flaky = Flaky(error)
    with pytest.raises(type(error)):
        await make_policy(clock).call(flaky)
    assert len(flaky.timeouts) == 1
    assert clock.sleeps == []


async def test_open_breaker_ends_the_retry_at_once() -> None:
    """When the breaker opens mid-retry, the next attempt's CircuitOpen is raised without waiting."""
    clock = FakeClock()
    flaky = Flaky(*[down() for _ in range(10)])
    with pytest.raises(CircuitOpen) as info:
        await make_policy(clock, attempts=10, deadline=100.0, min_calls=2).call(flaky)
    assert len(flaky.timeouts) == 2
    assert info.value.retry_after == pytest.approx(10.0)


def test_circuit_open_and_overloaded_are_not_transient() -> None:
    """Retrying an open breaker or a full concurrency limit would only spin."""
    assert is_transient(down())
    assert not is_transient(CircuitOpen("logging", "open", 5.0))
    assert not is_transient(Overloaded("logging", "full", 1.0))


async def test_every_retry_is_logged_with_attempt_delay_and_error() -> None:
    """Each retry writes a line with the attempt number, the delay and the error."""
    clock = FakeClock()
    with capture_logs() as logs:
        await make_policy(clock).call(Flaky(down("ECONNREFUSED")))
    retry = [e for e in logs if e["event"] == "retrying call"]
    assert retry == [{
        "event": "retrying call", "log_level": "warning", "downstream": "logging",
        "replica": "http://logging", "attempt": 1,
        "delay": 0.1, "error": "logging unavailable: ECONNREFUSED",
        "error_type": "ServiceUnavailable",
    }]


def test_downstream_policies_use_every_setting() -> None:
    """Each kind of call gets its own breaker; the kinds share one limit and one budget, as configured."""
    settings = FacadeSettings(retry_attempts=7, retry_deadline=9.0, rpc_timeout=0.3,
                        retry_backoff_base=0.2, retry_backoff_max=2.0, breaker_min_calls=4,
                        breaker_open_duration=12.0, max_calls_in_flight=9, retry_budget_ratio=0.25,
                        retry_budget_floor=2.0, retry_budget_window=4.0)
    policies = downstream_policies("logging", ["http://logging"], settings, ("write", "read"))
    write, read = policies["write"], policies["read"]
    assert (len(write.breakers), len(read.breakers)) == (1, 1)
    assert (write.attempts, write.deadline, write.timeout, write.backoff_base,
            write.backoff_max) == (7, 9.0, 0.3, 0.2, 2.0)
    (write_breaker,), (read_breaker,) = write.breakers, read.breakers
    assert write_breaker is not read_breaker
    assert (write_breaker.name, read_breaker.name, write_breaker.service) == (
        "logging.write", "logging.read", "logging")
    assert write_breaker.rule == breaker_rule(settings)
    assert (write_breaker.rule.min_calls, write_breaker.rule.open_duration) == (4, 12.0)
    assert write.limit is read.limit
    assert write.limit is not None
    assert write.limit.limit == 9
    assert write.budget is read.budget
    assert write.budget is not None
    assert (write.budget.ratio, write.budget.floor, write.budget.window) == (0.25, 2.0, 4.0)
    assert downstream_policies("messages", ["http://messages"], settings, ("read",),
                               attempts=1)["read"].attempts == 1


async def test_downstream_policies_take_a_fake_clock_and_its_sleep() -> None:
    """With ``FakeClock``'s clock and sleep, a retried call's backoff moves the fake clock and no
    real time passes."""
    clock = FakeClock()
    policy = downstream_policies("logging", ["http://logging"], FacadeSettings(), ("write",),
                                 clock=clock, sleep=clock.sleep)["write"]
    assert await policy.call(Flaky(down(), down())) == "ok"
    assert len(clock.sleeps) == 2
    assert clock.now == pytest.approx(1000.0 + sum(clock.sleeps))


async def test_a_spent_retry_budget_ends_the_call_with_the_attempts_error() -> None:
    """With no budget to spend (no ratio, no floor), a transient failure is not retried."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, floor=0.0, window=10.0, clock=clock)
    flaky = Flaky(down("HTTP 503"))
    with capture_logs() as logs, pytest.raises(ServiceUnavailable, match="HTTP 503"):
        await make_policy(clock, budget=budget).call(flaky)
    assert len(flaky.timeouts) == 1
    assert budget.refused == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "retry refused by the retry budget"]


async def test_the_budget_allows_its_ratio_of_retries_plus_the_floor() -> None:
    """With ratio 0.5 and a floor of 0.2/s over 10 s (2 retries), 10 calls earn 5 + 2 = 7 retries."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, floor=0.2, window=10.0, clock=clock)
    policy = make_policy(clock, attempts=2, budget=budget, failure_rate=1.0)  # a breaker that never opens
    for _ in range(10):
        with pytest.raises(ServiceUnavailable):
            await policy.call(Flaky(down(), down()))
        clock.advance(0.5)
    assert budget.refused == 3


def test_the_budget_refills_as_calls_age_out() -> None:
    """Retries spent more than a window ago no longer count against the budget."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, floor=0.1, window=10.0, clock=clock)  # 1 retry per 10 s
    assert budget.try_retry()
    assert not budget.try_retry()
    clock.advance(11.0)
    assert budget.try_retry()


async def test_a_full_concurrency_limit_refuses_at_once_without_calling() -> None:
    """Past the limit a call is Overloaded before any network; it is not retried nor a breaker
    failure, and the slot comes back when a call ends."""
    clock = FakeClock()
    limit = ConcurrencyLimit("logging", 1)
    policy = make_policy(clock, limit=limit, min_calls=1)
    release = asyncio.Event()
    calls = 0

    async def held(url: str, timeout: float) -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "ok"

    first = asyncio.create_task(policy.call(held))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="1 calls in flight"):
        await policy.call(held)
    assert (calls, limit.refused, policy.breakers[0].state) == (1, 1, "closed")
    release.set()
    assert await first == "ok"
    assert limit.in_flight == 0
    assert await policy.call(held) == "ok"
