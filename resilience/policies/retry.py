"""Retry strategies for tenacity: what is worth another attempt, how long to wait, when to stop.

Each is a small object with an injected clock or budget, as tenacity's own
strategies are; ``pipeline.CallPolicy`` composes them.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from resilience.errors import CircuitOpen, Overloaded, ServiceUnavailable
from resilience.observability.logs import get_logger
from resilience.policies.budget import RetryBudget
from resilience.policies.window import Clock

log = get_logger("resilience.retry")


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: the service was unreachable, slow or overloaded, but not refused by
    an open breaker or the concurrency limit (retrying those would only spin)."""
    return isinstance(exc, ServiceUnavailable) and not isinstance(exc, (CircuitOpen, Overloaded))


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


class stop_unless_budget_allows(stop_base):
    """Stop when the retry budget refuses the retry (checked last: it spends a retry)."""

    def __init__(self, budget: RetryBudget, service: str) -> None:
        self.budget = budget
        self.service = service

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.budget.try_retry():
            return False
        log.warning("retry refused by the retry budget", downstream=self.service,
                    attempt=retry_state.attempt_number)
        return True
