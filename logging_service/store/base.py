"""What every message store promises the logging service, whatever holds the messages."""

from __future__ import annotations

from typing import Protocol


class UuidConflict(Exception):
    """The UUID is already stored with a different message."""


class MessageStore(Protocol):
    """Each message once, by UUID, in arrival order.

    Every method is a coroutine, so a store that talks to a server (Redis)
    and one that does not (memory) are used the same way. A store that
    cannot reach its server, or whose server refuses writes for want of
    memory, raises ``resilience.ServiceUnavailable``: the RPC server answers
    503, which the caller may retry.
    """

    async def add(self, uuid: str, msg: str) -> bool:
        """Store ``msg`` under ``uuid``; False if that exact pair was already stored.

        Raises ``UuidConflict`` if ``uuid`` is stored with another message.
        The check and the append are one step: two callers adding the same
        UUID at once store it once.
        """
        ...

    async def messages(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Messages in insertion order, from ``offset``, at most ``limit`` of them."""
        ...

    async def count(self) -> int:
        """How many messages are stored."""
        ...

    async def ping(self) -> None:
        """Return if the store can serve calls now; raise ``ServiceUnavailable`` if not."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used after this."""
        ...
