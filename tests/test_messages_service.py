"""The messages service: a stub with a static answer."""

from __future__ import annotations

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from messages.service import MessagesService
from resilience.testing import call_entrypoint, worker_factory


async def test_message_is_static() -> None:
    """It answers "not implemented yet", as the assignment's stub does."""
    assert await call_entrypoint(worker_factory(MessagesService), "message") == "not implemented yet"


async def test_served_over_rpc(messages_server: TestServer) -> None:
    """The real app answers the RPC call over a socket."""
    async with ClientSession() as session, session.post(
        messages_server.make_url("/rpc/message"), json={}
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == {"result": "not implemented yet"}
