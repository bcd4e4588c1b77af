"""The facade's domain: mint a UUID per message, store it once, read the messages back by pages."""

from __future__ import annotations

import asyncio
from typing import Any

from facade.ids import KeyUuids, new_uuid
from logging_service.paging import MAX_PAGE, MalformedPage, splice
from resilience import (
    Conflict,
    Dependency,
    EventDispatcher,
    ExpectedError,
    RemoteError,
    RpcProxy,
    ServiceUnavailable,
    get_logger,
    is_refusal,
)

log = get_logger("facade")

STATIC_FALLBACK = "unavailable"
#: The event published for each message stored (the messages service keeps them).
MESSAGE_LOGGED = "message_logged"


class IdempotencyKeyReused(Exception):
    """The client reused an Idempotency-Key with a different message."""


def refused(service: str, exc: ExpectedError) -> RemoteError:
    """A downstream refusal the client did not cause, as the failure it is.

    The facade checks every argument before it calls, so a method or an
    argument the downstream refuses means the two disagree (a URL pointing at
    the wrong service, limits configured differently): a misconfiguration,
    answered 502, never the client's 4xx.
    """
    return RemoteError(service, type(exc).__name__, str(exc), exc.status)


class FacadeService:
    """Sends each message to logging exactly once; reads logs and messages together.

    With ``dispatch`` (the cluster's event stream), a message is also
    published as a ``message_logged`` event, and reads list the messages
    service's messages instead of its static text.
    """

    name = "facade"
    logging_rpc: Dependency[RpcProxy] = Dependency()
    messages_rpc: Dependency[RpcProxy] = Dependency()
    key_uuids = Dependency(KeyUuids)
    dispatch = Dependency[EventDispatcher | None](lambda: None)

    async def post_message(self, msg: str, idempotency_key: str | None = None) -> str:
        """Store ``msg`` under a new UUID (or the key's UUID) and return the UUID.

        The UUID is minted once, before the first attempt, so every retry
        resends the same one and logging stores it once. Keys are global: the
        same key from two clients is the same UUID. With events, the message
        is published once logging has it, under its UUID as the event's ID, so
        a retry completes both without a duplicate in either.
        """
        message_id = new_uuid() if idempotency_key is None else self.key_uuids(idempotency_key)
        try:
            await self.logging_rpc.log(uuid=message_id, msg=msg)
        except Conflict as exc:
            if idempotency_key is None:  # a fresh random UUID cannot clash: not the client's doing
                raise refused("logging", exc) from exc
            raise IdempotencyKeyReused(
                "Idempotency-Key was already used with a different message"
            ) from None
        except ExpectedError as exc:
            raise refused("logging", exc) from exc
        if self.dispatch is not None:
            await self.dispatch(MESSAGE_LOGGED, {"uuid": message_id, "msg": msg}, event_id=message_id)
        return message_id

    async def get_messages(self, offset: int = 0, limit: int = MAX_PAGE) -> bytes:
        """The GET /facade reply body: logging's page with the messages service's part added.

        Both are asked at once; messages being down degrades, logging being
        down fails. The page comes as logging encoded it (within its byte
        budget) and is passed on without being decoded, so the facade holds
        about two copies of one page, not several of the whole store. With
        events, the part is the messages service's page from the same offset
        (``messages``, and ``messages_next_offset`` while more follow);
        without, its static text (``message``).
        """
        page: Any
        part: Any
        streamed = self.dispatch is not None
        asked = (self.messages_rpc.messages(offset=offset, limit=limit) if streamed
                 else self.messages_rpc.message())
        page, part = await asyncio.gather(
            self.logging_rpc.call("messages", {"offset": offset, "limit": limit}, undecoded=True),
            asked, return_exceptions=True)
        if isinstance(page, ExpectedError):
            raise refused("logging", page) from page
        if isinstance(page, BaseException):
            raise page
        if isinstance(part, ExpectedError):
            part = refused("messages", part)
        if isinstance(part, (ServiceUnavailable, RemoteError)):
            misconfigured = is_refusal(part)
            (log.error if misconfigured else log.warning)(
                "messages service unavailable, answering without it", error=str(part),
                misconfiguration=misconfigured)
            fields: dict[str, Any] = {"messages": []} if streamed else {"message": STATIC_FALLBACK}
            fields["unavailable"] = ["messages"]
        elif isinstance(part, BaseException):
            raise part
        elif streamed:
            fields = messages_fields(part)
        else:
            fields = {"message": part}
        if not isinstance(page, (bytes, memoryview)):
            raise RemoteError("logging", "BadReply", "messages() answered a decoded value", 200)
        try:
            return splice(page, fields)
        except MalformedPage as exc:
            raise RemoteError("logging", "BadReply", str(exc), 200) from None


def messages_fields(page: Any) -> dict[str, Any]:
    """The GET reply's fields from the messages service's page (``{"logs", "next_offset"}``)."""
    texts = page.get("logs") if isinstance(page, dict) else None
    if not (isinstance(texts, list) and all(isinstance(text, str) for text in texts)):
        raise RemoteError("messages", "BadReply", "messages() answered no list of texts", 200)
    fields: dict[str, Any] = {"messages": texts}
    if isinstance(page.get("next_offset"), int):
        fields["messages_next_offset"] = page["next_offset"]
    return fields
