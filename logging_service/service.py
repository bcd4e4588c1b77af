"""The logging service: stores each message once, by UUID, and prints every one it stores."""

from __future__ import annotations

from collections import Counter
from typing import Any

from logging_service.contract import is_message_uuid, text_problem
from logging_service.paging import MAX_PAGE, check_page, encode_page
from resilience import Config, Conflict, Dependency, InvalidArgument, get_logger, rpc

from .settings import LoggingSettings
from .store import MemoryStore, MessageStore, UuidConflict

logger = get_logger("logging_service")


class LoggingService:
    """Keeps every message once, keyed by UUID, in its store (memory or Redis); returns them in
    order, a page at a time.

    It refuses what the facade refuses (the same message limit, read from the
    same setting; only the UUID forms the facade mints), so a caller that
    reaches it directly can store nothing the public API would not.
    """

    name = "logging"
    store = Dependency[MessageStore](MemoryStore)
    config = Config(LoggingSettings)
    #: What ``log`` did, by outcome (stored, duplicate, conflict): the metrics read it.
    tally = Dependency[Counter[str]](Counter)

    @rpc(expected=(InvalidArgument, Conflict))
    async def log(self, uuid: str, msg: str) -> dict[str, bool]:
        """Store ``msg`` under ``uuid`` once; the same pair again is acknowledged as a duplicate.

        Returns ``{"stored": True}`` the first time, ``{"stored": False,
        "duplicate": True}`` after; the same UUID with another text is a ``Conflict``.
        """
        if not is_message_uuid(uuid):
            raise InvalidArgument("uuid must be a UUID as the facade mints it "
                                  "(lower-case, hyphenated, version 4 or 8)")
        problem = text_problem(msg, self.config.max_msg_chars)
        if problem is not None:
            raise InvalidArgument(f"msg {problem}")
        try:
            stored = await self.store.add(uuid, msg)
        except UuidConflict:
            self.tally["conflict"] += 1
            logger.warning("uuid conflict", uuid=uuid)
            raise Conflict(f"uuid {uuid} is already stored with a different message") from None
        if stored:
            self.tally["stored"] += 1
            logger.info("message stored", uuid=uuid, msg=msg)
            return {"stored": True}
        self.tally["duplicate"] += 1
        logger.info("duplicate message ignored", uuid=uuid)
        return {"stored": False, "duplicate": True}

    @rpc(expected=(InvalidArgument,))
    async def messages(self, offset: int = 0, limit: int = MAX_PAGE) -> dict[str, Any]:
        """The page of messages from ``offset``: ``{"logs": [...], "next_offset": N}``.

        At most ``limit`` messages and ``MAX_PAGE_BYTES`` of them, so no reply
        is ever larger than that however large the store; ``next_offset`` is
        there while messages remain (see ``logging_service/paging.py``).
        """
        check_page(offset, limit)
        window = await self.store.messages(offset, limit)
        return encode_page(window, offset, limit, self.config.max_page_bytes,
                           await self.store.count())

    @rpc
    async def count(self) -> int:
        """How many messages are stored."""
        return await self.store.count()
