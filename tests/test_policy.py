"""The retry policy: what it retries, how long it waits, when it gives up; no real sleeps."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs
from tenacity import RetryCallState

from resilience import (
    AsyncCircuitBreaker,
    CallPolicy,
    CircuitOpen,
    Conflict,
    RemoteError,
    ServiceUnavailable,
    Settings,
)
from resilience.policy import is_transient, wait_full_jitter_or_retry_after
from resilience.testing import FakeClock


def make_policy(clock: FakeClock, *, attempts: int = 5, deadline: float = 3.0,
                fail_max: int = 100) -> CallPolicy:
    breaker = AsyncCircuitBreaker("logging", fail_max=fail_max, reset_timeout=10.0, clock=clock)
    return CallPolicy(breaker=breaker, attempts=attempts, deadline=deadline, timeout=1.0,
                      backoff_base=0.1, backoff_max=1.0, clock=clock, sleep=clock.sleep,
                      rng=lambda low, high: high)


class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"; records the timeouts it was given."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.timeouts: list[float] = []

    async def __call__(self, timeout: float) -> str:
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
    """No attempt starts past the deadline, whatever the attempt budget."""
    clock = FakeClock()
    flaky = Flaky(*[down() for _ in range(50)])
    with pytest.raises(ServiceUnavailable):
        await make_policy(clock, attempts=50, deadline=2.0).call(flaky)
    assert clock.now - 1000.0 < 2.0
    assert len(flaky.timeouts) < 50


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
        await make_policy(clock, attempts=10, deadline=100.0, fail_max=2).call(flaky)
    assert len(flaky.timeouts) == 2
    assert info.value.retry_after == pytest.approx(10.0)


def test_circuit_open_is_not_transient() -> None:
    """Retrying an open breaker would only spin."""
    assert is_transient(down())
    assert not is_transient(CircuitOpen("logging", "open", 5.0))


async def test_every_retry_is_logged_with_attempt_delay_and_error() -> None:
    """Each retry writes a line with the attempt number, the delay and the error."""
    clock = FakeClock()
    with capture_logs() as logs:
        await make_policy(clock).call(Flaky(down("ECONNREFUSED")))
    retry = [e for e in logs if e["event"] == "retrying call"]
    assert retry == [{
        "event": "retrying call", "log_level": "warning", "downstream": "logging", "attempt": 1,
        "delay": 0.1, "error": "logging unavailable: ECONNREFUSED",
        "error_type": "ServiceUnavailable",
    }]


def test_policy_from_settings_uses_every_setting() -> None:
    """The facade's policy is what the environment says."""
    settings = Settings(retry_attempts=7, retry_deadline=9.0, rpc_timeout=0.3,
                        retry_backoff_base=0.2, retry_backoff_max=2.0, breaker_fail_max=4,
                        breaker_reset_timeout=12.0)
    policy = CallPolicy.from_settings("logging", settings)
    assert (policy.attempts, policy.deadline, policy.timeout, policy.backoff_base,
            policy.backoff_max) == (7, 9.0, 0.3, 0.2, 2.0)
    assert policy.breaker._breaker.fail_max == 4
    assert policy.breaker._breaker.reset_timeout == 12.0
