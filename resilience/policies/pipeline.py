"""The call policy for one kind of call to one downstream: retry, hedging, breaker, limit, timeout.

::

    retry (tenacity: bounded attempts AND total deadline, full jitter, Retry-After,
           within the downstream's retry budget)
      └─ hedging (a late try gets backup tries beside it, within the hedge budget)
           └─ circuit breaker (one per downstream and kind of call and replica)
                └─ concurrency limit (calls in flight to the downstream)
                     └─ per-try timeout, never past the deadline
                          └─ the call

Clock, sleep and randomness are injected so tests never sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from yarl import URL

from resilience.observability.logs import get_logger
from resilience.policies.balancer import Balancer, Target
from resilience.policies.breaker import AsyncCircuitBreaker, BreakerRule
from resilience.policies.budget import RetryBudget
from resilience.policies.hedging import Hedging
from resilience.policies.limit import ConcurrencyLimit
from resilience.policies.retry import (
    is_transient,
    stop_before_deadline,
    stop_unless_budget_allows,
    wait_full_jitter_or_retry_after,
)
from resilience.policies.window import Clock
from resilience.settings import CallPolicySettings

T = TypeVar("T")
log = get_logger("resilience.retry")
# Calls by whether they were retried and how they ended, as resilience4j's Retry counts them.
RETRY_OUTCOMES = ("successful_without_retry", "successful_with_retry", "failed_without_retry",
                  "failed_with_retry")


@dataclass
class CallPolicy:
    """How a client calls one downstream service.

    ``attempts`` and ``deadline`` bound the retry loop (``attempts=1`` means
    no retry); ``timeout`` bounds each attempt and is cut to what is left of
    the deadline. ``balancer`` picks the replica of each attempt (each with
    this kind of call's own breaker); ``limit`` and ``budget`` are shared by
    every policy of one downstream.
    """

    balancer: Balancer
    limit: ConcurrencyLimit | None = None
    budget: RetryBudget | None = None
    attempts: int = 5
    deadline: float = 3.0
    timeout: float = 1.0
    backoff_base: float = 0.05
    backoff_max: float = 1.0
    clock: Clock = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: Callable[[float, float], float] = field(default=random.uniform)
    #: Backup tries of a late attempt (``hedging.py``); None: one try per attempt.
    hedging: Hedging | None = None
    #: What the metrics call this policy (``<service>.<kind>``, as ``orders.write``).
    name: str = ""
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RETRY_OUTCOMES, 0))

    @property
    def service(self) -> str:
        """The downstream this policy calls."""
        return self.balancer.service

    @property
    def breakers(self) -> list[AsyncCircuitBreaker]:
        """This kind of call's breaker for each replica."""
        return [target.breaker for target in self.balancer.targets]

    async def call(self, attempt: Callable[[str, float], Awaitable[T]],
                   deadline: float | None = None) -> T:
        """Run ``attempt(url, timeout)`` under the policy and return its result.

        ``deadline`` (on the policy's clock) defaults to ``deadline`` seconds from now.
        Raises the last attempt's error when the retry gives up, ``CircuitOpen``
        at once when the breakers refuse, and any non-transient error unchanged.
        """
        failed_on: list[Target] = []  # where each failed attempt went, for the next to avoid
        if deadline is None:
            deadline = self.clock() + self.deadline
        if self.budget is not None:
            self.budget.record_call()
        stop = stop_after_attempt(self.attempts) | stop_before_deadline(deadline, self.clock)
        if self.budget is not None:
            stop = stop | stop_unless_budget_allows(self.budget, self.service)
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait_full_jitter_or_retry_after(self.backoff_base, self.backoff_max, self.rng),
            retry=retry_if_exception(is_transient),
            sleep=self.sleep,
            before_sleep=lambda state: self._log_retry(state, failed_on[-1].url),
            reraise=True,
        )
        try:
            result: T = await retrying(self._attempt, attempt, deadline, failed_on)
        except Exception:
            self._count(retrying, "failed")
            raise
        self._count(retrying, "successful")
        return result

    def _count(self, retrying: AsyncRetrying, outcome: str) -> None:
        retried = retrying.statistics.get("attempt_number", 1) > 1
        self.outcomes[f"{outcome}_with_retry" if retried else f"{outcome}_without_retry"] += 1

    def max_queued(self, per_request: int) -> int:
        """How many coalesced calls may wait for this policy: what the requests its concurrency
        limit lets out at once could carry, ``per_request`` each."""
        return (self.limit.limit if self.limit is not None else 1 << 16) * per_request

    def late_after(self) -> float:
        """How long an attempt may take before it is late (the hedge delay; the timeout unhedged)."""
        return self.timeout if self.hedging is None else self.hedging.delay()

    async def _attempt(self, attempt: Callable[[str, float], Awaitable[T]], deadline: float,
                       failed_on: list[Target]) -> T:
        """One attempt: a try, and with ``hedging`` its hedges once it is late."""
        if self.hedging is None:
            return await self._try(attempt, deadline, failed_on, [])
        busy: list[Target] = []
        return await self.hedging.race(lambda: self._try(attempt, deadline, failed_on, busy))

    async def _try(self, attempt: Callable[[str, float], Awaitable[T]], deadline: float,
                   failed_on: list[Target], busy: list[Target]) -> T:
        """One try on a replica its breaker admits (not one that failed or is busy with a try of
        the same attempt while another admits calls), under the limit, the timeout cut to what
        is left of the deadline; a failed try's replica is added to ``failed_on``."""
        target, guard = self.balancer.admit([*failed_on, *busy])
        started = self.clock()
        timeout = max(0.001, min(self.timeout, deadline - started))
        try:
            with guard:
                target.in_flight += 1
                busy.append(target)
                try:
                    with self.limit.slot() if self.limit is not None else nullcontext():
                        result = await attempt(target.url, timeout)
                finally:
                    target.in_flight -= 1
                    busy.remove(target)
        except Exception as exc:
            failed_on.append(target)
            if is_transient(exc) and not self.balancer.ready():
                # This failure opened the last breaker: end the retry loop now
                # instead of sleeping before an attempt that would be refused.
                raise self.balancer.refusal(exc) from exc
            raise
        if self.hedging is not None:
            self.hedging.tracker.record(self.clock() - started)
        return result

    def _log_retry(self, retry_state: RetryCallState, replica: str) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        log.warning(
            "retrying call",
            downstream=self.service,
            replica=replica,
            attempt=retry_state.attempt_number,
            delay=round(retry_state.upcoming_sleep, 4),
            error=str(exc),
            error_type=type(exc).__name__,
        )


