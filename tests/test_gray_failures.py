"""Gray failures on real sockets, with the shipped settings: a reply that never comes, a downstream
slower than the per-attempt timeout, and its recovery.

logging runs as a real app behind a ``FaultProxy``; the facade talks to the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from facade.app import create_app
from facade.keys import SERVICE
from facade.settings import FacadeSettings
from resilience import AsyncCircuitBreaker
from resilience.policies.pipeline import CallPolicy
from resilience.testing import FakeClock
from resilience.testing.faults import FaultProxy
from scripts.cluster import Cluster
from scripts.stop_resume import SETTLE, stop_and_resume
from tests.conftest import AiohttpClient, stored, wait_for

Client = TestClient[web.Request, web.Application]
DEFAULTS = FacadeSettings()
CLIENTS = 16
#: Later than the shipped RPC_TIMEOUT: every try times out.
SLOW = DEFAULTS.rpc_timeout + 0.5


@pytest.fixture
async def proxy(logging_server: TestServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(str(logging_server.make_url("")), seed=11) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def facade(aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer) -> Client:
    """The facade with the shipped settings, logging reached through the proxy, its latency
    tracker warmed by 40 POSTs (the hedge delay follows observed latency from then on)."""
    settings = replace(DEFAULTS, logging_url=proxy.url,
                       messages_url=str(messages_server.make_url("")).rstrip("/"))
    client = await aiohttp_client(create_app(settings))
    for i in range(40):
        assert (await post(client, f"warm-{i}"))[0] == 200
    return client


def write_policy(facade: Client) -> CallPolicy:
    policy: CallPolicy = facade.app[SERVICE].logging_rpc.method_policies["log"]
    return policy


def write_breaker(facade: Client) -> AsyncCircuitBreaker:
    (breaker,) = write_policy(facade).breakers
    return breaker


async def post(facade: Client, text: str) -> tuple[int, dict[str, Any]]:
    resp = await facade.post("/facade", json={"msg": text})
    return resp.status, await resp.json()


async def test_a_swallowed_reply_is_hedged_not_waited_out(facade: Client, proxy: FaultProxy,
                                                          logging_server: TestServer) -> None:
    """logging stores the message but its reply never comes: a hedge sent after the latency-derived
    delay answers (a duplicate, acknowledged), so no try times out and nothing is retried; the
    breaker sees no failure; the message is stored once."""
    policy = write_policy(facade)
    assert policy.hedging is not None
    assert policy.hedging.delay() < DEFAULTS.hedge_delay_max  # it follows the warm-up's latency
    sent, won = policy.hedging.sent, policy.hedging.won  # a slow warm-up POST may have had one
    proxy.swallow_next = 1
    with capture_logs() as logs:
        assert (await post(facade, "swallowed"))[0] == 200
    assert proxy.counts.swallowed == 1
    assert (policy.hedging.sent - sent, policy.hedging.won - won) == (1, 1)
    assert write_breaker(facade).calls["failed"] == 0
    assert not [e for e in logs if e["event"] == "retrying call"]
    assert stored(logging_server).count("swallowed") == 1


async def test_calls_behind_a_silent_request_do_not_wait_for_it(facade: Client, proxy: FaultProxy,
                                                                logging_server: TestServer) -> None:
    """A request whose reply and both hedges' replies are swallowed waits for its timeout; the
    POSTs that come meanwhile leave beside it (it is late) and are all acknowledged before it."""
    proxy.swallow_next = 1 + DEFAULTS.hedge_max
    silent = asyncio.create_task(post(facade, "silent"))
    await wait_for(lambda: proxy.counts.swallowed == 1 + DEFAULTS.hedge_max)
    replies = await asyncio.gather(*(post(facade, f"beside-{i}") for i in range(10)))
    assert [status for status, _ in replies] == [200] * 10
    assert not silent.done()  # still waiting out RPC_TIMEOUT, then retried
    assert (await silent)[0] == 200
    assert stored(logging_server).count("silent") == 1


async def test_a_slow_logging_opens_the_breaker_and_is_noticed_when_fast_again(
    facade: Client, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """Every reply later than RPC_TIMEOUT under 16 clients: the breaker opens (tries fail in a row,
    earlier successes notwithstanding); while open a POST is refused without reaching logging;
    once logging is fast again a health probe half-opens it and trials close it."""
    breaker = write_breaker(facade)
    proxy.delay = SLOW
    stop = asyncio.Event()

    async def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            await post(facade, f"slow-{n}-{i}")
            i += 1

    with capture_logs() as logs:
        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        await wait_for(lambda: breaker.state == "open", timeout=10.0)
        received = proxy.counts.received
        status, body = await post(facade, "while open")
        assert (status, proxy.counts.received) == (503, received)
        assert "circuit breaker open" in body["message"]
        proxy.delay = 0.0
        await wait_for(lambda: breaker.state == "closed", timeout=DEFAULTS.breaker_open_duration + 1.0)
        stop.set()
        await asyncio.gather(*clients)
    opened = [e for e in logs if e.get("new_state") == "open"]
    half_opened = [e for e in logs if e.get("new_state") == "half-open"]
    assert opened[0]["reason"].endswith("calls in a row failed")
    assert half_opened[-1]["reason"] == "a health probe succeeded"
    assert (await post(facade, "after"))[0] == 200


async def test_a_backlog_drained_after_a_stall_does_not_open_the_breaker(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer,
) -> None:
    """logging stalls, then answers everything held at once (late replies: slow successes): the
    breaker stays closed and counts them as successes."""
    clock = FakeClock()
    facade = await aiohttp_client(create_app(replace(
        DEFAULTS, logging_url=proxy.url, messages_url=str(messages_server.make_url("")).rstrip("/")),
        clock=clock))
    breaker = write_breaker(facade)
    proxy.hold()
    held = [asyncio.create_task(post(facade, f"held-{i}")) for i in range(CLIENTS)]
    await wait_for(lambda: proxy.counts.received >= 2)
    clock.advance(DEFAULTS.breaker_slow_call_duration)  # the held tries are slow by now
    proxy.release()
    assert [status for status, _ in await asyncio.gather(*held)] == [200] * CLIENTS
    assert breaker.state == "closed"
    assert breaker.calls["failed"] == 0


@pytest.mark.e2e
async def test_logging_stopped_then_resumed_under_load_is_noticed_at_once(tmp_path: Path) -> None:
    """Real processes, 400 POSTs a second (open loop): logging SIGSTOPped for 5 s, then SIGCONT.
    No breaker opens after the resume, at least 95 % of the POSTs started 1.5 s after it are
    acknowledged, nothing is lost or stored twice. Shipped settings."""
    with Cluster(tmp_path) as cluster:
        cluster.start_all()
        outcome = await stop_and_resume(cluster, stop=5.0)
    assert outcome.opened_after_resume == 0
    assert outcome.acknowledged(since=SETTLE) >= 0.95
    assert (outcome.lost, outcome.duplicated) == (0, 0)
