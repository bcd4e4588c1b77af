"""One benchmark run: start every process, run the phases in order, stop every process.

1. The bare handler and the three services (logging in memory) start on free
   ports on 127.0.0.1. Each system gets the same small store, then GET and
   POST load, each after a warm-up of the same load, in rounds that take the
   two systems in turn (``throughput``), with each serving process's CPU time
   read around its slices, and one client's sequential POSTs, in rounds too
   (``single_requests``: the latency of a single request).
2. Once the facade has drained, the logging service restarts empty and, as
   soon as the facade reaches it again, is filled through /rpc/log, reading
   its RSS and GET /facade latency at each size.
3. The wrapper's per-call cost, in this process, against that logging service.
4. With redis-server on PATH, on one redis-server (the shipped ``redis.conf``),
   emptied after each: the facade over 1, 2 and 3 logging replicas, each
   driven by the same ``throughput`` in turn with a fresh bare handler, and
   Redis's memory per message stored. Then, with nats-server installed, the
   facade over 1 replica with events on (three NATS servers, two messages
   instances on the stream), the same way; with and without events, the CPU
   each process spends per request.
   Without them, the phase (or its events run) is skipped and the report says why.

Every process is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import psutil
import uvloop

from logging_service.settings import MEMORY_STORE
from resilience.testing.nats_server import ABSENT as NATS_ABSENT
from resilience.testing.nats_server import NatsCluster, server_binary
from resilience.testing.processes import is_ready, poll_until
from resilience.testing.redis_server import RedisServer
from scripts import REDIS_CONF
from scripts.cluster import Cluster

from .bare import bare_server
from .load import drive, percentile
from .results import (
    EVENTS_SYSTEM,
    REPLICA_COUNTS,
    SMALL_STORE,
    VERBS,
    LoadResult,
    Machine,
    Plan,
    RedisResult,
    Report,
    bare_beside,
    redis_system,
)
from .storage import measure_store, redis_bytes_per_message, stored_count
from .wrapper import measure_wrapper

HOST = "127.0.0.1"
# After a load run the facade may still be finishing requests whose client has gone.
DRAIN_SECONDS = 1.0
# Long enough for an open breaker (5 s by default) to admit its trial call again.
READY_TIMEOUT = 20.0
REDIS_ABSENT = "redis-server is not on PATH (Debian: apt-get install redis-server)"

Say = Callable[[str], None]
Load = dict[tuple[str, str], LoadResult]
Cpu = dict[tuple[str, str], dict[str, float]]


async def seed(base_url: str, count: int) -> None:
    """POST ``count`` short messages to ``/facade`` and check GET returns those more."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/facade") as resp:
            before = len(orjson.loads(await resp.read())["logs"])
        for number in range(count):
            async with session.post(f"{base_url}/facade", json={"msg": f"message {number}"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"seeding {base_url} failed: HTTP {resp.status}")
        async with session.get(f"{base_url}/facade") as resp:
            stored = len(orjson.loads(await resp.read())["logs"])
    if stored != before + count:
        raise RuntimeError(f"{base_url} holds {stored} messages after seeding, "
                           f"expected {before + count}")


async def sequential(base_url: str, count: int) -> list[float]:
    """One client's ``count`` POSTs, each sent when the one before was answered, after a tenth
    as many of warm-up: their latencies, in milliseconds."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for number in range(count // 10 + count):
            started = time.perf_counter()
            async with session.post(f"{base_url}/facade", json={"msg": f"one {number}"}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"sequential POST to {base_url} failed: HTTP {resp.status}")
            latencies.append((time.perf_counter() - started) * 1e3)
    return latencies[count // 10:]


def single_requests(plan: Plan, systems: list[System], say: Say) -> dict[str, tuple[float, float]]:
    """Per system, the median and p99 (ms) of ``plan.sequential_posts`` sequential POSTs, sent in
    ``plan.rounds`` rounds that take the systems in turn (as ``throughput`` does)."""
    count = plan.sequential_per_round
    say(f"{plan.sequential_posts:,} sequential POSTs, one client, in {plan.rounds} rounds of "
        f"{count:,} each in turn: " + " and ".join(system.name for system in systems))
    latencies: dict[str, list[float]] = {system.name: [] for system in systems}
    for _ in range(plan.rounds):
        for system in systems:
            latencies[system.name] += uvloop.run(sequential(system.base_url, count))
    return {name: (statistics.median(values), percentile(sorted(values), 0.99))
            for name, values in latencies.items()}


def cpu_seconds(proc: psutil.Process) -> float:
    """User plus system CPU time ``proc`` has used so far."""
    times = proc.cpu_times()
    return times.user + times.system


@dataclass(frozen=True)
class System:
    """One system under load: its key in ``Report.load``, its base URL, and the processes
    whose CPU time is read around its runs (name -> PID)."""

    name: str
    base_url: str
    pids: Mapping[str, int] = field(default_factory=dict)


def throughput(plan: Plan, systems: list[System], say: Say) -> tuple[Load, Cpu]:
    """``SMALL_STORE`` messages in each system, then per verb (GET first, while the stores are
    small) a warm-up of each and ``plan.rounds`` rounds in which each system in turn gets a
    slice of the load: the systems' runs interleave, so a machine that slows down over minutes
    slows each about alike and the ratios between them hold. With, per system and verb, the
    CPU microseconds per request of each process in its ``pids`` (which hold even when other
    work on the machine skews the rates)."""
    for system in systems:
        uvloop.run(seed(system.base_url, SMALL_STORE))
    procs = {system.name: {name: psutil.Process(pid) for name, pid in system.pids.items()}
             for system in systems}
    load: Load = {}
    cpu: Cpu = {}
    names = " and ".join(system.name for system in systems)
    for verb in VERBS:
        say(f"{verb} {names}: {plan.warmup} s warm-up each, then {plan.rounds} rounds of "
            f"{plan.slice_seconds} s each in turn at {plan.connections} connections")
        for system in systems:
            drive(plan.tool, f"{system.base_url}/facade", verb, connections=plan.connections,
                  duration=plan.warmup)
        slices: dict[str, list[LoadResult]] = {system.name: [] for system in systems}
        used: dict[str, dict[str, float]] = {system.name: dict.fromkeys(system.pids, 0.0)
                                             for system in systems}
        for _ in range(plan.rounds):
            for system in systems:
                before = {name: cpu_seconds(proc) for name, proc in procs[system.name].items()}
                slices[system.name].append(drive(plan.tool, f"{system.base_url}/facade", verb,
                                                 connections=plan.connections,
                                                 duration=plan.slice_seconds))
                for name, proc in procs[system.name].items():
                    used[system.name][name] += cpu_seconds(proc) - before[name]
        for system in systems:
            result = load[(system.name, verb)] = LoadResult.merged(slices[system.name])
            served = max(result.requests, 1)
            cpu[(system.name, verb)] = {name: seconds / served * 1e6
                                        for name, seconds in used[system.name].items()}
    return load, cpu


def _answers_get(facade_url: str) -> bool:
    """Whether GET /facade answers 200 right now (the facade reaches logging)."""
    try:
        with urllib.request.urlopen(f"{facade_url}/facade", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def redis_skip_reason() -> str | None:
    """Why the Redis phase cannot run here, or None when it can."""
    return None if shutil.which("redis-server") else REDIS_ABSENT


def on_redis(plan: Plan, log_dir: Path, say: Say) -> tuple[Load, RedisResult]:
    """The facade over 1, 2 and 3 logging replicas on one redis-server, emptied after each, each
    in turn with a bare handler of its own; then over 1 replica with events on."""
    load: Load = {}
    cpu: Cpu = {}
    stored: dict[int, int] = {}
    per_message: dict[int, float] = {}
    events_skipped = None if server_binary() else NATS_ABSENT
    with RedisServer(log_dir / "redis", config=REDIS_CONF, host=HOST) as redis:
        redis.start()
        version = str(redis.info("server")["redis_version"])
        for replicas in REPLICA_COUNTS:  # a fresh redis-server is empty, and each run empties it
            system = redis_system(replicas)
            # A fresh bare handler each time: it holds what it was sent, and GET answers all of it.
            with Cluster(log_dir / system, env={"LOGGING_STORE": redis.url}, host=HOST,
                         logging_replicas=replicas) as cluster, \
                    bare_server(log_dir, host=HOST) as (bare_url, _):
                say(f"starting {replicas} logging replica(s) on Redis, messages, the facade, "
                    "and a bare handler")
                cluster.start_all()
                pids = {name: proc.pid for name, proc in cluster.procs.items()}
                ran, used = throughput(plan, [System(system, cluster.facade_url, pids),
                                              System(bare_beside(system), bare_url)], say)
                load.update(ran)
                if replicas == 1:
                    cpu.update({key: value for key, value in used.items() if key[0] == system})
                stored[replicas] = uvloop.run(stored_count(cluster.logging_url))
            per_message[replicas] = redis_bytes_per_message(redis, stored[replicas])
        if events_skipped is None:
            ran, used = with_events(plan, log_dir, redis.url, say)
            load.update(ran)
            cpu.update({key: value for key, value in used.items() if key[0] == EVENTS_SYSTEM})
        else:
            say(f"events run skipped: {events_skipped}")
    return load, RedisResult(version=version, stored=stored, bytes_per_message=per_message,
                             events_skipped=events_skipped, cpu_us=cpu)


def with_events(plan: Plan, log_dir: Path, redis_url: str, say: Say) -> tuple[Load, Cpu]:
    """The facade over 1 logging replica on Redis, publishing each message to a three-server NATS
    stream that two messages instances consume, in turn with a fresh bare handler."""
    with NatsCluster(log_dir / "nats") as nats, \
            Cluster(log_dir / EVENTS_SYSTEM, env={"LOGGING_STORE": redis_url, "NATS_URLS": nats.urls},
                    host=HOST, messages_instances=2) as cluster, \
            bare_server(log_dir, host=HOST) as (bare_url, _):
        say("starting three NATS servers, 1 logging replica on Redis, two messages instances, "
            "the facade with events, and a bare handler")
        nats.start_all()
        cluster.start_all()
        for url in map(cluster.url, cluster.messages_instances):
            poll_until(functools.partial(is_ready, url), READY_TIMEOUT, f"{url} ready")
        poll_until(lambda: _publishes(cluster.facade_url), READY_TIMEOUT, "the facade publishing")
        pids = {**{name: proc.pid for name, proc in cluster.procs.items()},
                **{name: proc.pid for name, proc in nats.procs.items()}}
        return throughput(plan, [System(EVENTS_SYSTEM, cluster.facade_url, pids),
                                 System(bare_beside(EVENTS_SYSTEM), bare_url)], say)


def _publishes(facade_url: str) -> bool:
    """Whether a POST is acknowledged (with events on: the facade has its stream)."""
    request = urllib.request.Request(f"{facade_url}/facade", data=b'{"msg": "ready?"}', method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Idempotency-Key": "bench-ready"})
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def run(plan: Plan, machine: Machine, log_dir: Path, say: Say) -> Report:
    """Run every phase of ``plan`` and return the figures; no process outlives this call."""
    say("starting the bare handler and the three services")
    with bare_server(log_dir, host=HOST) as (bare_url, bare_pid), \
            Cluster(log_dir / "memory", env={"LOGGING_STORE": MEMORY_STORE}, host=HOST) as cluster:
        cluster.start_all()
        systems = [System("bare", bare_url, {"bare": bare_pid}),
                   System("facade", cluster.facade_url,
                          {name: p.pid for name, p in cluster.procs.items()})]
        load, cpu = throughput(plan, systems, say)
        sequential_ms = single_requests(plan, systems, say)

        say("restarting the logging service with an empty store")
        time.sleep(DRAIN_SECONDS)
        cluster.stop("logging")
        logging_pid = cluster.start("logging").pid
        poll_until(lambda: _answers_get(cluster.facade_url), READY_TIMEOUT, "GET /facade answering 200")
        say(f"storing up to {max(plan.store_sizes):,} messages through /rpc/log")
        store = uvloop.run(measure_store(cluster.logging_url, cluster.facade_url, logging_pid,
                                         plan.store_sizes, plan.get_samples, plan.fill_concurrency))
        say(f"timing {plan.wrapper_calls:,} raw and {plan.wrapper_calls:,} wrapped calls")
        wrapper = uvloop.run(measure_wrapper(cluster.logging_url, plan.wrapper_calls))
        say("stopping the bare handler and the three services")

    skipped = redis_skip_reason()
    if skipped is None:
        redis_load, redis = on_redis(plan, log_dir, say)
        load.update(redis_load)
    else:
        say(f"Redis phase skipped: {skipped}")
        redis = RedisResult(skipped=skipped)
    return Report(machine=machine, plan=plan, load=load, cpu_us=cpu, store=store, wrapper=wrapper,
                  redis=redis, sequential_ms=sequential_ms)
