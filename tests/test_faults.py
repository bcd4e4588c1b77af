"""Proof by faults: the facade's guarantees with faults injected on real sockets.

logging runs as a real app behind a ``FaultProxy``; the facade talks to the proxy.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from facade.app import create_app
from facade.keys import SERVICE
from resilience.testing import FakeClock
from resilience.testing.faults import FaultProxy
from tests.conftest import AiohttpClient, fast_settings, stored, wait_for

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def proxy(logging_server: TestServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(str(logging_server.make_url("")), seed=7) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def facade_via_proxy(aiohttp_client: AiohttpClient, proxy: FaultProxy,
                     messages_server: TestServer) -> Callable[..., Awaitable[Client]]:
    async def make(clock: Callable[[], float] | None = None, **overrides: Any) -> Client:
        settings = fast_settings(logging_url=proxy.url,
                                 messages_url=str(messages_server.make_url("")).rstrip("/"),
                                 **overrides)
        app = create_app(settings, clock=clock) if clock else create_app(settings)
        return await aiohttp_client(app)
    return make


async def post(facade: Client, text: str) -> tuple[int, dict[str, Any], Any]:
    resp = await facade.post("/facade", json={"msg": text})
    return resp.status, await resp.json(), resp.headers


async def test_connection_refused_gives_503_with_retry_after(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """With logging unreachable, POST retries, then answers 503 + Retry-After naming logging."""
    facade = await facade_via_proxy()
    await proxy.refuse()
    with capture_logs() as logs:
        status, body, headers = await post(facade, "lost?")
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert body["status"] == "failure"
    assert body["message"].startswith("logging service unavailable")
    assert "127.0.0.1" not in body["message"]  # addresses stay in the logs
    retries = [e for e in logs if e["event"] == "retrying call"]
    assert retries
    assert all({"attempt", "delay", "error"} <= e.keys() for e in retries)
    assert stored(logging_server) == []


async def test_refused_then_recovered_stores_once(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """A POST that meets a refused connection succeeds once logging is back within the deadline."""
    facade = await facade_via_proxy(retry_deadline=5.0, retry_backoff_base=0.05,
                                    retry_backoff_max=0.2, retry_attempts=30, breaker_fail_max=100)
    breaker = facade.app[SERVICE].logging_rpc.policy.breaker
    await proxy.refuse()
    pending = asyncio.create_task(post(facade, "patience"))
    await wait_for(lambda: breaker.fail_counter >= 2)  # refused, and being retried
    await proxy.resume()
    status, _, _ = await pending
    assert status == 200
    assert stored(logging_server) == ["patience"]


async def test_slow_logging_times_out_and_never_duplicates(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """Attempts that time out are retried with the same UUID: late arrivals are stored once."""
    facade = await facade_via_proxy(rpc_timeout=0.1, retry_deadline=0.6, breaker_fail_max=100)
    proxy.delay = 0.15
    status, body, _ = await post(facade, "slow")
    assert status == 503
    assert "TimeoutError" in body["message"] or "timeout" in body["message"].lower()
    # The abandoned attempts still reach logging after their delay: all land, one is stored.
    await wait_for(lambda: proxy.counts.forwarded >= 2 and "slow" in stored(logging_server))
    assert stored(logging_server).count("slow") == 1


async def test_503s_are_retried_until_success(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """Half the calls answered 503: every POST still succeeds, each message stored once."""
    facade = await facade_via_proxy(retry_attempts=10, breaker_fail_max=100, retry_deadline=10.0)
    proxy.error_rate = 0.5
    proxy.retry_after = 0  # keep the test fast; Retry-After handling is unit-tested
    for i in range(20):
        assert (await post(facade, f"m{i}"))[0] == 200
    assert proxy.counts.errored > 0
    assert stored(logging_server) == [f"m{i}" for i in range(20)]


async def test_lost_replies_never_duplicate(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """logging stores, its reply is dropped, the facade resends the same UUID: stored once."""
    facade = await facade_via_proxy(retry_attempts=10, breaker_fail_max=100, retry_deadline=10.0)
    proxy.drop_rate = 0.5
    for i in range(20):
        assert (await post(facade, f"m{i}"))[0] == 200
    assert proxy.counts.dropped > 0
    assert stored(logging_server) == [f"m{i}" for i in range(20)]


async def test_200_concurrent_posts_with_dropped_replies(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """200 POSTs at once, a fifth of replies dropped: all acknowledged, each stored exactly once.

    The breaker threshold is raised so that unlucky runs of drops cannot open it mid-test.
    """
    facade = await facade_via_proxy(retry_attempts=10, breaker_fail_max=50, retry_deadline=10.0)
    proxy.drop_rate = 0.2
    texts = [f"concurrent-{i}" for i in range(200)]
    results = await asyncio.gather(*(post(facade, text) for text in texts))
    assert [status for status, _, _ in results] == [200] * 200
    assert len({body["uuid"] for _, body, _ in results}) == 200
    assert proxy.counts.dropped > 0
    counts = Counter(stored(logging_server))
    assert set(counts) == set(texts)
    assert set(counts.values()) == {1}


async def test_breaker_opens_fails_fast_then_recovers_through_half_open(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
    logging_server: TestServer,
) -> None:
    """Open after 5 failures, refuse without touching the network, one trial after the timeout."""
    clock = FakeClock()
    facade = await facade_via_proxy(clock=clock, retry_attempts=5, breaker_fail_max=5,
                                    breaker_reset_timeout=30.0)
    breaker = facade.app[SERVICE].logging_rpc.policy.breaker
    await proxy.refuse()
    status, body, headers = await post(facade, "a")
    assert (status, breaker.state) == (503, "open")
    assert headers["Retry-After"] == "30"

    await proxy.resume()
    forwarded = proxy.counts.forwarded
    clock.advance(10.0)
    status, body, headers = await post(facade, "b")
    assert status == 503
    assert "circuit breaker open" in body["message"]
    assert headers["Retry-After"] == "20"
    assert proxy.counts.forwarded == forwarded  # failed fast: the network was not touched

    clock.advance(20.0)
    with capture_logs() as logs:
        status, _, _ = await post(facade, "c")
    assert status == 200
    assert breaker.state == "closed"
    assert [(e["old_state"], e["new_state"]) for e in logs if "new_state" in e] == [
        ("open", "half-open"), ("half-open", "closed")]
    assert stored(logging_server) == ["c"]


async def test_cancelled_calls_do_not_trip_the_breaker(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
) -> None:
    """Cancelling in-flight calls (more than fail_max of them) leaves the breaker closed."""
    facade = await facade_via_proxy(breaker_fail_max=3)
    rpc = facade.app[SERVICE].logging_rpc
    proxy.delay = 5.0
    for i in range(6):
        call = asyncio.create_task(rpc.log(uuid=f"00000000-0000-4000-8000-00000000000{i}", msg="x"))
        await wait_for(lambda n=i: proxy.counts.received > n)  # type: ignore[misc]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert rpc.policy.breaker.state == "closed"
    assert rpc.policy.breaker.fail_counter == 0


async def test_get_falls_back_when_messages_is_down(
    aiohttp_client: AiohttpClient, logging_server: TestServer, unused_tcp_port: int
) -> None:
    """GET /facade with messages unreachable answers 200 with the logs and marks messages unavailable."""
    settings = fast_settings(logging_url=str(logging_server.make_url("")).rstrip("/"),
                             messages_url=f"http://127.0.0.1:{unused_tcp_port}")
    facade = await aiohttp_client(create_app(settings))
    await facade.post("/facade", json={"msg": "still here"})
    resp = await facade.get("/facade")
    assert resp.status == 200
    assert await resp.json() == {"logs": ["still here"], "message": "unavailable",
                                 "unavailable": ["messages"]}


async def test_get_without_logging_is_503(
    facade_via_proxy: Callable[..., Awaitable[Client]], proxy: FaultProxy,
) -> None:
    """GET /facade with logging unreachable is 503 with Retry-After."""
    facade = await facade_via_proxy()
    await proxy.refuse()
    resp = await facade.get("/facade")
    assert resp.status == 503
    assert "Retry-After" in resp.headers


async def test_fault_proxy_drops_replies_after_forwarding(
    proxy: FaultProxy, logging_server: TestServer
) -> None:
    """The proxy's dropped reply really reaches logging and really never reaches the caller."""
    proxy.drop_rate = 1.0
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(f"{proxy.url}/rpc/log", json={
                "uuid": "12345678-1234-4678-9234-567812345678", "msg": "sent"})
    assert stored(logging_server) == ["sent"]
