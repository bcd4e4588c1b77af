"""The facade's domain with fake downstream proxies: UUIDs, idempotency, fan-out, fallback."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest

from facade.ids import KeyUuids
from facade.service import FacadeService, IdempotencyKeyReused
from resilience import CircuitOpen, Conflict, InvalidArgument, MethodNotFound, RemoteError, ServiceUnavailable
from resilience.testing import worker_factory
from resilience.testing.events import RecordingDispatcher

PAGE = b'{"logs":["msg1"]}'


@pytest.fixture
def service() -> FacadeService:
    facade = worker_factory(FacadeService)
    facade.logging_rpc.log.return_value = {"stored": True}
    facade.logging_rpc.call.return_value = memoryview(PAGE)
    facade.messages_rpc.message.return_value = "not implemented yet"
    return facade


async def read(service: FacadeService, *args: int) -> Any:
    return orjson.loads(await service.get_messages(*args))


def logging_mock(service: FacadeService) -> AsyncMock:
    return service.logging_rpc  # type: ignore[return-value]


async def test_post_mints_one_uuid4_and_sends_it_with_the_text(service: FacadeService) -> None:
    """The UUID is minted once per message and is what logging receives."""
    message_id = await service.post_message("msg1")
    assert uuid.UUID(message_id).version == 4
    logging_mock(service).log.assert_awaited_once_with(uuid=message_id, msg="msg1")


async def test_idempotency_key_gives_the_same_uuid_every_time(service: FacadeService) -> None:
    """A client's retry with the same key lands on the same UUID; other keys on others."""
    first = await service.post_message("m", "key-1")
    again = await service.post_message("m", "key-1")
    other = await service.post_message("m", "key-2")
    assert first == again != other
    assert uuid.UUID(first).version == 8


async def test_key_uuids_depend_on_the_secret_not_on_the_process() -> None:
    """Two facades with one secret agree on a key's UUID (a restart, another instance); another
    secret gives another UUID, so nobody without it can compute one in advance."""
    one = worker_factory(FacadeService, key_uuids=KeyUuids(b"s3cret"))
    two = worker_factory(FacadeService, key_uuids=KeyUuids(b"s3cret"))
    other = worker_factory(FacadeService, key_uuids=KeyUuids(b"another"))
    ids = [await facade.post_message("m", "order-7") for facade in (one, two, other)]
    assert ids[0] == ids[1] != ids[2]


async def test_reused_key_with_another_message_is_refused(service: FacadeService) -> None:
    """logging's Conflict on a key-derived UUID means the key was reused for other text."""
    logging_mock(service).log.side_effect = Conflict("different text")
    with pytest.raises(IdempotencyKeyReused):
        await service.post_message("other", "key-1")


@pytest.mark.parametrize(("error", "key"), [
    (MethodNotFound("messages has no method 'log'"), "key-1"),
    (InvalidArgument("msg is longer than 5 characters"), None),
    (Conflict("a clash on a fresh random UUID"), None),
])
async def test_a_refusal_the_client_did_not_cause_is_a_remote_error(
    service: FacadeService, error: Exception, key: str | None
) -> None:
    """A method or argument logging refuses (or a clash without a key) is a misconfiguration:
    raised as RemoteError (502), never as the client's fault."""
    logging_mock(service).log.side_effect = error
    with pytest.raises(RemoteError) as raised:
        await service.post_message("msg", key)
    assert (raised.value.service, raised.value.error_type) == ("logging", type(error).__name__)


async def test_get_asks_both_services_at_once(service: FacadeService) -> None:
    """logging and messages are called concurrently: each waits for the other to have started."""
    arrived: list[str] = []
    both = asyncio.Event()

    def meet(name: str, reply: object) -> object:
        async def wait_for_the_other(*_: object, **__: object) -> object:
            arrived.append(name)
            if len(arrived) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 1)  # sequential calls would time out here
            return reply
        return wait_for_the_other

    logging_mock(service).call.side_effect = meet("logging", PAGE)
    service.messages_rpc.message.side_effect = meet("messages", "stub")  # type: ignore[attr-defined]
    assert await read(service) == {"logs": ["msg1"], "message": "stub"}
    assert sorted(arrived) == ["logging", "messages"]


async def test_a_get_cancelled_while_logging_answers_cancels_the_messages_call(
        service: FacadeService) -> None:
    """A GET cancelled (its client gone) while both calls are out leaves no messages call behind."""
    started, both_cancelled = asyncio.Event(), asyncio.Event()
    cancelled: list[bool] = []

    async def hang(*_: object, **__: object) -> object:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            if len(cancelled) == 2:
                both_cancelled.set()
            raise
        return None

    logging_mock(service).call.side_effect = hang
    service.messages_rpc.message.side_effect = hang  # type: ignore[attr-defined]
    get = asyncio.create_task(service.get_messages())
    await started.wait()
    await asyncio.sleep(0)  # the messages call has started too
    get.cancel()
    with pytest.raises(asyncio.CancelledError):
        await get
    await asyncio.wait_for(both_cancelled.wait(), 1)  # without the cancel, messages hangs on


