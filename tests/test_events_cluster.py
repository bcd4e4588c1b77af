"""The course's task 4 on real processes: the facade publishes each message to a three-server NATS
JetStream stream, two messages instances keep what they consumed, and nothing acknowledged is lost
or doubled when consumers stop, the stream's leader dies, a consumer dies, or all of NATS is killed."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from resilience.testing.nats_server import NatsCluster
from resilience.testing.processes import is_ready, poll_until
from scripts.cluster import Cluster
from scripts.stream_fault import course_fault_test, http
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

CLIENTS = 16


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[NatsCluster, Cluster]]:
    """Three NATS servers, then logging, messages1, messages2 and the facade, on free ports."""
    with NatsCluster(tmp_path / "nats") as nats:
        nats.start_all()
        with Cluster(tmp_path / "logs", env={"NATS_URLS": nats.urls}, messages_instances=2) as cluster:
            cluster.start_all()
            yield nats, cluster


async def post_until_acknowledged(cluster: Cluster, text: str) -> None:
    """POST ``text`` again (with one Idempotency-Key) until it is acknowledged: a facade that has
    just started answers 503 until its event stream is connected."""
    key = {"Idempotency-Key": "first-message"}
    await wait_for(lambda: http("POST", cluster.facade_url + "/facade", {"msg": text}, key)[0] == 200, 30)


async def read_all(cluster: Cluster) -> tuple[list[str], list[str]]:
    """Every message GET /facade lists, page after page, in logs and in messages (each page
    asked again while it comes without messages: the instances catching up with the stream after
    NATS came back, which a read says rather than answer short)."""
    logs: list[str] = []
    messages: list[str] = []
    pages: list[dict[str, Any]] = []

    def whole(offset: int) -> bool:
        status, page = http("GET", f"{cluster.facade_url}/facade?offset={offset}&limit=10000")
        assert status == 200, page
        pages.append(page)
        return "unavailable" not in page

    offset: int | None = 0
    while offset is not None:
        await wait_for(functools.partial(whole, offset), 30)
        logs += pages[-1]["logs"]
        messages += pages[-1]["messages"]
        # Logging may hold more than messages: what was stored for a POST whose publish failed.
        offset = pages[-1].get("next_offset", pages[-1].get("messages_next_offset"))
    return logs, messages


async def kept_by(cluster: Cluster, name: str) -> list[str]:
    """Every message one messages instance answers, asked directly page by page (again while it
    answers 503: catching up with the stream after NATS came back)."""
    texts: list[str] = []
    replies: list[tuple[int, dict[str, Any]]] = []

    def answered(offset: int) -> bool:
        replies.append(http("POST", cluster.url(name) + "/rpc/messages", {"offset": offset}))
        return replies[-1][0] == 200

    offset: int | None = 0
    while offset is not None:
        await wait_for(functools.partial(answered, offset), 30)
        page = replies[-1][1]["result"]
        texts += page["logs"]
        offset = page.get("next_offset")
    return texts


def assert_once_each(acknowledged: list[str], listed: list[str], where: str) -> None:
    doubled = [text for text, n in Counter(listed).items() if n > 1]
    missing = set(acknowledged) - set(listed)
    assert (doubled, sorted(missing)) == ([], []), f"{where}: doubled, then lost"


def test_consumers_stopped_100_posts_stream_leader_killed_consumers_started(
        system: tuple[NatsCluster, Cluster]) -> None:
    """The course's fault test (``python -m scripts.stream_fault``): with both messages instances
    stopped, 100 messages are POSTed and acknowledged; the stream's leader is SIGKILLed; the
    instances start again, rebuild from the stream, and GET /facade lists all 100, once each and
    in order, in logs and in messages, as each instance does."""
    nats, cluster = system
    said: list[str] = []

    outcome = course_fault_test(nats, cluster, 100, said.append)

    assert outcome.problems() == []
    assert outcome.logs == outcome.messages == outcome.acknowledged
    assert list(outcome.kept.values()) == [outcome.acknowledged] * 2
    assert outcome.killed not in nats.running()
    assert said[1] == "POSTed 100 messages, 100 acknowledged"


class Load:
    """CLIENTS clients POSTing unique messages back to back; what was acknowledged and what not."""

    def __init__(self, facade_url: str) -> None:
        self.url = facade_url + "/facade"
        self.acknowledged: list[str] = []
        self.refused: Counter[str] = Counter()
        self.stopping = asyncio.Event()
        self._numbers = itertools.count()

    async def client(self, session: aiohttp.ClientSession) -> None:
        while not self.stopping.is_set():
            text = f"load {next(self._numbers)}"
            try:
                async with session.post(self.url, json={"msg": text}) as reply:
                    body = await reply.json()
                    if reply.status == 200:
                        self.acknowledged.append(text)
                    else:
                        self.refused[f"{reply.status} {body.get('message', '')}"] += 1
                        await asyncio.sleep(0.01)  # a client backs off after a 503
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.refused[type(exc).__name__] += 1

    def breaker_refusals(self) -> int:
        """POSTs answered 503 because the events breaker was open."""
        return sum(n for refusal, n in self.refused.items()
                   if "events service unavailable (circuit breaker open" in refusal)

    async def more(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` more POSTs are acknowledged."""
        target = len(self.acknowledged) + count
        await wait_for(lambda: len(self.acknowledged) >= target, timeout)


async def test_under_load_leader_consumer_and_all_of_nats_down_lose_and_double_nothing(
        system: tuple[NatsCluster, Cluster]) -> None:
    """16 clients POST throughout: the stream's leader is SIGKILLed and restarted, messages1 is
    SIGKILLed and restarted, then all three NATS servers are SIGKILLed at once (POSTs are refused
    by the open breaker meanwhile) and started again. Every acknowledged message is then in
    logging and in each messages instance exactly once."""
    nats, cluster = system
    await post_until_acknowledged(cluster, "first")
    load = Load(cluster.facade_url)
    load.acknowledged.append("first")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        clients = [asyncio.create_task(load.client(session)) for _ in range(CLIENTS)]
        await load.more(200)

        # The harness blocks (it waits for processes); in a thread, so the clients go on meanwhile.
        leader = await asyncio.to_thread(nats.stream_leader, "events")
        await asyncio.to_thread(nats.kill, leader)
        await load.more(200)
        await asyncio.to_thread(nats.start, leader)
        await load.more(200)

        await asyncio.to_thread(cluster.kill, "messages1")
        await load.more(200)
        await asyncio.to_thread(cluster.start, "messages1")
        await asyncio.to_thread(poll_until, lambda: is_ready(cluster.url("messages1")), 30,
                                "messages1 ready")
        await load.more(200)

        refused_before = load.breaker_refusals()
        for name in nats.names:
            await asyncio.to_thread(nats.kill, name)
        await wait_for(lambda: load.breaker_refusals() > refused_before, 30)
        await asyncio.to_thread(nats.start_all)
        await load.more(200, timeout=60)

        load.stopping.set()
        await asyncio.gather(*clients)

    assert not [r for r in load.refused if not r.startswith("503")], load.refused
    await wait_for(lambda: all(is_ready(cluster.url(name)) for name in cluster.messages_instances), 30)
    logs, messages = await read_all(cluster)
    assert_once_each(load.acknowledged, logs, "logging")
    assert_once_each(load.acknowledged, messages, "GET's messages")
    for name in cluster.messages_instances:
        assert_once_each(load.acknowledged, await kept_by(cluster, name), name)
