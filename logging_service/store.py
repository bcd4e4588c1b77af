"""The logging service's in-memory store: each message once, by UUID, in arrival order."""

from __future__ import annotations


class UuidConflict(Exception):
    """The UUID is already stored with a different message."""


class MessageStore:
    """A hash table keyed by UUID, plus the messages in insertion order.

    ``_index`` maps a UUID to its message's position in ``_messages``, so a
    page of messages is one list slice, and a full read hands out the list
    itself without copying it.
    """

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._messages: list[str] = []

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, uuid: str, msg: str) -> bool:
        """Store ``msg`` under ``uuid``; return False if that exact pair was already stored.

        Raises ``UuidConflict`` if ``uuid`` is stored with another message.
        """
        position = self._index.get(uuid)
        if position is not None:
            if self._messages[position] != msg:
                raise UuidConflict(uuid)
            return False
        self._index[uuid] = len(self._messages)
        self._messages.append(msg)
        return True

    def messages(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Messages in insertion order, from ``offset``, at most ``limit`` of them.

        The whole store is returned as the live list (read-only by contract,
        serialised before any other request runs); a page is a copy of that page.
        """
        if offset == 0 and (limit is None or limit >= len(self._messages)):
            return self._messages
        end = None if limit is None else offset + limit
        return self._messages[offset:end]
