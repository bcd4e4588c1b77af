"""The facade over several logging replicas, on real sockets with the shipped settings.

These replicas have in-memory stores of their own, so the tests only send
them faults that store nothing (refused connections); replicas that must
agree on what is stored share the Redis store (see ``tests/test_redis_*``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from facade.app import create_app as create_facade
from facade.keys import SERVICE
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience.observability.correlation import add_correlation_id
from resilience.testing.faults import FaultProxy
from tests.conftest import AiohttpClient, AiohttpServer, stored

Client = TestClient[web.Request, web.Application]


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def replicas(aiohttp_server: AiohttpServer) -> list[TestServer]:
    return [await aiohttp_server(create_logging(LoggingSettings())) for _ in range(2)]


@pytest.fixture
async def refusing(replicas: list[TestServer]) -> AsyncIterator[FaultProxy]:
    """The first replica, behind a proxy that refuses every connection."""
    async with FaultProxy(url_of(replicas[0])) as proxy:
        await proxy.refuse()
        yield proxy


async def facade_over(aiohttp_client: AiohttpClient, messages_server: TestServer,
                      *urls: str) -> Client:
    settings = replace(FacadeSettings(), logging_urls=",".join(urls), messages_url=url_of(messages_server))
    return await aiohttp_client(create_facade(settings))


@pytest.fixture
async def balanced(aiohttp_client: AiohttpClient, replicas: list[TestServer],
                   messages_server: TestServer) -> Client:
    """A facade balancing over both healthy replicas."""
    return await facade_over(aiohttp_client, messages_server, *map(url_of, replicas))


async def test_posts_spread_over_the_replicas_and_each_answer_names_its_replica(
        balanced: Client, replicas: list[TestServer]) -> None:
    """With two healthy replicas both get writes, and every access line names the one that served."""
    with capture_logs(processors=[add_correlation_id]) as logs:
        for i in range(40):
            assert (await balanced.post("/facade", json={"msg": f"spread-{i}"})).status == 200
        assert (await balanced.get("/health")).status == 200  # same keep-alive connection
    assert all(stored(replica) for replica in replicas)
    assert sum(len(stored(replica)) for replica in replicas) == 40
    served = [e["logging_replica"] for e in logs
              if e["event"] == "request handled" and e["path"] == "/facade"]
    assert len(served) == 40
    assert set(served) == set(map(url_of, replicas))
    health = next(e for e in logs if e["event"] == "request handled" and e["path"] == "/health")
    assert "logging_replica" not in health  # nothing bound for one request reaches the next


async def test_a_retry_lands_on_another_replica_and_the_bad_one_is_cut_off(
    aiohttp_client: AiohttpClient, replicas: list[TestServer], refusing: FaultProxy,
    messages_server: TestServer,
) -> None:
    """A replica refusing connections costs no POST: each failed attempt is retried on the other
    replica, and once its own breaker opens it is skipped; the healthy replica's breaker stays closed."""
    facade = await facade_over(aiohttp_client, messages_server, refusing.url, url_of(replicas[1]))
    with capture_logs() as logs:
        for i in range(60):
            assert (await facade.post("/facade", json={"msg": f"m{i}"})).status == 200
    retries = [e for e in logs if e["event"] == "retrying call"]
    assert retries
    assert {e["replica"] for e in retries} == {refusing.url}
    assert stored(replicas[1]) == [f"m{i}" for i in range(60)]
    bad, good = facade.app[SERVICE].logging_rpc.method_policies["log"].breakers
    assert (bad.state, good.state) == ("open", "closed")
    assert bad.name == f"logging.write@{refusing.url.removeprefix('http://')}"


async def test_each_get_answer_names_its_replica(balanced: Client, replicas: list[TestServer]) -> None:
    """With two replicas, the access line of every GET /facade names the replica that served the read."""
    with capture_logs(processors=[add_correlation_id]) as logs:
        for _ in range(4):
            assert (await balanced.get("/facade")).status == 200
    lines = [e for e in logs if e["event"] == "request handled" and e["path"] == "/facade"]
    assert len(lines) == 4
    assert all(e.get("logging_replica") in set(map(url_of, replicas)) for e in lines)


async def test_with_two_replicas_down_no_post_retries_a_replica_twice(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, messages_server: TestServer,
) -> None:
    """Two of three replicas refuse connections: every POST is stored by the third, and no POST
    sends two attempts to the same dead replica (every replica a call failed on is avoided)."""
    healthy = await aiohttp_server(create_logging(LoggingSettings()))
    async with FaultProxy(url_of(healthy)) as dead1, FaultProxy(url_of(healthy)) as dead2:
        await dead1.refuse()
        await dead2.refuse()
        facade = await facade_over(aiohttp_client, messages_server, dead1.url, dead2.url,
                                   url_of(healthy))
        with capture_logs(processors=[add_correlation_id]) as logs:
            for i in range(40):
                assert (await facade.post("/facade", json={"msg": f"m{i}"})).status == 200
    assert stored(healthy) == [f"m{i}" for i in range(40)]
    retried: dict[str, list[str]] = {}
    for event in logs:
        if event["event"] == "retrying call":
            retried.setdefault(event["correlation_id"], []).append(event["replica"])
    assert any(len(replicas) == 2 for replicas in retried.values())  # both dead ones, in one POST
    assert all(len(set(replicas)) == len(replicas) for replicas in retried.values())
    assert {r for replicas in retried.values() for r in replicas} <= {dead1.url, dead2.url}
