"""The retry budget: retries may add at most a share of the calls, plus a small floor.

Finagle's ``RetryBudget`` (and Envoy's ``retry_budget``): per-request retry
limits alone let an outage multiply the load by the attempt count, exactly
when the downstream can least take it. A budget allows, over the last
``window`` seconds, ``ratio`` retries per first attempt plus ``floor`` retries
a second, so a lone client still gets its retries and a storm does not.
The default ratio (0.5) absorbs 30 % random loss, which costs about 0.43
retries per call (0.3 + 0.3² + ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from resilience.policies.window import Clock, SlidingWindow


@dataclass
class RetryBudget:
    """How many retries the calls of the last ``window`` seconds have earned."""

    ratio: float = 0.5
    floor: float = 10.0
    window: float = 10.0
    clock: Clock = time.monotonic
    refused: int = 0
    _counts: SlidingWindow = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._counts = SlidingWindow(self.window, self.window / 10, 2, self.clock)

    def record_call(self) -> None:
        """A first attempt was made: it earns ``ratio`` of a retry."""
        self._counts.add(1)

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it; False (and counted as refused) if not."""
        calls, retries = self._counts.sums()
        if retries >= self.ratio * calls + self.floor * self._counts.span:
            self.refused += 1
            return False
        self._counts.add(0, 1)
        return True
