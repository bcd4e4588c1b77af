"""What a run is asked to do (``Plan``), where it ran (``Machine``) and what it measured: plain data.

``Report`` holds every figure, keyed by system and verb, and derives the
ratios to the bare handler that the targets are defined on.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

# Messages stored before the throughput runs, so GET answers a small, equal list everywhere.
SMALL_STORE = 100
VERBS = ("GET", "POST")
REPLICA_COUNTS = (1, 2, 3)


def redis_system(replicas: int) -> str:
    """The key of the facade over ``replicas`` logging replicas on Redis in ``Report.load``."""
    return f"redis-{replicas}"


#: The key of the facade over one logging replica on Redis with events on (three NATS servers,
#: two messages instances) in ``Report.load``.
EVENTS_SYSTEM = "events-1"


def bare_beside(system: str) -> str:
    """The key of the bare handler's runs taken in turn with ``system``'s in ``Report.load``
    (the facade's are ``bare`` itself: the Throughput table's; a bare system is its own)."""
    if system.startswith("bare"):
        return system
    return "bare" if system == "facade" else f"bare beside {system}"


@dataclass(frozen=True)
class Plan:
    """The knobs of one run.

    ``duration`` and ``warmup`` are whole seconds per load run (wrk takes
    whole seconds); a run is ``rounds`` slices of it, taken in turn with the
    bare handler's (see ``slice_seconds``); ``store_sizes`` are the store sizes at which GET latency
    and the logging process's RSS are read, the largest one giving the
    memory per message.
    """

    duration: int = 15
    warmup: int = 2
    rounds: int = 3
    connections: int = 32
    tool: str = "wrk"
    store_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    get_samples: int = 11
    fill_concurrency: int = 32
    wrapper_calls: int = 5_000
    sequential_posts: int = 2_100
    quick: bool = False

    @property
    def sequential_per_round(self) -> int:
        """Sequential POSTs per system in each round: at least one."""
        return max(1, self.sequential_posts // self.rounds)

    @property
    def slice_seconds(self) -> int:
        """Seconds of each round's slice of a run: at least one."""
        return max(1, self.duration // self.rounds)

    @classmethod
    def build(cls, *, tool: str, quick: bool, duration: int | None, connections: int) -> Plan:
        """The default plan, or the quick one; an explicit ``duration`` wins either way."""
        if quick:
            return cls(duration=duration or 3, warmup=1, connections=connections, tool=tool,
                       store_sizes=(1_000, 10_000), get_samples=5, wrapper_calls=1_000,
                       sequential_posts=300, quick=True)
        return cls(duration=duration or cls.duration, connections=connections, tool=tool)


@dataclass(frozen=True)
class Machine:
    """The machine and software under test, one table row per field."""

    cpu: str
    cores: int
    python: str
    libraries: str
    load_tool: str
    date: str

    @classmethod
    def describe(cls, load_tool: str) -> Machine:
        """This machine; ``load_tool`` says which load generator drove the endpoints."""
        return cls(
            cpu=_cpu_model(),
            # The affinity mask: the cores this process may run on, which a container may narrow.
            cores=len(os.sched_getaffinity(0)),
            python=f"{platform.python_implementation()} {platform.python_version()}",
            libraries=", ".join(f"{name} {version(name)}" for name in ("aiohttp", "uvloop", "orjson")),
            load_tool=load_tool,
            date=datetime.date.today().isoformat(),
        )


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` of ``/proc/cpuinfo`` (psutil does not give it), else the platform's."""
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else ():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


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

    @classmethod
    def merged(cls, rounds: list[LoadResult]) -> LoadResult:
        """Slices of one run as one: requests, errors and seconds added up; p50 and p99 the
        median of the slices' own (the tool reports percentiles, not the latencies)."""
        return cls(requests=sum(r.requests for r in rounds), seconds=sum(r.seconds for r in rounds),
                   http_errors=sum(r.http_errors for r in rounds),
                   socket_errors=sum(r.socket_errors for r in rounds),
                   p50_ms=statistics.median(r.p50_ms for r in rounds),
                   p99_ms=statistics.median(r.p99_ms for r in rounds))


@dataclass(frozen=True)
class StoreResult:
    """The in-memory logging service as its store grows: RSS and GET /facade latency per size."""

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
class RedisResult:
    """The Redis phase: why it was ``skipped``, or the server's version and, per replica count,
    the messages ``stored`` during that cluster's runs and Redis's ``used_memory`` per message
    stored (what emptying it gave back)."""

    skipped: str | None = None
    version: str = ""
    stored: dict[int, int] = field(default_factory=dict)
    bytes_per_message: dict[int, float] = field(default_factory=dict)
    #: Why the run with events on did not happen (no nats-server), or None.
    events_skipped: str | None = None
    #: (redis_system(1) | EVENTS_SYSTEM, verb) -> process -> CPU microseconds per request: what
    #: the same cluster spends with and without events.
    cpu_us: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Everything one run measured, and where."""

    machine: Machine
    plan: Plan
    # (system, verb) -> the load run; systems: "bare", "facade" (logging in memory),
    # redis_system(n) and the bare handler run in turn with it, bare_beside(redis_system(n)).
    load: dict[tuple[str, str], LoadResult]
    # ("bare" | "facade", verb) -> process name -> CPU microseconds (user + system) per request.
    cpu_us: dict[tuple[str, str], dict[str, float]]
    store: StoreResult
    wrapper: WrapperResult
    redis: RedisResult
    # "bare" | "facade" -> (median, p99) milliseconds of one client's sequential POSTs.
    sequential_ms: dict[str, tuple[float, float]] = field(default_factory=dict)

    def ratio(self, system: str, verb: str) -> float:
        """``system``'s rate for ``verb`` as a share of the bare handler's runs beside it."""
        bare = self.load[(bare_beside(system), verb)].rps
        return self.load[(system, verb)].rps / bare if bare > 0 else 0.0

    def cpu_total_us(self, system: str, verb: str) -> float:
        """CPU per request summed over every process serving ``system``."""
        return sum(self.cpu_us[(system, verb)].values())