async def test_get_passes_paging_to_logging_and_its_page_on_undecoded(service: FacadeService) -> None:
    """offset and limit reach logging unchanged; its page's bytes come back with the message
    spliced in, next_offset and all, byte for byte."""
    logging_mock(service).call.return_value = memoryview(b'{"logs":["a","b"],"next_offset":7}')
    assert await service.get_messages(5, 2) == (
        b'{"logs":["a","b"],"next_offset":7,"message":"not implemented yet"}')
    logging_mock(service).call.assert_awaited_once_with(
        "messages", {"offset": 5, "limit": 2}, undecoded=True)


@pytest.mark.parametrize("reply", [b'["msg1"]', b'{"logs":["a"]', ["msg1"]])
async def test_a_page_that_is_not_one_is_a_bad_reply(service: FacadeService, reply: object) -> None:
    """Bytes the facade cannot splice (or a value that was decoded) are logging's failure: 502."""
    logging_mock(service).call.return_value = reply
    with pytest.raises(RemoteError, match="BadReply"):
        await service.get_messages()


@pytest.mark.parametrize("error", [
    ServiceUnavailable("messages", "refused"),
    CircuitOpen("messages", "open", 3.0),
    RemoteError("messages", "InternalError", "internal error", 500),
    MethodNotFound("logging has no method 'message'"),
])
async def test_get_without_messages_still_answers(service: FacadeService, error: Exception) -> None:
    """When messages fails, GET still returns the logs and says the message part is unavailable."""
    service.messages_rpc.message.side_effect = error  # type: ignore[attr-defined]
    assert await read(service) == {
        "logs": ["msg1"], "message": "unavailable", "unavailable": ["messages"]}


async def test_get_without_logging_fails(service: FacadeService) -> None:
    """Without logging there is nothing to answer: its error is raised."""
    logging_mock(service).call.side_effect = ServiceUnavailable("logging", "refused")
    with pytest.raises(ServiceUnavailable):
        await service.get_messages()


@pytest.fixture
def streamed(service: FacadeService) -> tuple[FacadeService, RecordingDispatcher]:
    """The facade on the cluster: each message also published, reads listing messages'."""
    dispatch = RecordingDispatcher()
    service.dispatch = dispatch  # type: ignore[assignment]
    service.messages_rpc.messages.return_value = {"logs": ["msg1"]}
    return service, dispatch


async def test_with_events_a_message_is_published_once_logging_has_it(
        streamed: tuple[FacadeService, RecordingDispatcher]) -> None:
    """The event carries the UUID and text, under the UUID as its ID (the stream's dedup key)."""
    service, dispatch = streamed
    message_id = await service.post_message("msg1")
    assert dispatch.events == [("message_logged", {"uuid": message_id, "msg": "msg1"}, message_id)]


async def test_with_events_a_stream_that_is_down_fails_the_post_and_a_retry_completes_it(
        streamed: tuple[FacadeService, RecordingDispatcher]) -> None:
    """logging stored it but the stream did not take it: the POST fails (503); the client's retry
    with its key sends the same UUID to both (logging acknowledges it as a duplicate)."""
    service, dispatch = streamed
    dispatch.fail_with = ServiceUnavailable("events", "no stream leader")
    with pytest.raises(ServiceUnavailable):
        await service.post_message("msg1", "key-1")
    dispatch.fail_with = None
    message_id = await service.post_message("msg1", "key-1")
    assert [call.kwargs["uuid"] for call in logging_mock(service).log.await_args_list] == [
        message_id, message_id]
    assert dispatch.events == [("message_logged", {"uuid": message_id, "msg": "msg1"}, message_id)]


async def test_with_events_a_refused_message_is_not_published(
        streamed: tuple[FacadeService, RecordingDispatcher]) -> None:
    service, dispatch = streamed
    logging_mock(service).log.side_effect = Conflict("different text")
    with pytest.raises(IdempotencyKeyReused):
        await service.post_message("other", "key-1")
    assert dispatch.events == []


async def test_with_events_a_read_lists_the_messages_services_page(
        streamed: tuple[FacadeService, RecordingDispatcher]) -> None:
    service, _ = streamed
    service.messages_rpc.messages.return_value = {"logs": ["msg1"], "next_offset": 1}
    assert await read(service, 0, 1) == {"logs": ["msg1"], "messages": ["msg1"],
                                         "messages_next_offset": 1}
    service.messages_rpc.messages.assert_awaited_once_with(offset=0, limit=1)


async def test_with_events_a_read_without_messages_says_so(
        streamed: tuple[FacadeService, RecordingDispatcher]) -> None:
    service, _ = streamed
    service.messages_rpc.messages.side_effect = CircuitOpen("messages", "circuit breaker open")
    assert await read(service) == {"logs": ["msg1"], "messages": [], "unavailable": ["messages"]}


async def test_with_events_a_malformed_messages_page_is_a_remote_error(
        streamed: tuple[FacadeService, RecordingDispatcher]) -> None:
    service, _ = streamed
    service.messages_rpc.messages.return_value = {"logs": [1, 2]}
    with pytest.raises(RemoteError, match="no list of texts"):
        await read(service)
