"""The processes a soak runs and where its faults go: logging alone behind the fault proxy, or the cluster.

- ``InMemory`` (the default): one logging service with its in-memory store,
  behind the fault proxy whose network phases the soak cycles; messages and
  the facade.
- ``OnRedis`` (``--cluster``): the topology of Procfile.cluster, a
  redis-server (``redis.conf``: AOF, ``appendfsync always``; a free port, a
  data folder in the log directory), ``REPLICAS`` logging replicas on it,
  three NATS servers holding the event stream, two messages instances on it,
  and the facade over the replicas' ``LOGGING_URLS`` and the instances'
  ``MESSAGES_URLS``, with no proxy between them: its faults are SIGKILLs of
  replicas, of redis-server, of the stream's leader and of messages instances.

Both start every process they need, hand the soak its fault tasks, settle
what is in flight after the load, and stop every process they started, by PID.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from logging_service.store.redis import BY_UUID
from resilience import EventSettings
from resilience.testing.nats_server import NatsCluster
from resilience.testing.processes import is_ready, poll_until
from resilience.testing.redis_server import RedisServer
from scripts import REDIS_CONF
from scripts.cluster import Cluster, stopped

from .config import MESSAGES, REPLICAS, SoakConfig
from .faults import (
    REDIS,
    ChaosState,
    logging_chaos,
    messages_chaos,
    nats_chaos,
    network_chaos,
    redis_chaos,
    replica_chaos,
    start_together,
)
from .proxy import SoakProxy
from .readback import logged_uuids, quiesce, read_store

Chaos = Coroutine[Any, Any, None]


class InMemory:
    """logging alone, in memory, behind the fault proxy; messages and the facade."""

    def __init__(self, config: SoakConfig, log_dir: Path) -> None:
        self.config = config
        self.cluster = Cluster(log_dir, env=config.service_env)
        self.proxy = SoakProxy(self.cluster.url("logging"), seed=config.seed)

    @property
    def read_url(self) -> str:
        """Where the store is read back from, past every fault."""
        return self.cluster.url("logging")

    async def start(self) -> None:
        await asyncio.to_thread(start_together, self.cluster, ("logging", "messages"))
        await self.proxy.start()
        self.cluster.logging_url = self.proxy.url
        await asyncio.to_thread(self.cluster.start, "facade")

    def chaos(self, rng: random.Random, slow_delay: float, stop: asyncio.Event,
              chaos: ChaosState) -> list[Chaos]:
        """The fault tasks: the network phases, messages kills and, with ``kill_logging``, logging kills."""
        lock = asyncio.Lock()
        tasks = [network_chaos(self.proxy, random.Random(rng.random()), self.config, slow_delay, stop, chaos),
                 messages_chaos(self.cluster, lock, random.Random(rng.random()), self.config, stop, chaos)]
        if self.config.kill_logging:
            tasks.append(logging_chaos(self.cluster, lock, random.Random(rng.random()), self.config,
                                       stop, chaos))
        return tasks

    async def settle(self, seconds: float) -> None:
        """Clear the network faults, wait ``seconds``, then until no forward is in flight."""
        await self.proxy.heal()
        await quiesce(self.proxy, settle=seconds)

    async def messages_kept(self, session: aiohttp.ClientSession, timeout: float) -> dict[str, list[str]]:
        """No event stream here: the messages service is task 1's stub."""
        return {}

    async def uuid_index(self) -> dict[str, set[str]]:
        """Every UUID logging logged as storing a message, with that message."""
        return logged_uuids(self.cluster.log_lines("logging"))

    def fault_counts(self) -> dict[str, Any]:
        """What the proxy did."""
        return {"proxy_received": dict(self.proxy.received), "proxy_forwarded": self.proxy.counts.forwarded,
                "proxy_dropped": self.proxy.counts.dropped, "proxy_errored": self.proxy.counts.errored,
                "proxy_upstream_failures": self.proxy.upstream_failures}

    async def stop(self) -> dict[str, dict[str, float]]:
        """Stop every service, then the proxy (cutting forwards still waiting out a delay)."""
        try:
            return await asyncio.to_thread(self.cluster.stop_all)
        finally:
            await self.proxy.refuse()
            await self.proxy.stop()


