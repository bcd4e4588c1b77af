"""A request body must arrive within BODY_READ_TIMEOUT: stalled and endless bodies are cut on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from multidict import CIMultiDict

from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from tests.conftest import AiohttpServer, stored, wait_for
from tests.openapi_oracle import contract, reply_errors
from tests.rawhttp import closed_by_server, open_connections, read_reply, request_head

MakeFacade = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
DEADLINE = 0.5
JSON = {"Content-Type": "application/json"}


@contextlib.asynccontextmanager
async def stalled(server: BaseTestServer, path: str) -> AsyncIterator[asyncio.StreamReader]:
    """Announce a 60,000-byte body, send 59,999 bytes of it, and stop."""
    async with request_head(server, path, {**JSON, "Content-Length": "60000"}) as (reader, writer):
        writer.write(b'{"msg": "' + b"x" * (60_000 - 10))
        await writer.drain()
        yield reader


async def test_a_stalled_body_gets_408_and_its_connection_closed(
    make_facade: MakeFacade, logging_server: TestServer
) -> None:
    """A body one byte short of its Content-Length is answered 408 after the deadline, not before;
    then the connection (and the buffer it held) is gone and nothing is stored."""
    facade = await make_facade(body_read_timeout=DEADLINE)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with stalled(facade.server, "/facade") as reader, asyncio.timeout(DEADLINE * 20):
        reply = await read_reply(reader)
        assert await closed_by_server(reader)
    assert loop.time() - started >= DEADLINE
    assert reply.status == 408
    assert reply.json() == {"status": "failure", "message": "request body did not arrive within 0.5 s"}
    assert reply_errors(contract(FacadeSettings(body_read_timeout=DEADLINE)), "POST", "/facade", 408,
                        CIMultiDict(reply.headers), reply.body) == []
    await wait_for(lambda: open_connections(facade.server) == 0)
    assert stored(logging_server) == []


async def test_an_endless_chunked_body_is_cut_at_the_deadline(make_facade: MakeFacade,
                                                              logging_server: TestServer) -> None:
    """A chunked body trickled a byte at a time, never ending, is cut with 408: the deadline
    bounds the whole body, not the gap between chunks."""
    facade = await make_facade(body_read_timeout=DEADLINE)
    headers = {**JSON, "Transfer-Encoding": "chunked"}
    async with request_head(facade.server, "/facade", headers) as (reader, writer):

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"1\r\n \r\n")
                    await writer.drain()
                    await asyncio.sleep(0.01)  # a slow sender, well inside every size limit

        sender = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(DEADLINE * 20):
                reply = await read_reply(reader)
        finally:
            sender.cancel()
        async with asyncio.timeout(DEADLINE * 20):
            assert await closed_by_server(reader)
    assert reply.status == 408
    assert stored(logging_server) == []


async def test_the_rpc_server_cuts_a_stalled_body_too(aiohttp_server: AiohttpServer) -> None:
    """logging (every RPC app) has the same deadline: 408 with an error body, nothing stored."""
    logging_server = await aiohttp_server(create_logging(LoggingSettings(body_read_timeout=DEADLINE)))
    async with stalled(logging_server, "/rpc/log") as reader, asyncio.timeout(DEADLINE * 20):
        reply = await read_reply(reader)
        assert await closed_by_server(reader)
    assert reply.status == 408
    message = "request body did not arrive within 0.5 s"
    assert reply.json() == {"error": {"type": "RequestTimeout", "message": message, "args": [message]}}
    assert stored(logging_server) == []


async def test_a_body_that_arrives_in_time_is_served(make_facade: MakeFacade,
                                                     logging_server: TestServer) -> None:
    """Reading bodies in a middleware changes nothing for a normal client: its POST is stored."""
    facade = await make_facade(body_read_timeout=DEADLINE)
    resp = await facade.post("/facade", json={"msg": "on time"})
    assert resp.status == 200
    assert stored(logging_server) == ["on time"]
