"""The logging service: stores each message once, by UUID, and prints every one it stores."""

from __future__ import annotations

import re

import structlog

from resilience import Config, Conflict, Dependency, InvalidArgument, rpc

from .store import MessageStore, UuidConflict

logger = structlog.get_logger("logging_service")

MAX_PAGE = 100_000


class LoggingService:
    """Keeps every message in memory keyed by UUID; returns them all in order."""

    name = "logging"
    store = Dependency(MessageStore)
    config = Config()

    @rpc(expected=(InvalidArgument, Conflict))
    def log(self, uuid: str, msg: str) -> dict[str, bool]:
        """Store ``msg`` under ``uuid`` once; the same pair again is acknowledged as a duplicate.

        Returns ``{"stored": True}`` the first time, ``{"stored": False,
        "duplicate": True}`` after; the same UUID with another text is a ``Conflict``.
        """
        if not _is_canonical_uuid(uuid):
            raise InvalidArgument("uuid must be a canonical UUID string")
        max_chars = self.config.max_msg_chars
        if not msg or len(msg) > max_chars:
            raise InvalidArgument(f"msg must be 1 to {max_chars} characters")
        try:
            stored = self.store.add(uuid, msg)
        except UuidConflict:
            logger.warning("uuid conflict", uuid=uuid)
            raise Conflict(f"uuid {uuid} is already stored with a different message") from None
        if stored:
            logger.info("message stored", uuid=uuid, msg=msg)
            return {"stored": True}
        logger.info("duplicate message ignored", uuid=uuid)
        return {"stored": False, "duplicate": True}

    @rpc(expected=(InvalidArgument,))
    def messages(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """All messages in insertion order, or the page ``[offset, offset + limit)``."""
        if offset < 0:
            raise InvalidArgument("offset must be 0 or more")
        if limit is not None and not 0 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be between 0 and {MAX_PAGE}")
        return self.store.messages(offset, limit)

    @rpc
    def count(self) -> int:
        """How many messages are stored."""
        return len(self.store)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_canonical_uuid(value: str) -> bool:
    """Lower-case, hyphenated, 36 characters: the only form the facade sends."""
    return _CANONICAL_UUID.fullmatch(value) is not None
