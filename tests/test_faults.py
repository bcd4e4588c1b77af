"""Proof by faults: the facade's guarantees with faults injected on real sockets.

logging runs as a real app behind a ``FaultProxy``; the facade talks to the
proxy. Every test runs with the shipped settings: a fault scenario that
needs a setting raised to pass would mean the defaults are wrong.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from facade.app import create_app
from facade.keys import SERVICE
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience import AsyncCircuitBreaker
from resilience.runtime.web import Handler
from resilience.testing import FakeClock
from resilience.testing.faults import FaultProxy
from tests.conftest import AiohttpClient, AiohttpServer, stored, wait_for

Client = TestClient[web.Request, web.Application]
MakeFacade = Callable[..., Awaitable[Client]]
DEFAULTS = FacadeSettings()
CLIENTS = 16


@pytest.fixture
async def proxy(logging_server: TestServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(str(logging_server.make_url("")), seed=7) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def facade_via_proxy(aiohttp_client: AiohttpClient, proxy: FaultProxy,
                     messages_server: TestServer) -> MakeFacade:
    """The facade with the shipped settings, logging reached through the fault proxy."""
    async def make(clock: Callable[[], float] | None = None) -> Client:
        settings = replace(DEFAULTS, logging_url=proxy.url,
                           messages_url=str(messages_server.make_url("")).rstrip("/"))
        app = create_app(settings, clock=clock) if clock else create_app(settings)
        return await aiohttp_client(app)
    return make


def write_breaker(facade: Client) -> AsyncCircuitBreaker:
    (breaker,) = facade.app[SERVICE].logging_rpc.method_policies["log"].breakers
    return breaker


def read_breaker(facade: Client) -> AsyncCircuitBreaker:
    (breaker,) = facade.app[SERVICE].logging_rpc.policy.breakers
    return breaker


async def post(facade: Client, text: str) -> tuple[int, dict[str, Any], Any]:
    resp = await facade.post("/facade", json={"msg": text})
    return resp.status, await resp.json(), resp.headers


def state_changes(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["breaker"], e["old_state"], e["new_state"]) for e in logs
            if e["event"] == "circuit breaker state changed"]


async def test_connection_refused_gives_503_with_retry_after(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
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
    assert len(retries) == DEFAULTS.retry_attempts - 1
    assert all({"attempt", "delay", "error"} <= e.keys() for e in retries)
    assert write_breaker(facade).state == "closed"  # one request's own retries do not open it
    assert stored(logging_server) == []


async def test_refused_then_recovered_stores_once(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """A POST that meets a refused connection succeeds once logging is back within the deadline."""
    facade = await facade_via_proxy()
    breaker = write_breaker(facade)
    await proxy.refuse()
    pending = asyncio.create_task(post(facade, "patience"))
    await wait_for(lambda: breaker.calls["failed"] >= 1)  # refused, and being retried
    await proxy.resume()
    status, _, _ = await pending
    assert status == 200
    assert stored(logging_server) == ["patience"]


async def test_slow_logging_times_out_and_never_duplicates(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """Attempts that time out are retried with the same UUID: late arrivals are stored once."""
    facade = await facade_via_proxy()
    proxy.hold()  # every attempt outlives RPC_TIMEOUT on the wire
    status, body, _ = await post(facade, "slow")
    assert status == 503
    assert "TimeoutError" in body["message"]
    # The abandoned attempts still reach logging, late: all land, one is stored.
    proxy.release()
    await wait_for(lambda: proxy.counts.forwarded >= 2)
    assert stored(logging_server) == ["slow"]


async def test_503s_are_retried_until_success(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """A third of the calls answered 503: every POST still succeeds, each message stored once."""
    facade = await facade_via_proxy()
    proxy.error_rate = 0.3
    proxy.retry_after = 0  # the proxy's hint; the facade honours hints (unit-tested)
    texts = [f"m{i}" for i in range(100)]
    assert [(await post(facade, text))[0] for text in texts] == [200] * 100
    assert proxy.counts.errored > 0
    assert stored(logging_server) == texts


async def test_lost_replies_never_duplicate(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """logging stores, its reply is dropped, the facade resends the same UUID: stored once."""
    facade = await facade_via_proxy()
    proxy.drop_rate = 0.3
    texts = [f"m{i}" for i in range(100)]
    assert [(await post(facade, text))[0] for text in texts] == [200] * 100
    assert proxy.counts.dropped > 0
    assert stored(logging_server) == texts


async def load(facade: Client, prefix: str, per_client: int, clients: int = CLIENTS
               ) -> list[tuple[str, int, dict[str, Any]]]:
    """``clients`` concurrent clients posting ``per_client`` messages each, as fast as answered."""
    async def client(n: int) -> list[tuple[str, int, dict[str, Any]]]:
        results = []
        for i in range(per_client):
            text = f"{prefix}-{n}-{i}"
            status, body, _ = await post(facade, text)
            results.append((text, status, body))
        return results

    batches = await asyncio.gather(*(client(n) for n in range(clients)))
    return [result for batch in batches for result in batch]


@pytest.mark.parametrize(("drop_rate", "least_acknowledged"), [
    (0.1, 0.995), (0.2, 0.995), (0.3, 0.98),
])
async def test_a_lossy_link_is_not_an_outage(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
    drop_rate: float, least_acknowledged: float,
) -> None:
    """16 concurrent clients, replies dropped after logging stored: the breaker never opens, nearly
    every POST is acknowledged, and every acknowledged message is stored exactly once.

    Group commit drops a whole batch's reply at once, so failures come in clusters: 1,600 POSTs
    keep the share's spread well inside the bound (0.3 ** 5 = 0.24 % expected at 30 %).
    """
    facade = await facade_via_proxy()
    proxy.drop_rate = drop_rate
    with capture_logs() as logs:
        results = await load(facade, "lossy", per_client=100)
    assert state_changes(logs) == []
    acknowledged = [text for text, status, _ in results if status == 200]
    assert len(acknowledged) >= least_acknowledged * len(results)
    assert {status for _, status, _ in results} <= {200, 503}
    assert proxy.counts.dropped >= drop_rate / 2 * proxy.counts.received
    counts = Counter(stored(logging_server))
    assert set(acknowledged) <= set(counts)
    assert set(counts.values()) == {1}


async def test_logging_stopped_under_load_opens_within_about_a_second_then_fails_fast(
    facade_via_proxy: MakeFacade, proxy: FaultProxy,
) -> None:
    """Under load, logging refusing connections opens the write breaker through the newest second's
    rate; then POSTs are refused by the breaker without touching the network."""
    facade = await facade_via_proxy()
    breaker = write_breaker(facade)
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            await post(facade, "load")

    clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    await wait_for(lambda: breaker.calls["successful"] >= 200)
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        await proxy.refuse()
        refused_at = loop.time()
        await wait_for(lambda: breaker.state == "open", timeout=DEFAULTS.breaker_window)
        opened_after = loop.time() - refused_at
        stop.set()
        await asyncio.gather(*clients)
    opened = [e for e in logs if e.get("new_state") == "open"]
    assert opened[0]["breaker"] == "logging.write"
    # The fast window opened it, before the long window's successes aged out.
    assert opened_after < DEFAULTS.breaker_window / 2, opened_after
    await proxy.resume()
    received = proxy.counts.received
    status, body, headers = await post(facade, "refused fast")
    assert (status, proxy.counts.received) == (503, received)
    assert "circuit breaker open" in body["message"]
    assert 1 <= int(headers["Retry-After"]) <= DEFAULTS.breaker_open_duration


async def test_one_client_opens_it_after_a_handful_of_requests_not_one(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """One POST a second with logging stopped: closed after the first request's five attempts, open
    once ten of ten attempts failed (the second request: a share surely over half, see
    wilson_lower_bound), then refused without network; after the open duration, two good trials
    close it."""
    clock = FakeClock()
    facade = await facade_via_proxy(clock=clock)
    breaker = write_breaker(facade)
    await proxy.refuse()
    states = []
    for i in range(6):
        status, body, headers = await post(facade, f"alone-{i}")
        assert status == 503
        states.append(breaker.state)
        clock.advance(1.0)
    assert states == ["closed", "open", "open", "open", "open", "open"]
    assert breaker.calls["failed"] == 10
    assert "circuit breaker open" in body["message"]
    assert headers["Retry-After"] == "1"  # opened at t=1, asked at t=5: 5 - 4 s left

    await proxy.resume()
    clock.advance(breaker.retry_after())
    with capture_logs() as logs:
        assert [(await post(facade, f"back-{i}"))[0] for i in range(2)] == [200, 200]
    assert breaker.state == "closed"
    assert state_changes(logs) == [("logging.write", "open", "half-open"),
                                   ("logging.write", "half-open", "closed")]
    assert stored(logging_server) == ["back-0", "back-1"]


async def test_a_heavy_read_does_not_refuse_writes(
    facade_via_proxy: MakeFacade, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """Reads that time out fail only reads: writes beside them keep being acknowledged, and the
    write breaker never hears of the reads' failures."""
    facade = await facade_via_proxy()
    proxy.hold("/rpc/messages")  # every read outlives RPC_TIMEOUT; writes pass
    read_statuses: list[int] = []

    async def reader() -> None:
        read_statuses.append((await facade.get("/facade")).status)

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    writes = []
    while not all(task.done() for task in readers):
        writes.append((await post(facade, f"steady-{len(writes)}"))[0])
    await asyncio.gather(*readers)
    assert read_statuses == [503] * 4
    assert len(writes) >= 10
    assert set(writes) == {200}
    assert write_breaker(facade).calls["failed"] == 0
    assert read_breaker(facade).calls["failed"] >= 2
    assert len(stored(logging_server)) == len(writes)


