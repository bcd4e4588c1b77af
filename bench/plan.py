"""How long and how hard each phase runs; ``--quick`` scales everything down."""

from __future__ import annotations

from dataclasses import dataclass

# Messages stored before the throughput runs, so GET answers a small, equal list everywhere.
SMALL_STORE = 100


@dataclass(frozen=True)
class Plan:
    """The knobs of one run.

    ``duration`` and ``warmup`` are whole seconds per load run (wrk takes
    whole seconds); ``store_sizes`` are the store sizes at which GET latency
    and the logging process's RSS are read, the largest one giving the
    memory per message.
    """

    duration: int = 15
    warmup: int = 2
    connections: int = 32
    threads: int = 1
    tool: str = "wrk"
    store_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    get_samples: int = 11
    fill_concurrency: int = 32
    wrapper_calls: int = 5_000
    quick: bool = False

    @classmethod
    def build(cls, *, tool: str, quick: bool, duration: int | None, connections: int,
              threads: int) -> Plan:
        """The default plan, or the quick one; an explicit ``duration`` wins either way."""
        if quick:
            return cls(duration=duration or 3, warmup=1, connections=connections, threads=threads,
                       tool=tool, store_sizes=(1_000, 10_000), get_samples=5,
                       wrapper_calls=1_000, quick=True)
        return cls(duration=duration or cls.duration, connections=connections, threads=threads,
                   tool=tool)
