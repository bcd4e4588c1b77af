"""The in-memory store, the default: each message once, by UUID, in arrival order, in this process."""

from __future__ import annotations

from collections.abc import Iterator

from .base import UuidConflict


class MemoryStore:
    """A hash table keyed by UUID, plus the messages in insertion order.

    ``_index`` maps a UUID to its message's position in ``_messages``, so a
    page of messages is one list slice, and a full read hands out the list
    itself without copying it. It is a ``MessageStore``; ``len()`` and
    iteration give in-process callers (tests, the benchmark) a synchronous view.
    """

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._messages: list[str] = []

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[str]:
        return iter(self._messages)

    async def add(self, uuid: str, msg: str) -> bool:
        """Store ``msg`` under ``uuid``; return False if that exact pair was already stored.

        Raises ``UuidConflict`` if ``uuid`` is stored with another message.
        Nothing awaits between the check and the append, so it is one step.
        """
        position = self._index.get(uuid)
        if position is not None:
            if self._messages[position] != msg:
                raise UuidConflict(uuid)
            return False
        self._index[uuid] = len(self._messages)
        self._messages.append(msg)
        return True

    async def messages(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Messages in insertion order, from ``offset``, at most ``limit`` of them.

        The whole store is returned as the live list (read-only by contract,
        serialised before any other request runs); a page is a copy of that page.
        """
        if offset == 0 and (limit is None or limit >= len(self._messages)):
            return self._messages
        end = None if limit is None else offset + limit
        return self._messages[offset:end]

    async def count(self) -> int:
        return len(self._messages)

    async def ping(self) -> None:
        """Always ready: the messages are in this process."""

    async def close(self) -> None:
        """Nothing to release."""