def breaker_rule(settings: CallPolicySettings) -> BreakerRule:
    """The breakers' rule as configured (``BREAKER_*``)."""
    return BreakerRule(
        failure_rate=settings.breaker_failure_rate,
        slow_call_rate=settings.breaker_slow_call_rate,
        slow_call_duration=settings.breaker_slow_call_duration,
        window=settings.breaker_window,
        min_calls=settings.breaker_min_calls,
        fast_window=settings.breaker_fast_window,
        open_duration=settings.breaker_open_duration,
        open_duration_max=settings.breaker_open_duration_max,
        trial_calls=settings.breaker_trial_calls,
    )


def downstream_policies(service: str, urls: Sequence[str], settings: CallPolicySettings,
                        kinds: tuple[str, ...], *, attempts: int | None = None,
                        clock: Clock = time.monotonic,
                        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                        probe: Callable[[str], Callable[[], Awaitable[bool]]] | None = None,
                        ) -> dict[str, CallPolicy]:
    """A policy per kind of call to ``service`` at ``urls`` (its replicas), as configured: a
    breaker per kind and replica (a bulkhead, so heavy reads cannot refuse writes and one bad
    replica cannot refuse the others), hedging per kind (its own latencies), one concurrency
    limit, one retry budget and one hedge budget for all.

    ``attempts`` overrides the retry count (1: no retry); ``probe(url)`` makes the health probe
    an open breaker of that replica sends; ``clock`` and ``sleep`` drive the backoff, the
    deadlines, the breakers and their probes (a test passes ``FakeClock``'s).
    """
    limit = ConcurrencyLimit(service, settings.max_calls_in_flight)
    budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_floor,
                         settings.retry_budget_window, clock)
    hedge_budget = RetryBudget(settings.hedge_budget_ratio, settings.hedge_budget_floor,
                               settings.retry_budget_window, clock)
    rule = breaker_rule(settings)

    def breaker(kind: str, url: str) -> AsyncCircuitBreaker:
        name = f"{service}.{kind}" if len(urls) == 1 else f"{service}.{kind}@{URL(url).authority}"
        return AsyncCircuitBreaker(name, service=service, rule=rule, clock=clock,
                                   probe=None if probe is None else probe(url),
                                   probe_interval=settings.breaker_probe_interval, sleep=sleep)

    def hedging() -> Hedging | None:
        if settings.hedge_max == 0:
            return None
        return Hedging(hedge_budget, quantile=settings.hedge_quantile,
                       min_delay=settings.hedge_delay_min, max_delay=settings.hedge_delay_max,
                       max_hedges=settings.hedge_max, hedge_on=is_transient)

    return {
        kind: CallPolicy(
            balancer=Balancer([Target(url, breaker(kind, url)) for url in urls]),
            limit=limit,
            budget=budget,
            attempts=settings.retry_attempts if attempts is None else attempts,
            deadline=settings.retry_deadline,
            timeout=settings.rpc_timeout,
            backoff_base=settings.retry_backoff_base,
            backoff_max=settings.retry_backoff_max,
            clock=clock,
            sleep=sleep,
            hedging=hedging(),
            name=f"{service}.{kind}",
        )
        for kind in kinds
    }
