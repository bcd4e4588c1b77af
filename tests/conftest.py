"""Shared fixtures: real apps on real sockets, wired the way the processes wire them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from facade.app import create_app as create_facade
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from messages.app import create_app as create_messages
from messages.settings import MessagesSettings
from resilience.observability import logs
from resilience.rpc.server import ENDPOINT
from resilience.testing.nats_server import NatsCluster
from resilience.testing.redis_server import RedisServer
from scripts import REDIS_CONF

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
#: The ``make_facade`` fixture: ``await make_facade(**settings_overrides)`` gives a facade client.
MakeFacade = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


POLL_INTERVAL = 0.01
#: The redis-server configuration Procfile.cluster runs, so the tests check the shipped one.


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (polling), or fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(POLL_INTERVAL)


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The log configuration as it was before the test, however the test configured its own."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(logs, "CACHE_LOGGERS", False)  # no module logger keeps this test's stream
    yield
    root.handlers[:], root.level = handlers, level
    structlog.reset_defaults()


@pytest.fixture
async def logging_server(aiohttp_server: AiohttpServer) -> TestServer:
    """The real logging RPC app on a free port."""
    return await aiohttp_server(create_logging(LoggingSettings()))


@pytest.fixture
async def messages_server(aiohttp_server: AiohttpServer) -> TestServer:
    """The real messages RPC app on a free port."""
    return await aiohttp_server(create_messages(MessagesSettings()))


def stored(server: TestServer) -> list[str]:
    """The messages a logging test server holds, read from its (in-memory) store."""
    service = server.app[ENDPOINT].service
    return list(service.store)  # type: ignore[attr-defined]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (to kill, restart or stop), with the shipped configuration.

    It fails the test, never skips it, when redis-server is not installed.
    """
    with RedisServer(tmp_path / "redis", config=REDIS_CONF) as server:
        server.start()
        yield server


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the tests that only store and read (``redis_url`` empties it for each)."""
    with RedisServer(tmp_path_factory.mktemp("redis"), config=REDIS_CONF) as server:
        server.start()
        yield server


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    """The URL of the shared redis-server, emptied for this test."""
    shared_redis.flush()
    return shared_redis.url


@pytest.fixture
def make_facade(aiohttp_client: AiohttpClient, logging_server: TestServer,
                messages_server: TestServer) -> MakeFacade:
    """Build a facade client wired to the real logging and messages test servers (or given URLs),
    with the shipped settings unless a test of a setting overrides one."""

    async def make(**overrides: object) -> TestClient[web.Request, web.Application]:
        settings = FacadeSettings(
            logging_url=str(logging_server.make_url("")).rstrip("/"),
            messages_url=str(messages_server.make_url("")).rstrip("/"),
        )
        return await aiohttp_client(create_facade(replace(settings, **overrides)))  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three real nats-server processes with JetStream, routed as a cluster, for the whole run.

    Tests that kill servers start a cluster of their own; those that share this one use a
    stream of their own each.
    """
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        cluster.start_all()
        yield cluster
