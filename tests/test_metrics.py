"""GET /metrics on every service: Prometheus text that moves as the system does, under faults too.

Scrapes are parsed with prometheus-client's own parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from facade.app import create_app
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience import PolicyCollector
from resilience.testing import FakeClock
from resilience.testing.faults import FaultProxy
from tests.conftest import AiohttpClient

Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Client) -> Samples:
    """Every sample of one scrape, keyed by name and labels."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


@pytest.fixture
async def proxy(logging_server: TestServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(str(logging_server.make_url("")), seed=5) as fault_proxy:
        yield fault_proxy


async def facade_via(aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer,
                     clock: FakeClock | None = None) -> Client:
    settings = replace(FacadeSettings(), logging_url=proxy.url,
                       messages_url=str(messages_server.make_url("")).rstrip("/"))
    return await aiohttp_client(create_app(settings, clock=clock) if clock else create_app(settings))


async def test_requests_are_counted_by_route_method_and_status(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer,
) -> None:
    """Two POSTs and a bad one show as two 200s and one 422 on /facade, with their latencies."""
    facade = await facade_via(aiohttp_client, proxy, messages_server)
    for body in ({"msg": "a"}, {"msg": "b"}, {"nope": 1}):
        await facade.post("/facade", json=body)
    samples = await scrape(facade)
    assert value(samples, "http_requests_total", route="/facade", method="POST", status="200") == 2
    assert value(samples, "http_requests_total", route="/facade", method="POST", status="422") == 1
    assert value(samples, "http_request_duration_seconds_count", route="/facade", method="POST") == 3
    assert value(samples, "retry_calls_total", name="logging.write", kind="successful_without_retry") == 2


async def test_a_dropped_reply_moves_the_retry_counter(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer,
) -> None:
    """A reply lost after logging stored the message is one call successful with retry, and one
    failed and one successful call through the write breaker."""
    facade = await facade_via(aiohttp_client, proxy, messages_server)
    proxy.drop_next = 1
    assert (await facade.post("/facade", json={"msg": "once"})).status == 200
    samples = await scrape(facade)
    assert value(samples, "retry_calls_total", name="logging.write", kind="successful_with_retry") == 1
    assert value(samples, "retry_calls_total", name="logging.write", kind="successful_without_retry") == 0
    assert value(samples, "circuitbreaker_calls_total", name="logging.write", kind="failed") == 1
    assert value(samples, "circuitbreaker_calls_total", name="logging.write", kind="successful") == 1


async def test_an_open_breaker_moves_the_state_gauge(
    aiohttp_client: AiohttpClient, proxy: FaultProxy, messages_server: TestServer,
) -> None:
    """With logging refusing, the write breaker's state gauge moves from closed to open, its failure
    rate to 1, and refused calls count as not permitted."""
    clock = FakeClock()
    facade = await facade_via(aiohttp_client, proxy, messages_server, clock)
    before = await scrape(facade)
    assert value(before, "circuitbreaker_state", name="logging.write", state="closed") == 1
    assert value(before, "circuitbreaker_failure_rate", name="logging.write") == -1
    await proxy.refuse()
    for _ in range(5):  # one a second: the second opens it (10 of 10 attempts failed)
        await facade.post("/facade", json={"msg": "down"})
        clock.advance(1.0)
    after = await scrape(facade)
    assert value(after, "circuitbreaker_state", name="logging.write", state="open") == 1
    assert value(after, "circuitbreaker_state", name="logging.write", state="closed") == 0
    assert value(after, "circuitbreaker_calls_total", name="logging.write", kind="not_permitted") == 3
    assert value(after, "retry_calls_total", name="logging.write", kind="failed_with_retry") == 2


async def test_logging_counts_what_it_stored(aiohttp_client: AiohttpClient) -> None:
    """logging's scrape counts stored, duplicate and conflicting messages and the store's size."""
    client = await aiohttp_client(create_logging(LoggingSettings()))
    uuid = "12345678-1234-4678-9234-567812345678"
    for msg in ("first", "first", "other"):
        await client.post("/rpc/log", json={"uuid": uuid, "msg": msg})
    samples = await scrape(client)
    assert value(samples, "logging_messages_total", outcome="stored") == 1
    assert value(samples, "logging_messages_total", outcome="duplicate") == 1
    assert value(samples, "logging_messages_total", outcome="conflict") == 1
    assert value(samples, "logging_store_messages") == 1
    assert value(samples, "http_requests_total", route="/rpc/{method}", method="POST",
                 status="409") == 1


def test_a_policy_collector_takes_a_function_not_the_policies_themselves() -> None:
    """Policies given as a list (read at every scrape) are refused when the collector is made,
    not at the first scrape."""
    with pytest.raises(TypeError, match=r"PolicyCollector\(lambda: policies\)"):
        PolicyCollector([])  # type: ignore[arg-type]
    assert list(PolicyCollector(list).collect())