async def test_calls_waiting_on_a_hung_logging_are_capped(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer,
) -> None:
    """With logging hanging, at most MAX_CALLS_IN_FLIGHT x RPC_BATCH_MAX_CALLS writes wait on it
    (what the limit's requests could carry: one batch on the wire, the rest queued behind it); the
    rest are answered 503 at once, and shed calls are no failures. A test of those two settings,
    so small values of them here (shipped: 64 x 64, above the facade's own MAX_IN_FLIGHT)."""
    settings = replace(DEFAULTS, logging_url=proxy.url, max_calls_in_flight=2, rpc_batch_max_calls=3,
                       messages_url=str(messages_server.make_url("")).rstrip("/"))
    facade = await aiohttp_client(create_app(settings))
    proxy.hold()  # logging hangs
    writes = facade.app[SERVICE].logging_rpc.writes
    cap, extra = 2 * 3, 5
    pending = [asyncio.create_task(post(facade, f"hung-{i}")) for i in range(cap + extra)]
    await wait_for(lambda: sum(task.done() for task in pending) >= extra)
    assert writes.pending == cap
    done = [task for task in pending if task.done()]
    assert len(done) == extra
    for task in done:
        status, body, headers = task.result()
        assert (status, headers["Retry-After"]) == (503, "1")
        assert "too many calls waiting" in body["message"]
    assert write_breaker(facade).calls["failed"] == 0
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def test_calls_a_batch_has_room_for_are_never_refused(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, messages_server: TestServer,
) -> None:
    """While logging holds its first call, 90 concurrent POSTs (more than MAX_CALLS_IN_FLIGHT,
    fewer than MAX_IN_FLIGHT) all queue for the batches after it, and once it answers all are
    stored: none is refused for want of room, at the shipped settings."""
    gate, held = asyncio.Event(), []

    @web.middleware
    async def hold(request: web.Request, handler: Handler) -> web.StreamResponse:
        held.append(request.path)
        await gate.wait()
        return await handler(request)

    logging_app = create_logging(LoggingSettings())
    logging_app.middlewares.append(hold)
    logging = await aiohttp_server(logging_app)
    settings = replace(DEFAULTS, logging_url=str(logging.make_url("")).rstrip("/"),
                       messages_url=str(messages_server.make_url("")).rstrip("/"))
    facade = await aiohttp_client(create_app(settings))
    writes = facade.app[SERVICE].logging_rpc.writes
    texts = [f"queued-{i}" for i in range(90)]  # the test client opens at most 100 connections
    assert DEFAULTS.max_calls_in_flight < len(texts) < DEFAULTS.max_in_flight
    posts = [asyncio.create_task(post(facade, text)) for text in texts]
    await wait_for(lambda: writes.pending == len(texts) and bool(held))
    assert held == ["/rpc/log"]  # the first call alone, the rest queued behind it
    gate.set()
    assert {status for status, _, _ in await asyncio.gather(*posts)} == {200}
    assert sorted(stored(logging)) == sorted(texts)


