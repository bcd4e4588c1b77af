"""Which replica an attempt goes to: the less loaded of two, never the one that just failed.

Each replica of a downstream has its own breaker (per kind of call), so a
replica that fails is cut off alone while the others keep serving. The
choice is the "power of two choices" (Mitzenmacher; Envoy's
``LEAST_REQUEST``): two random replicas whose breakers are not open, the
one with fewer calls in flight; a retry avoids every replica an earlier
attempt of the same call failed on while another one admits calls (Envoy's
``previous_hosts`` retry predicate). Avoiding only the last one would not
do: with two replicas of three down, a retry would bounce between the two
dead ones, which fail fast and so look the least loaded.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from resilience.errors import CircuitOpen, ServiceUnavailable
from resilience.policies.breaker import AsyncCircuitBreaker, _Guard


@dataclass(eq=False)
class Target:
    """One replica of a downstream as one kind of call sees it: where it is, its breaker, its load."""

    url: str
    breaker: AsyncCircuitBreaker
    in_flight: int = 0


class Balancer:
    """Picks the target of each attempt among the replicas of one downstream."""

    def __init__(self, targets: Sequence[Target], rng: random.Random | None = None) -> None:
        if not targets:
            raise ValueError("a balancer needs at least one target")
        self.targets = tuple(targets)
        self.service = self.targets[0].breaker.service
        self._rng = rng or random.Random()

    def admit(self, avoid: Sequence[Target] = ()) -> tuple[Target, _Guard]:
        """The target for the next attempt, admitted by its breaker.

        ``avoid`` (where the earlier attempts failed, oldest first) is tried
        last, the one that failed longest ago first. Raises the
        ``CircuitOpen`` that ends soonest when no breaker admits the call.
        """
        if len(self.targets) == 1:
            only = self.targets[0]
            return only, only.breaker.guard()
        ready = [t for t in self.targets if t not in avoid and t.breaker.retry_after() == 0]
        ready = self._rng.sample(ready, min(2, len(ready)))  # random order too: ties go either way
        ready.sort(key=lambda t: t.in_flight)
        rest = [t for t in self.targets if t not in ready and t not in avoid]
        last = list(dict.fromkeys(reversed(avoid)))[::-1]  # each once, where it last failed
        refusal: CircuitOpen | None = None
        for target in [*ready, *rest, *last]:
            try:
                return target, target.breaker.guard()
            except CircuitOpen as exc:
                if refusal is None or (exc.retry_after or 0) < (refusal.retry_after or 0):
                    refusal = exc
        assert refusal is not None
        raise refusal

    def ready(self) -> bool:
        """Whether some replica's breaker would admit a call now."""
        return any(not target.breaker.refusing() for target in self.targets)

    def refuse(self) -> CircuitOpen:
        """A call not attempted because no breaker admits it: counted as not permitted by each."""
        for target in self.targets:
            target.breaker.calls["not_permitted"] += 1
        return self.refusal()

    def refusal(self, cause: Exception | None = None) -> CircuitOpen:
        """The CircuitOpen to raise when every breaker is open (after ``cause``, if it opened the
        last one): a call would be refused."""
        if cause is None:
            message = "circuit breaker open"
        else:
            reason = cause.reason if isinstance(cause, ServiceUnavailable) else type(cause).__name__
            message = f"circuit breaker open after {reason}"
        return CircuitOpen(self.service, message,
                           retry_after=min(target.breaker.retry_after() for target in self.targets))