class OnRedis:
    """redis-server, ``REPLICAS`` logging replicas on it, three NATS servers, ``MESSAGES``
    messages instances on the event stream, the facade over all of them."""

    def __init__(self, config: SoakConfig, log_dir: Path) -> None:
        self.config = config
        self.redis = RedisServer(log_dir / "redis", config=REDIS_CONF)
        self.nats = NatsCluster(log_dir / "nats")
        self.cluster = Cluster(log_dir, env={**config.service_env, "LOGGING_STORE": self.redis.url,
                                             "NATS_URLS": self.nats.urls},
                               logging_replicas=REPLICAS, messages_instances=MESSAGES)

    @property
    def read_url(self) -> str:
        """Where the store is read back from: one replica (all read the same Redis)."""
        return self.cluster.url(self.cluster.replicas[0])

    async def start(self) -> None:
        await asyncio.to_thread(self.nats.start_all)
        await asyncio.to_thread(self.redis.start)
        await asyncio.to_thread(start_together, self.cluster, self.cluster.services)
        # The messages instances answer /ready once they have the event stream: so does the facade.
        for url in map(self.cluster.url, self.cluster.messages_instances):
            await asyncio.to_thread(poll_until, functools.partial(is_ready, url), 30, f"{url} ready")

    def chaos(self, rng: random.Random, slow_delay: float, stop: asyncio.Event,
              chaos: ChaosState) -> list[Chaos]:
        """The fault tasks: rounds of replica kills, redis-server kills, stream leader kills,
        messages kills."""
        lock = asyncio.Lock()
        return [replica_chaos(self.cluster, lock, random.Random(rng.random()), self.config, stop, chaos),
                redis_chaos(self.redis, random.Random(rng.random()), self.config, stop, chaos),
                nats_chaos(self.nats, EventSettings().events_stream, random.Random(rng.random()),
                           self.config, stop, chaos),
                messages_chaos(self.cluster, lock, random.Random(rng.random()), self.config, stop, chaos)]

    async def messages_kept(self, session: aiohttp.ClientSession, timeout: float) -> dict[str, list[str]]:
        """What each messages instance keeps, read from it once it has replayed the stream."""
        return {name: await read_store(session, self.cluster.url(name), timeout, patience=60.0)
                for name in self.cluster.messages_instances}

    async def settle(self, seconds: float) -> None:
        """Wait ``seconds``: past the facade's retry deadline, no attempt of a POST is left."""
        await asyncio.sleep(seconds)

    async def uuid_index(self) -> dict[str, set[str]]:
        """Every UUID in Redis's dedup index, with its message: what a replica stored, even one
        SIGKILLed before it could log that it had."""
        def read() -> dict[str, set[str]]:
            with self.redis.client() as client:
                return {uuid.decode(): {text.decode()}
                        for uuid, text in client.hscan_iter(BY_UUID, count=10_000)}
        return await asyncio.to_thread(read)

    def fault_counts(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> dict[str, dict[str, float]]:
        """Stop every service, then redis-server (SIGTERM: it fsyncs its file and exits 0), then
        the NATS servers."""
        results: dict[str, dict[str, float]] = {}
        try:
            results.update(await asyncio.to_thread(self.cluster.stop_all))
        finally:
            try:
                if self.redis.proc is not None:
                    results[REDIS] = await asyncio.to_thread(stopped, self.redis.stop, self.redis.kill)
            finally:
                for name in self.nats.names:
                    await asyncio.to_thread(self.nats.stop, name)
        return results


Topology = InMemory | OnRedis


def topology_for(config: SoakConfig, log_dir: Path) -> Topology:
    """The processes ``config`` asks for."""
    return OnRedis(config, log_dir) if config.cluster else InMemory(config, log_dir)
