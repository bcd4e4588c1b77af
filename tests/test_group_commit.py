"""Group commit and shared reads on real sockets, with the shipped settings.

logging runs as a real app behind a ``FaultProxy``, which counts the
requests that reach it: concurrent writes must reach it as fewer requests,
each caller must still get its own answer, and a read must never be
answered by a request that started before it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from facade.app import create_app
from facade.keys import SERVICE
from facade.settings import FacadeSettings
from resilience import (
    AsyncCircuitBreaker,
    Balancer,
    BreakerRule,
    CallPolicy,
    RpcProxy,
    ServiceUnavailable,
    Target,
)
from resilience.rpc.transport import Transport
from resilience.testing import FakeClock
from resilience.testing.faults import FaultProxy
from tests.conftest import AiohttpClient, stored, wait_for

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def proxy(logging_server: TestServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(str(logging_server.make_url("")), seed=3) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def facade(aiohttp_client: AiohttpClient, proxy: FaultProxy,
                 messages_server: TestServer) -> Client:
    settings = replace(FacadeSettings(), logging_url=proxy.url,
                       messages_url=str(messages_server.make_url("")).rstrip("/"))
    return await aiohttp_client(create_app(settings))


async def post(facade: Client, text: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {} if key is None else {"Idempotency-Key": key}
    resp = await facade.post("/facade", json={"msg": text}, headers=headers)
    return resp.status, await resp.json()


async def test_concurrent_posts_reach_logging_as_few_requests(
    facade: Client, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """64 POSTs at once: all acknowledged and stored once, in far fewer requests than POSTs."""
    texts = [f"together-{i}" for i in range(64)]
    replies = await asyncio.gather(*(post(facade, text) for text in texts))
    assert [status for status, _ in replies] == [200] * 64
    assert Counter(stored(logging_server)) == Counter(texts)
    writes = facade.app[SERVICE].logging_rpc.writes
    assert (writes.calls, proxy.counts.received) == (64, writes.requests)
    assert writes.requests <= 8


async def test_a_lone_post_goes_alone_on_the_single_call_path(
    facade: Client, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """One POST with nothing in flight is one ordinary ``/rpc/log`` request, not a batch."""
    assert (await post(facade, "alone"))[0] == 200
    assert proxy.counts.paths == Counter({"/rpc/log": 1})
    assert stored(logging_server) == ["alone"]


async def test_each_post_in_a_batch_gets_its_own_answer(
    facade: Client, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """In one batch, a reused Idempotency-Key with other text is that client's 422 alone; the
    others are stored, and the same key with the same text is answered with the same UUID."""
    assert (await post(facade, "first text", key="order-7"))[0] == 200
    proxy.hold()  # the next request stays on the wire until every other call has queued
    holder = asyncio.create_task(post(facade, "holder"))
    await wait_for(lambda: proxy.counts.received == 2)
    posts = asyncio.gather(post(facade, "other text", key="order-7"),
                           post(facade, "first text", key="order-7"),
                           *(post(facade, f"fine-{i}") for i in range(4)))
    writes = facade.app[SERVICE].logging_rpc.writes
    await wait_for(lambda: writes.pending == 7)
    proxy.release()
    queued = await posts
    assert (await holder)[0] == 200
    statuses = [status for status, _ in queued]
    assert statuses == [422, 200, 200, 200, 200, 200]
    assert "Idempotency-Key" in queued[0][1]["message"]
    # The key's first POST and the holder alone, then one batch.
    assert proxy.counts.paths == Counter({"/rpc/log": 2, "/rpc": 1})
    assert Counter(stored(logging_server)) == Counter(
        ["first text", "holder", *(f"fine-{i}" for i in range(4))])


async def test_a_batch_whose_reply_is_lost_is_resent_and_stored_once(
    facade: Client, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """The first reply (the lone call's) and the second (the batch's) are dropped after logging
    stored them; both are resent with the same UUIDs and every message is stored exactly once."""
    proxy.drop_next = 2
    texts = [f"resent-{i}" for i in range(10)]
    replies = await asyncio.gather(*(post(facade, text) for text in texts))
    assert [status for status, _ in replies] == [200] * 10
    assert proxy.counts.dropped == 2
    assert Counter(stored(logging_server)) == Counter(texts)


async def test_a_read_never_shares_a_request_that_started_before_it(
    facade: Client, proxy: FaultProxy, logging_server: TestServer,
) -> None:
    """A GET made after a POST was acknowledged sees it, even while an older GET is on the wire;
    GETs made together while one is on the wire share the next read."""
    proxy.hold("/rpc/messages")  # the older read stays on the wire; writes pass
    older = asyncio.create_task(facade.get("/facade"))
    await wait_for(lambda: proxy.counts.paths["/rpc/messages"] == 1)
    assert (await post(facade, "after the first read"))[0] == 200
    reads = facade.app[SERVICE].logging_rpc.reads
    gets = asyncio.gather(*(facade.get("/facade") for _ in range(5)))
    await wait_for(lambda: reads.calls == 6)  # the five queued behind the older read
    proxy.release()
    newer = await gets
    assert (await older).status == 200
    for resp in newer:
        assert (await resp.json())["logs"] == ["after the first read"]
    assert (reads.calls, reads.requests) == (6, 2)


class SplitWire(Transport):
    """A transport whose first ``failing`` batch requests fail (transient), and whose single
    calls on ``/rpc/log`` wait for ``gate``; it records the size of every request."""

    def __init__(self, failing: int) -> None:
        super().__init__(cast(aiohttp.ClientSession, None), "logging")
        self.failing = failing
        self.gate = asyncio.Event()
        self.sizes: list[int] = []

    async def post(self, url: URL, body: bytes, headers: Mapping[str, str],
                   timeout: float) -> tuple[int, bytes]:
        payload = orjson.loads(body)
        if url.path == "/rpc":
            self.sizes.append(len(payload))
            if self.failing > 0:
                self.failing -= 1
                raise ServiceUnavailable("logging", "reset")
            return 200, orjson.dumps([{"result": item["kwargs"]["msg"]} for item in payload])
        self.sizes.append(1)
        await self.gate.wait()
        return 200, orjson.dumps({"result": payload["msg"]})


async def test_a_batch_that_lost_every_attempt_goes_on_in_halves() -> None:
    """A batch of 4 whose 2 attempts both fail is not failed whole: its halves are sent on their
    own requests, and every call gets its result."""
    clock = FakeClock()
    policy = CallPolicy(balancer=Balancer([Target("http://logging", AsyncCircuitBreaker(
        "logging.write", service="logging", rule=BreakerRule(min_calls=100), clock=clock))]),
        attempts=2, clock=clock, sleep=clock.sleep)
    proxy = RpcProxy(cast(aiohttp.ClientSession, None), "logging", policy, batched={"log"})
    wire = proxy.transport = SplitWire(failing=2)
    first = asyncio.create_task(proxy.log(msg="first"))
    await wait_for(lambda: wire.sizes == [1])
    rest = [asyncio.create_task(proxy.log(msg=f"m{i}")) for i in range(4)]
    await wait_for(lambda: proxy.writes.pending == 5)
    wire.gate.set()
    assert await asyncio.gather(first, *rest) == ["first", "m0", "m1", "m2", "m3"]
    assert wire.sizes == [1, 4, 4, 2, 2]
