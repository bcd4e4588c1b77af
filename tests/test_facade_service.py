"""The facade's domain with fake downstream proxies: UUIDs, idempotency, fan-out, fallback."""

from __future__ import annotations

import asyncio
import uuid
from unittest.mock import AsyncMock

import pytest

from facade.service import FacadeService, IdempotencyKeyReused
from resilience import CircuitOpen, Conflict, RemoteError, ServiceUnavailable
from resilience.testing import worker_factory


@pytest.fixture
def service() -> FacadeService:
    facade = worker_factory(FacadeService)
    facade.logging_rpc.log.return_value = {"stored": True}
    facade.logging_rpc.messages.return_value = ["msg1"]
    facade.messages_rpc.message.return_value = "not implemented yet"
    return facade


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


async def test_reused_key_with_another_message_is_refused(service: FacadeService) -> None:
    """logging's Conflict on a key-derived UUID means the key was reused for other text."""
    logging_mock(service).log.side_effect = Conflict("different text")
    with pytest.raises(IdempotencyKeyReused):
        await service.post_message("other", "key-1")


async def test_get_asks_both_services_at_once(service: FacadeService) -> None:
    """logging and messages are called concurrently: each waits for the other to have started."""
    arrived: list[str] = []
    both = asyncio.Event()

    def meet(name: str, reply: object) -> object:
        async def wait_for_the_other(**_: object) -> object:
            arrived.append(name)
            if len(arrived) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 1)  # sequential calls would time out here
            return reply
        return wait_for_the_other

    logging_mock(service).messages.side_effect = meet("logging", ["msg1"])
    service.messages_rpc.message.side_effect = meet("messages", "stub")  # type: ignore[attr-defined]
    assert await service.get_messages() == {"logs": ["msg1"], "message": "stub"}
    assert sorted(arrived) == ["logging", "messages"]


async def test_get_passes_paging_to_logging(service: FacadeService) -> None:
    """offset and limit reach the logging service unchanged."""
    await service.get_messages(5, 10)
    logging_mock(service).messages.assert_awaited_once_with(offset=5, limit=10)


@pytest.mark.parametrize("error", [
    ServiceUnavailable("messages", "refused"),
    CircuitOpen("messages", "open", 3.0),
    RemoteError("messages", "InternalError", "internal error", 500),
])
async def test_get_without_messages_still_answers(service: FacadeService, error: Exception) -> None:
    """When messages fails, GET still returns the logs and says the message part is unavailable."""
    service.messages_rpc.message.side_effect = error  # type: ignore[attr-defined]
    assert await service.get_messages() == {
        "logs": ["msg1"], "message": "unavailable", "unavailable": ["messages"]}


async def test_get_without_logging_fails(service: FacadeService) -> None:
    """Without logging there is nothing to answer: its error is raised."""
    logging_mock(service).messages.side_effect = ServiceUnavailable("logging", "refused")
    with pytest.raises(ServiceUnavailable):
        await service.get_messages()
