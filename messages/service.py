"""The messages service: task 1's stub, and on the cluster the messages of the event stream."""

from __future__ import annotations

from typing import Any

from logging_service.contract import is_message_uuid
from logging_service.paging import MAX_PAGE, check_page, encode_page
from resilience import (
    BROADCAST,
    Config,
    Dependency,
    EventConsumer,
    InvalidArgument,
    event_handler,
    get_logger,
    rpc,
)

from .settings import MessagesSettings

STATIC_MESSAGE = "not implemented yet"
#: The event the facade publishes for each message it acknowledges.
MESSAGE_LOGGED = ("facade", "message_logged")

log = get_logger("messages")


class MessagesService:
    """Returns "not implemented yet", as the assignment asks."""

    name = "messages"

    @rpc
    def message(self) -> str:
        """The static message."""
        return STATIC_MESSAGE


class StreamMessagesService(MessagesService):
    """Keeps, in memory and in the stream's order, every message the facade published, once each
    by UUID, and answers them a page at a time.

    Every instance handles every event (``BROADCAST``): each holds all the
    messages, so any instance answers a read whole, and one that starts
    rebuilds them from the stream, which keeps every event.
    """

    config = Config(MessagesSettings)
    events: Dependency[EventConsumer] = Dependency()
    #: The messages by UUID, and their texts in the order their events came (a page is a slice).
    kept = Dependency[dict[str, str]](dict)
    texts = Dependency[list[str]](list)

    @event_handler(*MESSAGE_LOGGED, handler_type=BROADCAST)
    def keep(self, payload: Any) -> None:
        """Keep a logged message once; an event seen before (redelivered, replayed) changes nothing."""
        uuid = payload.get("uuid") if isinstance(payload, dict) else None
        msg = payload.get("msg") if isinstance(payload, dict) else None
        if not (isinstance(uuid, str) and is_message_uuid(uuid) and isinstance(msg, str)):
            log.error("message_logged event ignored: not a {uuid, msg} of the facade's",
                      payload=repr(payload)[:200])
            return
        if uuid not in self.kept:
            self.kept[uuid] = msg
            self.texts.append(msg)

    @rpc(expected=(InvalidArgument,))
    async def messages(self, offset: int = 0, limit: int = MAX_PAGE) -> dict[str, Any]:
        """The page of kept messages from ``offset``, once every event the stream held when asked
        is handled: ``{"logs": [...], "next_offset": N}``, as logging's pages."""
        check_page(offset, limit)
        await self.events.caught_up("keep", self.config.messages_catch_up_timeout)
        return encode_page(self.texts[offset:offset + limit], offset, limit,
                           self.config.max_page_bytes, len(self.texts))
