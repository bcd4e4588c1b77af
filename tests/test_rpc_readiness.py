"""The RPC server when a service cannot serve: a ServiceUnavailable is a 503, and /ready says so."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from resilience import ServiceUnavailable, rpc, rpc_app
from resilience.testing import worker_factory
from tests.conftest import AiohttpServer


class Backing:
    """Stands for a store: reachable or not, as the test says."""

    def __init__(self) -> None:
        self.down = False

    async def ping(self) -> None:
        if self.down:
            raise ServiceUnavailable("db", "ConnectionError", 2.5, "connect to 10.1.2.3:6390 refused")


class StoreBacked:
    name = "backed"

    def __init__(self) -> None:
        self.backing = Backing()

    @rpc
    async def read(self) -> str:
        await self.backing.ping()
        return "data"


@pytest.fixture
def backed() -> StoreBacked:
    return worker_factory(StoreBacked)


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, backed: StoreBacked) -> TestServer:
    return await aiohttp_server(rpc_app(backed, ready=backed.backing.ping))


async def test_unavailable_dependency_is_a_503_with_retry_after(server: TestServer, backed: StoreBacked
                                                                ) -> None:
    """ServiceUnavailable from a method: 503, Retry-After rounded up, the reason without the detail."""
    backed.backing.down = True
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as session, \
                session.post(server.make_url("/rpc/read"), json={}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "3"
            assert await resp.json() == {"error": {
                "type": "ServiceUnavailable", "message": "db unavailable: ConnectionError",
                "args": ["db unavailable: ConnectionError"]}}
    assert not any(e["log_level"] == "error" for e in logs)  # no "rpc handler failed" traceback


async def test_ready_follows_the_readiness_check_while_health_stays_ok(
        server: TestServer, backed: StoreBacked) -> None:
    """/ready is 503 while the check fails and 200 when it passes; /health (liveness) is 200 throughout."""
    async with aiohttp.ClientSession() as session:
        for down, status, body in [
            (True, 503, {"status": "unavailable", "service": "backed",
                         "reason": "db unavailable: ConnectionError"}),
            (False, 200, {"status": "ready", "service": "backed"}),
        ]:
            backed.backing.down = down
            async with session.get(server.make_url("/ready")) as resp:
                assert (resp.status, await resp.json()) == (status, body)
            async with session.get(server.make_url("/health")) as resp:
                assert resp.status == 200


async def test_a_service_without_a_check_is_ready(aiohttp_server: AiohttpServer) -> None:
    """Without a readiness check (the messages service), a live service is ready."""
    server = await aiohttp_server(rpc_app(worker_factory(StoreBacked)))
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/ready")) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ready", "service": "backed"})
