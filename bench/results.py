"""The figures one benchmark run produces, as plain frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field

from .machine import Machine
from .plan import Plan


@dataclass(frozen=True)
class LoadResult:
    """One load run against one endpoint: what completed, how fast, how slowly at the tail."""

    requests: int
    seconds: float
    http_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        """Successful (non-4xx/5xx) responses per second."""
        return (self.requests - self.http_errors) / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.http_errors + self.socket_errors


@dataclass(frozen=True)
class StoreResult:
    """The logging service as its store grows: RSS per message and GET /facade latency."""

    baseline_rss: int
    rss: dict[int, int] = field(default_factory=dict)
    get_median_ms: dict[int, float] = field(default_factory=dict)

    @property
    def largest(self) -> int:
        return max(self.rss)

    @property
    def bytes_per_message(self) -> float:
        """RSS growth of the logging process divided by the messages stored (the largest size)."""
        return (self.rss[self.largest] - self.baseline_rss) / self.largest


@dataclass(frozen=True)
class WrapperResult:
    """Median microseconds per sequential call, raw aiohttp and through ``RpcProxy``.

    ``*_us`` are wall time, ``*_cpu_us`` the calling process's CPU time;
    ``policy_only_us`` is ``CallPolicy.call`` around an attempt that does nothing;
    ``metrics_only_us`` what the request metrics add to one request.
    """

    calls: int
    raw_us: float
    wrapped_us: float
    raw_cpu_us: float
    wrapped_cpu_us: float
    policy_only_us: float
    metrics_only_us: float

    @property
    def overhead_us(self) -> float:
        return self.wrapped_us - self.raw_us

    @property
    def overhead_share(self) -> float:
        """The wrapper's extra wall time as a share of a raw call's."""
        return self.overhead_us / self.raw_us


@dataclass(frozen=True)
class Report:
    """Everything one run measured, and where."""

    machine: Machine
    plan: Plan
    load: dict[tuple[str, str], LoadResult]
    # (target, verb) -> process name -> CPU microseconds (user + system) per request.
    cpu_us: dict[tuple[str, str], dict[str, float]]
    store: StoreResult
    wrapper: WrapperResult

    def ratio(self, verb: str) -> float:
        """The facade's rate for ``verb`` as a share of the bare handler's."""
        bare = self.load[("bare", verb)].rps
        return self.load[("facade", verb)].rps / bare if bare > 0 else 0.0

    def cpu_total_us(self, target: str, verb: str) -> float:
        """CPU per request summed over every process serving ``target``."""
        return sum(self.cpu_us[(target, verb)].values())
