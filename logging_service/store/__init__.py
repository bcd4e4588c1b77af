"""The logging service's message stores: in memory (the default) or on Redis, chosen by ``LOGGING_STORE``."""

from __future__ import annotations

from logging_service.settings import MEMORY_STORE

from .base import MessageStore, UuidConflict
from .memory import MemoryStore
from .redis import RedisStore

__all__ = ["MemoryStore", "MessageStore", "RedisStore", "UuidConflict", "open_store"]


def open_store(location: str) -> MessageStore:
    """The store ``LOGGING_STORE`` names: ``memory``, or a ``redis://host:port/db`` URL."""
    if location == MEMORY_STORE:
        return MemoryStore()
    return RedisStore(location)