async def test_cancelled_calls_do_not_trip_the_breaker(
    facade_via_proxy: MakeFacade, proxy: FaultProxy,
) -> None:
    """Cancelling in-flight calls, more of them than the window's minimum, counts nothing."""
    facade = await facade_via_proxy()
    rpc = facade.app[SERVICE].logging_rpc
    breaker = write_breaker(facade)
    proxy.hold()  # every call stays on the wire until it is cancelled
    for i in range(DEFAULTS.breaker_min_calls + 5):
        call = asyncio.create_task(rpc.log(uuid=f"00000000-0000-4000-8000-{i:012d}", msg="x"))
        await wait_for(lambda n=i: proxy.counts.received > n)  # type: ignore[misc]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert breaker.state == "closed"
    assert breaker.calls == {"successful": 0, "failed": 0, "ignored": 0, "not_permitted": 0}


async def test_get_falls_back_when_messages_is_down(
    aiohttp_client: AiohttpClient, logging_server: TestServer, unused_tcp_port: int
) -> None:
    """GET /facade with messages unreachable answers 200 with the logs and marks messages unavailable."""
    settings = replace(DEFAULTS, logging_url=str(logging_server.make_url("")).rstrip("/"),
                       messages_url=f"http://127.0.0.1:{unused_tcp_port}")
    facade = await aiohttp_client(create_app(settings))
    await facade.post("/facade", json={"msg": "still here"})
    resp = await facade.get("/facade")
    assert resp.status == 200
    assert await resp.json() == {"logs": ["still here"], "message": "unavailable",
                                 "unavailable": ["messages"]}


async def test_get_without_logging_is_503(facade_via_proxy: MakeFacade, proxy: FaultProxy) -> None:
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
