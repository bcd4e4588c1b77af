"""The facade's domain: mint a UUID per message, store it once, read everything back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog

from resilience import Conflict, Dependency, RemoteError, RpcProxy, ServiceUnavailable

log = structlog.get_logger("facade")

STATIC_FALLBACK = "unavailable"
# Idempotency keys map to UUIDs in this namespace, so one key is always one UUID.
IDEMPOTENCY_NAMESPACE = uuid.UUID("3f1c2b1e-8d0a-4c5e-9f6b-2a7d4e1c9b30")


class IdempotencyKeyReused(Exception):
    """The client reused an Idempotency-Key with a different message."""


class FacadeService:
    """Sends each message to logging exactly once; reads logs and messages together."""

    name = "facade"
    logging_rpc: Dependency[RpcProxy] = Dependency()
    messages_rpc: Dependency[RpcProxy] = Dependency()

    async def post_message(self, msg: str, idempotency_key: str | None = None) -> str:
        """Store ``msg`` under a new UUID (or the key's UUID) and return the UUID.

        The UUID is minted once, before the first attempt, so every retry
        resends the same one and logging stores it once.
        """
        if idempotency_key is None:
            message_id = str(uuid.uuid4())
        else:
            message_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))
        try:
            await self.logging_rpc.log(uuid=message_id, msg=msg)
        except Conflict:
            raise IdempotencyKeyReused(
                "Idempotency-Key was already used with a different message"
            ) from None
        return message_id

    async def get_messages(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """Ask logging and messages at once; messages being down degrades, logging being down fails."""
        replies: tuple[Any, Any] = await asyncio.gather(
            self.logging_rpc.messages(offset=offset, limit=limit),
            self.messages_rpc.message(),
            return_exceptions=True,
        )
        logs, message = replies
        if isinstance(logs, BaseException):
            raise logs
        result: dict[str, Any] = {"logs": logs, "message": message}
        if isinstance(message, (ServiceUnavailable, RemoteError)):
            log.warning("messages service unavailable, answering without it", error=str(message))
            result["message"] = STATIC_FALLBACK
            result["unavailable"] = ["messages"]
        elif isinstance(message, BaseException):
            raise message
        return result
