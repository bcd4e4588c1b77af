"""A cap on the calls in flight to one downstream (Envoy's ``max_requests``).

Without it, a downstream that hangs (SIGSTOP, a full disk) holds every
request that reaches it until its timeout, and more keep arriving: memory
and sockets grow with the arrival rate. Past the cap a call is refused at
once with ``Overloaded`` (503 with Retry-After to the client), before any
network, so the caller sheds instead of queueing without bound.
"""

from __future__ import annotations

from types import TracebackType

from resilience.errors import Overloaded


class ConcurrencyLimit:
    """At most ``limit`` calls to ``service`` at once; ``with limit.slot(): ...`` holds one."""

    def __init__(self, service: str, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.service = service
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    def slot(self) -> ConcurrencyLimit:
        """Take a slot for the ``with`` block, or raise ``Overloaded`` if none is free."""
        if self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(self.service, f"{self.limit} calls in flight already", retry_after=1.0)
        self.in_flight += 1
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.in_flight -= 1
