"""The facade sheds load: past MAX_IN_FLIGHT, 503 with Retry-After at once; stalled bodies hold no slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from resilience import Settings
from tests.conftest import AiohttpServer, stored, wait_for
from tests.openapi_oracle import contract, reply_errors
from tests.rawhttp import affordable_connections, open_connections, request_head

Client = TestClient[web.Request, web.Application]
MakeFacade = Callable[..., Awaitable[Client]]
JSON = {"Content-Type": "application/json"}
#: Abusive connections: 5,000 where the file limit allows (the issue's count), fewer elsewhere.
STALLED = affordable_connections(5_000)


class GatedLogging:
    """A stand-in logging service whose every call waits until the gate opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    async def call(self, request: web.Request) -> web.Response:
        self.waiting += 1
        await self.gate.wait()
        return web.json_response({"result": {"stored": True}})


async def test_past_the_limit_a_request_is_shed_at_once(make_facade: MakeFacade,
                                                        aiohttp_server: AiohttpServer) -> None:
    """With MAX_IN_FLIGHT requests held downstream, the next one gets 503 + Retry-After while they
    are still in flight; /health is still answered; the held ones then finish normally."""
    logging = GatedLogging()
    app = web.Application()
    app.router.add_post("/rpc/{method}", logging.call)
    downstream = await aiohttp_server(app)
    facade = await make_facade(max_in_flight=2, logging_url=str(downstream.make_url("")).rstrip("/"))

    held = [asyncio.create_task(facade.post("/facade", json={"msg": f"held {i}"})) for i in range(2)]
    await wait_for(lambda: logging.waiting >= 2)
    shed = await facade.post("/facade", json={"msg": "one too many"})
    assert shed.status == 503
    assert shed.headers["Retry-After"] == "1"
    assert await shed.json() == {"status": "failure", "message": "the facade is at its limit of 2 "
                                                                 "requests in flight; retry in 1 s"}
    assert reply_errors(contract(Settings(max_in_flight=2)), "POST", "/facade", 503,
                        shed.headers, await shed.read()) == []
    assert (await facade.get("/health")).status == 200
    assert not any(task.done() for task in held)
    logging.gate.set()
    assert [(await task).status for task in held] == [200, 200]
    assert (await facade.post("/facade", json={"msg": "after"})).status == 200


async def test_stalled_bodies_hold_no_slot(make_facade: MakeFacade, logging_server: TestServer) -> None:
    """With far more clients stalling their bodies than MAX_IN_FLIGHT, a normal POST is still
    answered 200 while they all stay open (the body deadline, not the slots, bounds them)."""
    assert STALLED >= 100, "the file limit leaves too few connections for this test"
    facade = await make_facade(max_in_flight=8)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(STALLED):
            _, writer = await stack.enter_async_context(
                request_head(facade.server, "/facade", {**JSON, "Content-Length": "1000"}))
            writer.write(b'{"msg": "')
        await wait_for(lambda: open_connections(facade.server) >= STALLED, timeout=60)

        resp = await facade.post("/facade", json={"msg": "normal"})
        assert resp.status == 200
        assert stored(logging_server) == ["normal"]
        assert open_connections(facade.server) >= STALLED  # the abusive ones are all still there
