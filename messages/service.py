"""The messages service: a stub that answers with static text."""

from __future__ import annotations

from resilience import rpc

STATIC_MESSAGE = "not implemented yet"


class MessagesService:
    """Returns "not implemented yet", as the assignment asks."""

    name = "messages"

    @rpc
    def message(self) -> str:
        """The static message."""
        return STATIC_MESSAGE
