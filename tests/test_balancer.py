"""Choosing the replica for an attempt: the less loaded of two, open ones skipped, failed ones avoided."""

from __future__ import annotations

import random

import pytest

from resilience import AsyncCircuitBreaker, BreakerRule, CircuitOpen, ServiceUnavailable
from resilience.policies.balancer import Balancer, Target
from resilience.testing import FakeClock

RULE = BreakerRule(min_calls=1, open_duration=5.0)


def targets(clock: FakeClock, count: int) -> list[Target]:
    return [Target(f"http://replica-{i}", AsyncCircuitBreaker(f"logging.write@{i}", service="logging",
                                                               rule=RULE, clock=clock))
            for i in range(count)]


def open_breaker(target: Target) -> None:
    with pytest.raises(ServiceUnavailable), target.breaker.guard():
        raise ServiceUnavailable("logging", "refused")
    assert target.breaker.state == "open"


def test_a_single_target_is_always_the_one() -> None:
    """With one replica there is no choice to make."""
    only = targets(FakeClock(), 1)
    target, guard = Balancer(only).admit(avoid=[only[0]])
    with guard:
        pass
    assert target is only[0]


def test_the_less_loaded_of_two_is_chosen() -> None:
    """Of the two replicas drawn, the one with fewer calls in flight gets the attempt."""
    two = targets(FakeClock(), 2)
    two[0].in_flight = 3
    for _ in range(20):
        target, guard = Balancer(two, random.Random(1)).admit()
        with guard:
            pass
        assert target is two[1]


def test_load_spreads_over_every_replica() -> None:
    """Two random picks among three replicas reach each of them."""
    three = targets(FakeClock(), 3)
    balancer = Balancer(three, random.Random(2))
    chosen = set()
    for _ in range(60):
        target, guard = balancer.admit()
        with guard:
            chosen.add(target.url)
    assert chosen == {t.url for t in three}


def test_a_replica_with_an_open_breaker_is_skipped() -> None:
    """No attempt goes to a replica whose breaker is open while another admits calls."""
    three = targets(FakeClock(), 3)
    open_breaker(three[0])
    balancer = Balancer(three, random.Random(3))
    for _ in range(30):
        target, guard = balancer.admit()
        with guard:
            pass
        assert target is not three[0]


def test_a_retry_avoids_the_replica_that_just_failed() -> None:
    """``avoid`` is never chosen while another replica admits calls, and is the last resort."""
    clock = FakeClock()
    two = targets(clock, 2)
    balancer = Balancer(two, random.Random(4))
    for _ in range(20):
        target, guard = balancer.admit(avoid=[two[0]])
        with guard:
            pass
        assert target is two[1]
    clock.advance(RULE.window)  # those successes age out
    open_breaker(two[1])
    target, guard = balancer.admit(avoid=[two[0]])
    with guard:
        pass
    assert target is two[0]


def test_a_retry_avoids_every_replica_the_call_failed_on() -> None:
    """With two of three replicas failing, the third attempt goes to the third replica, however
    lightly loaded the failed ones look; with all three failed, the one that failed longest ago
    is tried first."""
    three = targets(FakeClock(), 3)
    three[2].in_flight = 50  # the live replica is the busy one: dead ones fail fast
    for seed in range(20):
        balancer = Balancer(three, random.Random(seed))
        target, guard = balancer.admit(avoid=[three[0], three[1]])
        with guard:
            pass
        assert target is three[2]
        target, guard = balancer.admit(avoid=[three[1], three[2], three[1]])
        with guard:
            pass
        assert target is three[0]
        target, guard = balancer.admit(avoid=[three[0], three[1], three[2], three[0]])
        with guard:
            pass
        assert target is three[1]


def test_every_breaker_open_refuses_with_the_soonest_trial() -> None:
    """When no replica admits calls, CircuitOpen says when the first one will."""
    clock = FakeClock()
    two = targets(clock, 2)
    open_breaker(two[0])
    clock.advance(2.0)
    open_breaker(two[1])
    with pytest.raises(CircuitOpen) as info:
        Balancer(two).admit()
    assert info.value.retry_after == pytest.approx(3.0)
