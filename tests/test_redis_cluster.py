"""Three real logging replicas on one real redis-server, the facade over their LOGGING_URLS, with
the shipped settings: one replica SIGKILLed under load, then restarted."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from logging_service.store.redis import IN_ORDER
from resilience.testing.redis_server import RedisServer
from scripts.cluster import Cluster
from scripts.soak.readback import read_via_facade
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

CLIENTS = 16
#: POSTs acknowledged before the kill, and again after it, before the test goes on.
STEADY = 200
VICTIM = "logging2"


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    """Three logging replicas on the test's redis-server, messages and the facade, all serving."""
    with Cluster(tmp_path / "logs", env={"LOGGING_STORE": redis_server.url}, logging_replicas=3) as running:
        running.start_all()
        yield running


@dataclass
class Load:
    """What the clients were told: the texts acknowledged (200), in order, and every other status."""

    acknowledged: list[str] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, session: aiohttp.ClientSession, url: str, name: str) -> None:
        """POST ``<name>-0``, ``<name>-1``... until told to stop, one at a time."""
        for n in itertools.count():
            if self.stop.is_set():
                return
            text = f"{name}-{n}"
            async with session.post(url + "/facade", json={"msg": text}) as resp:
                await resp.read()
                if resp.status == 200:
                    self.acknowledged.append(text)
                else:
                    self.refused[resp.status] += 1


def served_by(cluster: Cluster, replica: str) -> int:
    """How many messages replica ``replica`` has logged as stored since it was last started."""
    return sum(line.get("event") == "message stored" for line in cluster.lines_since_start(replica))


async def test_a_replica_sigkilled_under_load_loses_nothing_and_serves_again_once_restarted(
        cluster: Cluster, redis_server: RedisServer) -> None:
    """16 clients post while one of three replicas is SIGKILLed: POSTs keep being acknowledged, every
    acknowledged message is stored once (read back through the facade's pages and from Redis), and the
    replica, restarted, gets writes again."""
    load = Load()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(load.client(session, cluster.facade_url, f"c{i}"))
                   for i in range(CLIENTS)]
        await wait_for(lambda: len(load.acknowledged) >= STEADY and served_by(cluster, VICTIM) > 0, 10)
        await asyncio.to_thread(cluster.kill, VICTIM)
        at_kill = len(load.acknowledged)
        await wait_for(lambda: len(load.acknowledged) >= at_kill + STEADY, 10)

        await asyncio.to_thread(cluster.start, VICTIM)
        # If its breaker opened after the kill, it gets writes again once a half-open trial succeeds.
        await wait_for(lambda: served_by(cluster, VICTIM) > 0, 20)
        load.stop.set()
        await asyncio.gather(*clients)

        read_back = await read_via_facade(session, cluster.facade_url, timeout=5)

    assert load.refused == Counter()  # every POST, the ones in flight at the kill too, acknowledged
    assert read_back is not None
    counts = Counter(read_back)
    assert [text for text in load.acknowledged if counts[text] != 1] == []  # none lost, none twice
    assert max(counts.values()) == 1  # nothing stored twice, acknowledged or not
    with redis_server.client() as redis:
        assert [text.decode() for text in redis.lrange(IN_ORDER, 0, -1)] == read_back
    for name in cluster.services:
        assert "Traceback" not in cluster.raw_log(name)
