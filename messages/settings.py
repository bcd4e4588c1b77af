"""The messages service's settings: the server piece and its port."""

from __future__ import annotations

from dataclasses import dataclass

from resilience.settings import ServerSettings, between


@dataclass(frozen=True)
class MessagesSettings(ServerSettings):
    """Everything the messages service reads from the environment."""

    messages_port: int = between(5002, 0, 65535)
