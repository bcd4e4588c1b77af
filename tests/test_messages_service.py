"""The messages service: a stub with a static answer, and on the stream the messages it consumed."""

from __future__ import annotations

import uuid
from unittest.mock import AsyncMock

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from messages.service import MessagesService, StreamMessagesService
from resilience import InvalidArgument, ServiceUnavailable
from resilience.testing import call_entrypoint, worker_factory
from resilience.testing.events import deliver


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


async def page(service: StreamMessagesService, **kwargs: int) -> object:
    """The page as its caller gets it (encoded, then read)."""
    return orjson.loads(orjson.dumps(await call_entrypoint(service, "messages", **kwargs)))


def stream_service() -> StreamMessagesService:
    """The messages service on the stream, without a broker: caught up at once."""
    events = AsyncMock()
    return worker_factory(StreamMessagesService, events=events)


async def test_on_the_stream_each_message_is_kept_once_in_order() -> None:
    """A redelivered or replayed event changes nothing; pages come as logging's do."""
    service = stream_service()
    uuids = [str(uuid.uuid4()) for _ in range(3)]
    for u, text in zip(uuids, ["a", "b", "c"], strict=True):
        assert await deliver(service, "facade", "message_logged", {"uuid": u, "msg": text}) == 1
    await deliver(service, "facade", "message_logged", {"uuid": uuids[0], "msg": "a"})
    assert await page(service) == {"logs": ["a", "b", "c"]}
    assert await page(service, offset=1, limit=1) == {"logs": ["b"], "next_offset": 2}
    service.events.caught_up.assert_awaited_with("keep", 0.5)


async def test_on_the_stream_an_event_that_is_not_a_message_is_ignored() -> None:
    service = stream_service()
    for payload in ([1], {"uuid": "not-a-uuid", "msg": "x"}, {"uuid": str(uuid.uuid4()), "msg": 5}):
        await deliver(service, "facade", "message_logged", payload)
    assert (service.kept, service.texts) == ({}, [])


async def test_on_the_stream_a_read_while_catching_up_is_unavailable() -> None:
    service = stream_service()
    service.events.caught_up.side_effect = ServiceUnavailable("messages", "catching up")
    with pytest.raises(ServiceUnavailable):
        await call_entrypoint(service, "messages")
    with pytest.raises(InvalidArgument):
        await call_entrypoint(service, "messages", offset=-1)
