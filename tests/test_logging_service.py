"""The logging service: each UUID stored once, in order, every stored message logged.

The behaviour tests run on both stores, in memory and on a real redis-server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from facade.ids import KeyUuids
from logging_service.paging import MAX_PAGE
from logging_service.service import LoggingService
from logging_service.settings import LoggingSettings
from logging_service.store import MemoryStore, MessageStore, RedisStore
from resilience import Conflict, InvalidArgument
from resilience.testing import call_entrypoint, worker_factory


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MessageStore]:
    """Each backend in turn: the in-memory default, and Redis (a real server, emptied per test)."""
    backend: MessageStore = (MemoryStore() if request.param == "memory"
                             else RedisStore(request.getfixturevalue("redis_url")))
    yield backend
    await backend.close()


@pytest.fixture
def service(store: MessageStore) -> LoggingService:
    return worker_factory(LoggingService, store=store)


async def page(service: LoggingService, **kwargs: Any) -> Any:
    """messages() as its caller sees it on the wire."""
    return orjson.loads(orjson.dumps(await call_entrypoint(service, "messages", **kwargs)))


async def stored_logs(service: LoggingService, **kwargs: Any) -> Any:
    return (await page(service, **kwargs))["logs"]


async def test_stores_and_returns_messages_in_order(service: LoggingService) -> None:
    """Messages come back without keys, in the order they arrived."""
    for text in ("msg1", "msg2", "msg3"):
        assert await call_entrypoint(service, "log", uuid=new_id(), msg=text) == {"stored": True}
    assert await stored_logs(service) == ["msg1", "msg2", "msg3"]
    assert await call_entrypoint(service, "count") == 3


async def test_same_uuid_and_text_is_a_duplicate_not_stored_twice(service: LoggingService) -> None:
    """A retried message is acknowledged as a duplicate and stored once."""
    key = new_id()
    await call_entrypoint(service, "log", uuid=key, msg="once")
    with capture_logs() as logs:
        again = await call_entrypoint(service, "log", uuid=key, msg="once")
    assert again == {"stored": False, "duplicate": True}
    assert await stored_logs(service) == ["once"]
    assert [e["event"] for e in logs] == ["duplicate message ignored"]


async def test_same_uuid_other_text_is_a_conflict(service: LoggingService) -> None:
    """A UUID never changes its message: different text is a Conflict and nothing changes."""
    key = new_id()
    await call_entrypoint(service, "log", uuid=key, msg="first")
    with pytest.raises(Conflict):
        await call_entrypoint(service, "log", uuid=key, msg="second")
    assert await stored_logs(service) == ["first"]


async def test_every_stored_message_is_logged_with_its_text(service: LoggingService) -> None:
    """The service "prints each one it stores": one log line per stored message."""
    key = new_id()
    with capture_logs() as logs:
        await call_entrypoint(service, "log", uuid=key, msg="hello")
    assert logs == [{"event": "message stored", "log_level": "info", "uuid": key, "msg": "hello"}]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"uuid": "not-a-uuid", "msg": "x"}, "as the facade mints it"),
    ({"uuid": "{12345678-1234-5678-1234-567812345678}", "msg": "x"}, "as the facade mints it"),
    ({"uuid": str(uuid.uuid4()).upper(), "msg": "x"}, "as the facade mints it"),
    ({"uuid": str(uuid.uuid1()), "msg": "x"}, "version 4 or 8"),
    ({"uuid": str(uuid.uuid4()), "msg": ""}, "must not be empty"),
    ({"uuid": str(uuid.uuid4()), "msg": "x" * 10_001}, "longer than 10000 characters"),
    ({"uuid": str(uuid.uuid4()), "msg": " \t\n\u3000"}, "must not be blank"),
    ({"uuid": str(uuid.uuid4()), "msg": 5}, "msg must be str"),
])
async def test_invalid_arguments_store_nothing(
    service: LoggingService, kwargs: dict[str, object], match: str
) -> None:
    """Bad UUIDs (any form the facade does not mint) and bad texts are InvalidArgument and leave
    the store empty."""
    with pytest.raises(InvalidArgument, match=match):
        await call_entrypoint(service, "log", **kwargs)
    assert await call_entrypoint(service, "count") == 0


async def test_messages_can_be_read_in_pages(service: LoggingService) -> None:
    """offset and limit select a slice of the ordered messages; next_offset says where more start."""
    for i in range(5):
        await call_entrypoint(service, "log", uuid=new_id(), msg=f"m{i}")
    assert await page(service, offset=1, limit=2) == {"logs": ["m1", "m2"], "next_offset": 3}
    assert await page(service, offset=4) == {"logs": ["m4"]}
    assert await page(service, offset=9, limit=3) == {"logs": []}
    for bad in ({"offset": -1}, {"limit": MAX_PAGE + 1}, {"limit": -1}):
        with pytest.raises(InvalidArgument):
            await call_entrypoint(service, "messages", **bad)


async def test_a_page_stops_at_the_byte_budget() -> None:
    """A page holds no more JSON bytes than MAX_PAGE_BYTES, but always at least one message."""
    service = worker_factory(LoggingService, store=MemoryStore(),
                             config=LoggingSettings(max_page_bytes=20))
    for text in ("a" * 5, "b" * 5, "c" * 5, "d" * 30):
        await call_entrypoint(service, "log", uuid=new_id(), msg=text)
    first = await page(service)
    assert first == {"logs": ["a" * 5, "b" * 5], "next_offset": 2}  # ["aaaaa","bbbbb"]: 17 bytes
    assert await page(service, offset=2) == {"logs": ["c" * 5], "next_offset": 3}
    assert await page(service, offset=3) == {"logs": ["d" * 30]}  # alone over budget: still served


async def test_key_derived_uuids_are_accepted(service: LoggingService) -> None:
    """The version-8 UUIDs the facade derives from an Idempotency-Key are a form logging takes."""
    assert await call_entrypoint(service, "log", uuid=KeyUuids()("order-1"), msg="x") == {"stored": True}


async def test_full_read_does_not_copy_the_store() -> None:
    """Reading everything hands out the stored list itself: one copy at most per request."""
    store = MemoryStore()
    await store.add(new_id(), "a")
    assert await store.messages() is await store.messages()
    assert await store.messages(0, 10) is await store.messages()


async def test_message_limit_comes_from_the_injected_config() -> None:
    """The longest message logging accepts is the injected settings' ``max_msg_chars``."""
    service = worker_factory(LoggingService, config=LoggingSettings(max_msg_chars=3))
    assert await call_entrypoint(service, "log", uuid=str(uuid.uuid4()), msg="abc") == {"stored": True}
    with pytest.raises(InvalidArgument, match="longer than 3 characters"):
        await call_entrypoint(service, "log", uuid=str(uuid.uuid4()), msg="abcd")
