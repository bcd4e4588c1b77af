"""The faults: the schedule of network phases on the logging path, and the process killers
(messages, logging or its replicas, redis-server, the event stream's leader)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from resilience.testing.nats_server import NatsCluster
from resilience.testing.processes import poll_until
from resilience.testing.redis_server import RedisServer
from scripts.cluster import Cluster

from .config import KILL_JITTER, LOGGING_KILLS_UNTIL, MIN_REPLICA_ROUNDS, PAIR_ROUND_EVERY, SoakConfig
from .proxy import SoakProxy

#: Share of requests answered 503 in the ``errors`` phase, and of replies dropped in ``drops``.
#: Low enough that five failures in a row (which open the facade's breaker) stay rare under
#: load, so these phases exercise retries and deduplication; ``refuse`` and ``slow`` open it.
ERROR_RATE = 0.15
DROP_RATE = 0.1
#: redis-server's name in the fault counts and the timeline.
REDIS = "redis-server"


@dataclass
class ChaosState:
    """What the chaos tasks did, and when the last process on the write path came back."""

    started: float
    phases: Counter[str] = field(default_factory=Counter)
    phase: str = "clean"
    #: SIGKILLs by process: ``messages`` (or ``messages1``...), ``logging`` (or ``logging1``...),
    #: ``redis-server``, ``nats1``...
    kills: Counter[str] = field(default_factory=Counter)
    #: Rounds of replica kills, and how many of them killed two replicas at once.
    replica_rounds: int = 0
    pair_rounds: int = 0
    #: Processes on the write path (logging, its replicas, redis-server, NATS servers) killed and
    #: not serving yet.
    down: set[str] = field(default_factory=set)
    #: ``time.monotonic()`` when the last restarted process on the write path served again.
    last_restart: float | None = None
    #: ``time.monotonic()`` just before redis-server was last SIGKILLed.
    last_store_kill: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def note(self, event: str) -> None:
        """Add ``event`` to the timeline, in seconds since the load started."""
        self.timeline.append((round(time.monotonic() - self.started, 2), event))

    def killed(self, name: str) -> None:
        """Count and note the SIGKILL of ``name``, just sent (a process on the write path is put in
        ``down`` before, so that nothing counts as checked while it is being killed)."""
        self.kills[name] += 1
        self.note(f"{name} SIGKILL")

    def restarted(self, name: str, how: str = "") -> None:
        """Note that ``name`` serves again (``how``: what it came back with); one on the write path
        leaves ``down`` and moves ``last_restart``."""
        if name in self.down:
            self.down.discard(name)
            self.last_restart = time.monotonic()
        self.note(f"{name} restarted{f' ({how})' if how else ''}")

    @property
    def nats_kills(self) -> int:
        """SIGKILLs of NATS servers (each the event stream's leader when it was killed)."""
        return sum(n for name, n in self.kills.items() if name.startswith("nats"))

    @property
    def replica_kills(self) -> int:
        """SIGKILLs of logging replicas (named ``logging1``...)."""
        return sum(n for name, n in self.kills.items() if name.startswith("logging") and name != "logging")


def missing_faults(config: SoakConfig, chaos: ChaosState) -> list[str]:
    """The faults this run is there to survive that did not happen (yet): empty when all did."""
    missing = []
    if config.kill_logging and not chaos.kills["logging"]:
        missing.append("a logging SIGKILL")
    if config.cluster:
        if not chaos.replica_rounds:
            missing.append("a logging replica SIGKILL")
        if not chaos.pair_rounds:
            missing.append("two logging replicas SIGKILLed at once")
        if not chaos.kills[REDIS]:
            missing.append("a redis-server SIGKILL")
        if not chaos.nats_kills:
            missing.append("a SIGKILL of the event stream's leader")
    return missing


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
    """SIGKILL the messages service (one of its instances) every so often and restart it after a
    short while."""
    while not await wait_for_stop(stop, rng.uniform(*KILL_JITTER) * config.kill_messages_every):
        victim = rng.choice(cluster.messages_instances)
        async with lock:
            await asyncio.to_thread(cluster.kill, victim)
        chaos.killed(victim)
        await asyncio.sleep(rng.uniform(0.1, config.messages_downtime))
        async with lock:
            await asyncio.to_thread(cluster.start, victim)
        chaos.restarted(victim)


def kill_due(done: bool, delay: float, cutoff: float) -> bool:
    """Whether to wait ``delay`` for one more kill: always until ``done`` (the run's minimum), and
    then only for kills due before ``cutoff``.

    This is decided before waiting, so a busy machine cannot push the minimum past the cutoff
    (``SoakConfig.validate`` makes sure it is due before it).
    """
    return not done or time.monotonic() + delay <= cutoff


async def logging_chaos(cluster: Cluster, lock: asyncio.Lock, rng: random.Random, config: SoakConfig,
                        stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL and restart the logging service: at least once, and only in the first part of the run.

    The rest is kept for messages that must all survive: those sent after the
    last restart completed.
    """
    cutoff = chaos.started + config.duration * LOGGING_KILLS_UNTIL
    while kill_due(bool(chaos.kills["logging"]),
                   delay := rng.uniform(*KILL_JITTER) * config.kill_logging_every, cutoff):
        if await wait_for_stop(stop, delay):
            return
        chaos.down.add("logging")
        async with lock:
            await asyncio.to_thread(cluster.kill, "logging")
            chaos.killed("logging")
            await asyncio.to_thread(cluster.start, "logging")
        chaos.restarted("logging", "empty store")
    await stop.wait()


def round_victims(replicas: Sequence[str], round_index: int, rng: random.Random) -> list[str]:
    """The replicas round ``round_index`` (from 0) kills: two at once in the second round and every
    ``PAIR_ROUND_EVERY``-th after it, one otherwise; never all of them."""
    count = 2 if round_index % PAIR_ROUND_EVERY == 1 and len(replicas) > 2 else 1
    return sorted(rng.sample(list(replicas), count))


async def replica_chaos(cluster: Cluster, lock: asyncio.Lock, rng: random.Random, config: SoakConfig,
                        stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL logging replicas in rounds, one or two at once, and restart them after a short while.

    One task kills them all, one round at a time, so at least one replica is
    always up (what the facade needs to acknowledge anything); the first
    ``MIN_REPLICA_ROUNDS`` rounds come whatever the machine's speed, the
    others only if due within the duration.
    """
    cutoff = chaos.started + config.duration
    while kill_due(chaos.replica_rounds >= MIN_REPLICA_ROUNDS,
                   delay := rng.uniform(*KILL_JITTER) * config.kill_replica_every, cutoff):
        if await wait_for_stop(stop, delay):
            return
        victims = round_victims(cluster.replicas, chaos.replica_rounds, rng)
        chaos.down.update(victims)
        async with lock:
            for name in victims:
                await asyncio.to_thread(cluster.kill, name)
                chaos.killed(name)
        chaos.replica_rounds += 1
        chaos.pair_rounds += len(victims) > 1
        await asyncio.sleep(rng.uniform(0.1, config.replica_downtime))
        async with lock:
            await asyncio.to_thread(start_together, cluster, victims)
        for name in victims:
            chaos.restarted(name)
    await stop.wait()


async def redis_chaos(redis: RedisServer, rng: random.Random, config: SoakConfig, stop: asyncio.Event,
                      chaos: ChaosState) -> None:
    """SIGKILL redis-server (at least once, then while due within the duration) and restart it on
    the same port and folder: it reloads its append-only file before it answers PING."""
    cutoff = chaos.started + config.duration
    while kill_due(bool(chaos.kills[REDIS]),
                   delay := rng.uniform(*KILL_JITTER) * config.kill_redis_every, cutoff):
        if await wait_for_stop(stop, delay):
            return
        chaos.down.add(REDIS)
        chaos.last_store_kill = time.monotonic()
        await asyncio.to_thread(redis.kill)
        chaos.killed(REDIS)
        await asyncio.sleep(rng.uniform(0.1, config.redis_downtime))
        await asyncio.to_thread(redis.start)
        chaos.restarted(REDIS, "append-only file reloaded")
    await stop.wait()


async def nats_chaos(nats: NatsCluster, stream: str, rng: random.Random, config: SoakConfig,
                     stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL the server leading the event stream (at least once, then while due within the
    duration) and restart it on the same ports and folder; the others elect a new leader."""
    cutoff = chaos.started + config.duration
    while kill_due(bool(chaos.nats_kills),
                   delay := rng.uniform(*KILL_JITTER) * config.kill_nats_every, cutoff):
        if await wait_for_stop(stop, delay):
            return
        leader = await asyncio.to_thread(stream_leader, nats, stream)
        chaos.down.add(leader)
        await asyncio.to_thread(nats.kill, leader)
        chaos.killed(leader)
        await asyncio.sleep(rng.uniform(0.1, config.nats_downtime))
        await asyncio.to_thread(nats.start, leader)
        chaos.restarted(leader, "was the stream's leader")
    await stop.wait()


def stream_leader(nats: NatsCluster, stream: str, timeout: float = 30.0) -> str:
    """The server leading ``stream``, once one does (after a kill, the others elect one)."""
    found: list[str] = []

    def elected() -> bool:
        try:
            found.append(nats.stream_leader(stream))
        except LookupError:
            return False
        return True

    poll_until(elected, timeout, f"a leader of stream {stream!r}")
    return found[-1]


def start_together(cluster: Cluster, names: Sequence[str]) -> None:
    """Start the services ``names`` at once and wait until each serves."""
    for name in names:
        cluster.start(name, wait=False)
    for name in names:
        cluster.wait_until_serving(name)
