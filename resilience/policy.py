"""The call policy for one downstream service: retry, around a breaker, around a timeout.

::

    retry (tenacity: bounded attempts AND total deadline, full jitter, Retry-After)
      └─ circuit breaker (one per downstream service)
           └─ per-attempt timeout, never past the deadline
                └─ the call

Clock, sleep and randomness are injected so tests never sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .breaker import AsyncCircuitBreaker, Clock
from .errors import CircuitOpen, ServiceUnavailable
from .settings import Settings

T = TypeVar("T")
log = structlog.get_logger("resilience.retry")


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: the service was unreachable, slow or overloaded, but not refused by
    an open breaker (retrying that would only spin)."""
    return isinstance(exc, ServiceUnavailable) and not isinstance(exc, CircuitOpen)


class wait_full_jitter_or_retry_after(wait_base):
    """Full-jitter exponential backoff, or the server's Retry-After if that is longer.

    delay = uniform(0, min(cap, base * 2 ** (attempt - 1))), the "Full Jitter" of
    https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/;
    a Retry-After hint (``ServiceUnavailable.retry_after``) raises it, capped at ``cap``.
    """

    def __init__(self, base: float, cap: float, rng: Callable[[float, float], float]) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = min(self.cap, self.base * 2 ** (retry_state.attempt_number - 1))
        delay = self.rng(0.0, ceiling)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            delay = max(delay, min(float(hint), self.cap))
        return delay


class stop_before_deadline(stop_base):
    """Stop when the next attempt would start at or after ``deadline`` on ``clock``."""

    def __init__(self, deadline: float, clock: Clock) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline


@dataclass
class CallPolicy:
    """How the facade calls one downstream service.

    ``attempts`` and ``deadline`` bound the retry loop (``attempts=1`` means
    no retry); ``timeout`` bounds each attempt and is cut to what is left of
    the deadline.
    """

    breaker: AsyncCircuitBreaker
    attempts: int = 5
    deadline: float = 3.0
    timeout: float = 1.0
    backoff_base: float = 0.05
    backoff_max: float = 1.0
    clock: Clock = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: Callable[[float, float], float] = field(default=random.uniform)

    @classmethod
    def from_settings(cls, service: str, settings: Settings, *, attempts: int | None = None,
                      clock: Clock = time.monotonic) -> CallPolicy:
        """The policy for calls to ``service`` as configured (``attempts`` overrides the retry count)."""
        return cls(
            breaker=AsyncCircuitBreaker(service, fail_max=settings.breaker_fail_max,
                                        reset_timeout=settings.breaker_reset_timeout, clock=clock),
            attempts=settings.retry_attempts if attempts is None else attempts,
            deadline=settings.retry_deadline,
            timeout=settings.rpc_timeout,
            backoff_base=settings.retry_backoff_base,
            backoff_max=settings.retry_backoff_max,
            clock=clock,
        )

    async def call(self, attempt: Callable[[float], Awaitable[T]]) -> T:
        """Run ``attempt(timeout)`` under the policy and return its result.

        Raises the last attempt's error when the retry gives up, ``CircuitOpen``
        at once when the breaker refuses, and any non-transient error unchanged.
        """
        deadline = self.clock() + self.deadline
        # Fast path: most calls succeed at once, and building a tenacity loop costs
        # more than a breaker and a timeout. Only a transient failure enters the loop,
        # which replays it as its first attempt, so numbering, waits and stops agree.
        try:
            return await self._attempt(attempt, deadline)
        except Exception as exc:
            if self.attempts == 1 or not is_transient(exc):
                raise
            first_failure: Exception | None = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | stop_before_deadline(deadline, self.clock),
            wait=wait_full_jitter_or_retry_after(self.backoff_base, self.backoff_max, self.rng),
            retry=retry_if_exception(is_transient),
            sleep=self.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt_state in retrying:
            with attempt_state:
                if first_failure is not None:
                    replayed, first_failure = first_failure, None
                    raise replayed
                return await self._attempt(attempt, deadline)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _attempt(self, attempt: Callable[[float], Awaitable[T]], deadline: float) -> T:
        """One attempt under the breaker, with the timeout cut to what is left of the deadline."""
        with self.breaker.guard():
            return await attempt(max(0.001, min(self.timeout, deadline - self.clock())))

    def _log_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        log.warning(
            "retrying call",
            downstream=self.breaker.service,
            attempt=retry_state.attempt_number,
            delay=round(retry_state.upcoming_sleep, 4),
            error=str(exc),
            error_type=type(exc).__name__,
        )
