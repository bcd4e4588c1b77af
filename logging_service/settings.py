"""The logging service's settings: the server piece, its port, its store and its contract's limits."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from resilience import ServerSettings, SettingsError, between

#: ``LOGGING_STORE`` for the in-memory store; anything else is a Redis URL of these schemes.
MEMORY_STORE = "memory"
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class LoggingSettings(ServerSettings):
    """Everything the logging service reads from the environment."""

    logging_port: int = between(5001, 0, 65535)
    logging_store: str = MEMORY_STORE
    # The longest message and the largest page (its contract; the facade reads the same).
    max_msg_chars: int = 10_000
    max_page_bytes: int = 1024 * 1024

    def validate(self) -> None:
        super().validate()
        if self.logging_store != MEMORY_STORE and not _is_redis_url(self.logging_store):
            # The value is not echoed: a Redis URL may hold a password.
            raise SettingsError(f"LOGGING_STORE must be {MEMORY_STORE} or a redis://host:port/db URL")


def _is_redis_url(value: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in REDIS_SCHEMES and bool(parts.hostname or parts.path)
