"""The logging service: each UUID stored once, in order, every stored message logged."""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from logging_service.service import LoggingService
from logging_service.store import MessageStore
from resilience import Conflict, InvalidArgument, Settings
from resilience.testing import call_entrypoint, worker_factory


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def service() -> LoggingService:
    return worker_factory(LoggingService, store=MessageStore())


async def test_stores_and_returns_messages_in_order(service: LoggingService) -> None:
    """Messages come back without keys, in the order they arrived."""
    for text in ("msg1", "msg2", "msg3"):
        assert await call_entrypoint(service, "log", uuid=new_id(), msg=text) == {"stored": True}
    assert await call_entrypoint(service, "messages") == ["msg1", "msg2", "msg3"]
    assert await call_entrypoint(service, "count") == 3


async def test_same_uuid_and_text_is_a_duplicate_not_stored_twice(service: LoggingService) -> None:
    """A retried message is acknowledged as a duplicate and stored once."""
    key = new_id()
    await call_entrypoint(service, "log", uuid=key, msg="once")
    with capture_logs() as logs:
        again = await call_entrypoint(service, "log", uuid=key, msg="once")
    assert again == {"stored": False, "duplicate": True}
    assert await call_entrypoint(service, "messages") == ["once"]
    assert [e["event"] for e in logs] == ["duplicate message ignored"]


async def test_same_uuid_other_text_is_a_conflict(service: LoggingService) -> None:
    """A UUID never changes its message: different text is a Conflict and nothing changes."""
    key = new_id()
    await call_entrypoint(service, "log", uuid=key, msg="first")
    with pytest.raises(Conflict):
        await call_entrypoint(service, "log", uuid=key, msg="second")
    assert await call_entrypoint(service, "messages") == ["first"]


async def test_every_stored_message_is_logged_with_its_text(service: LoggingService) -> None:
    """The service "prints each one it stores": one log line per stored message."""
    key = new_id()
    with capture_logs() as logs:
        await call_entrypoint(service, "log", uuid=key, msg="hello")
    assert logs == [{"event": "message stored", "log_level": "info", "uuid": key, "msg": "hello"}]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"uuid": "not-a-uuid", "msg": "x"}, "canonical UUID"),
    ({"uuid": "{12345678-1234-5678-1234-567812345678}", "msg": "x"}, "canonical UUID"),
    ({"uuid": str(uuid.uuid4()), "msg": ""}, "1 to 10000 characters"),
    ({"uuid": str(uuid.uuid4()), "msg": "x" * 10_001}, "1 to 10000 characters"),
    ({"uuid": str(uuid.uuid4()), "msg": 5}, "msg must be str"),
])
async def test_invalid_arguments_store_nothing(
    service: LoggingService, kwargs: dict[str, object], match: str
) -> None:
    """Bad UUIDs and bad texts are InvalidArgument and leave the store empty."""
    with pytest.raises(InvalidArgument, match=match):
        await call_entrypoint(service, "log", **kwargs)
    assert await call_entrypoint(service, "count") == 0


async def test_messages_can_be_read_in_pages(service: LoggingService) -> None:
    """offset and limit select a slice of the ordered messages."""
    for i in range(5):
        await call_entrypoint(service, "log", uuid=new_id(), msg=f"m{i}")
    assert await call_entrypoint(service, "messages", offset=1, limit=2) == ["m1", "m2"]
    assert await call_entrypoint(service, "messages", offset=4) == ["m4"]
    assert await call_entrypoint(service, "messages", offset=9, limit=3) == []
    with pytest.raises(InvalidArgument):
        await call_entrypoint(service, "messages", offset=-1)


def test_full_read_does_not_copy_the_store() -> None:
    """Reading everything hands out the stored list itself: one copy at most per request."""
    store = MessageStore()
    store.add(new_id(), "a")
    assert store.messages() is store.messages()
    assert store.messages(0, 10) is store.messages()


async def test_message_limit_comes_from_the_injected_config() -> None:
    """The longest message logging accepts is the injected settings' ``max_msg_chars``."""
    service = worker_factory(LoggingService, config=Settings(max_msg_chars=3))
    assert await call_entrypoint(service, "log", uuid=str(uuid.uuid4()), msg="abc") == {"stored": True}
    with pytest.raises(InvalidArgument, match="1 to 3 characters"):
        await call_entrypoint(service, "log", uuid=str(uuid.uuid4()), msg="abcd")
