"""The faults: the schedule of network phases on the logging path, and the service killers."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from resilience.testing.cluster import Cluster

from .config import KILL_JITTER, LOGGING_KILLS_UNTIL, SoakConfig
from .proxy import SoakProxy

#: Share of requests answered 503 in the ``errors`` phase, and of replies dropped in ``drops``.
#: Low enough that five failures in a row (which open the facade's breaker) stay rare under
#: load, so these phases exercise retries and deduplication; ``refuse`` and ``slow`` open it.
ERROR_RATE = 0.15
DROP_RATE = 0.1


@dataclass
class ChaosState:
    """What the chaos tasks did, and when the last logging restart completed."""

    started: float
    phases: Counter[str] = field(default_factory=Counter)
    phase: str = "clean"
    messages_kills: int = 0
    logging_kills: int = 0
    #: Whether the logging service is being killed and restarted right now.
    logging_down: bool = False
    #: ``time.monotonic()`` when the last restarted logging service answered its health check.
    last_logging_restart: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def note(self, event: str) -> None:
        """Add ``event`` to the timeline, in seconds since the load started."""
        self.timeline.append((round(time.monotonic() - self.started, 2), event))


async def wait_for_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; return whether it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _apply_phase(proxy: SoakProxy, phase: str, slow_delay: float) -> None:
    """Put the logging network path into ``phase``."""
    proxy.clear()
    if phase == "refuse":
        await proxy.refuse()
        return
    await proxy.resume()
    if phase == "slow":
        proxy.delay = slow_delay  # every attempt outlives RPC_TIMEOUT; the write still lands later
    elif phase == "errors":
        proxy.error_rate = ERROR_RATE
    elif phase == "drops":
        proxy.drop_rate = DROP_RATE
    elif phase == "mixed":
        proxy.delay = slow_delay / 5
        proxy.error_rate = ERROR_RATE / 2
        proxy.drop_rate = DROP_RATE / 2


def phase_cycle(phases: Sequence[str], rng: random.Random) -> list[str]:
    """One cycle of network phases: every fault once, in random order, each followed by ``clean``
    (when ``clean`` is one of ``phases``) so that every fault is also seen to heal."""
    faults = [phase for phase in phases if phase != "clean"]
    cycle = rng.sample(faults, len(faults))
    if "clean" not in phases:
        return cycle
    return [step for fault in cycle for step in (fault, "clean")] or ["clean"]


async def network_chaos(proxy: SoakProxy, rng: random.Random, config: SoakConfig, slow_delay: float,
                        stop: asyncio.Event, chaos: ChaosState) -> None:
    """Cycle the logging network path through the phases, in a new shuffled order each cycle."""
    while not stop.is_set():
        for phase in phase_cycle(config.phases, rng):
            await _apply_phase(proxy, phase, slow_delay)
            chaos.phase = proxy.phase = phase
            chaos.phases[phase] += 1
            chaos.note(f"network {phase}")
            if await wait_for_stop(stop, rng.uniform(config.phase_min, config.phase_max)):
                break
    await proxy.heal()


async def messages_chaos(cluster: Cluster, lock: asyncio.Lock, rng: random.Random, config: SoakConfig,
                         stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL the messages service every so often and restart it after a short while."""
    while not await wait_for_stop(stop, rng.uniform(*KILL_JITTER) * config.kill_messages_every):
        async with lock:
            await asyncio.to_thread(cluster.kill, "messages")
        chaos.messages_kills += 1
        chaos.note("messages SIGKILL")
        await asyncio.sleep(rng.uniform(0.1, config.messages_downtime))
        async with lock:
            await asyncio.to_thread(cluster.start, "messages")
        chaos.note("messages restarted")


async def logging_chaos(cluster: Cluster, lock: asyncio.Lock, rng: random.Random, config: SoakConfig,
                        stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL and restart the logging service: at least once, and only in the first part of the run.

    The rest is kept for messages that must all survive: those sent after the
    last restart completed. Whether a kill is due before the cutoff is decided
    before waiting for it, so a busy machine cannot push the first kill past it
    (``SoakConfig.validate`` makes sure the first one is due before it).
    """
    cutoff = chaos.started + config.duration * LOGGING_KILLS_UNTIL
    while True:
        delay = rng.uniform(*KILL_JITTER) * config.kill_logging_every
        if chaos.logging_kills and time.monotonic() + delay > cutoff:
            break
        if await wait_for_stop(stop, delay):
            return
        chaos.logging_down = True
        async with lock:
            await asyncio.to_thread(cluster.kill, "logging")
            chaos.logging_kills += 1
            chaos.note("logging SIGKILL")
            await asyncio.to_thread(cluster.start, "logging")
        chaos.last_logging_restart = time.monotonic()
        chaos.logging_down = False
        chaos.note("logging restarted (empty store)")
    await stop.wait()
