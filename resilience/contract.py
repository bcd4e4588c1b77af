"""What the facade and logging agree on about a message: its UUID, and what text is acceptable.

Both sides check with these, so a caller that reaches logging directly can
store nothing the public API would refuse.

UUIDs come in two forms, and logging accepts only these:

- A POST without an ``Idempotency-Key`` gets a random UUID (version 4).
- A POST with one gets ``HMAC-SHA256(key_secret, key)`` cut to 128 bits and
  stamped version 8 (RFC 9562's form for UUIDs built by one's own rule), so
  the same key is always the same UUID (the client's retry lands on it) but
  nobody without the secret can compute it in advance.

The secret must be the same for every facade instance and across restarts,
or a client's retry after a restart, or on another instance, would get a new
UUID and its message would be stored twice; so it is configured, never
minted at random. ``IDEMPOTENCY_SECRET`` if set, else a key derived from
``RPC_SECRET``, else ``PUBLIC_KEY_SECRET``, which is printed here: with no
secret at all the services run on loopback with unauthenticated RPC, where
anyone on the host can store any UUID anyway, and the public default keeps
exactly-once across restarts all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import uuid

from .auth import derived_key
from .settings import Settings

#: Lower-case, hyphenated, version 4 or 8, RFC variant: exactly what ``new_uuid`` and
#: ``KeyUuids`` produce, and the only form the logging service stores.
MESSAGE_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[48][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
#: A character that is not whitespace (the set of Python's ``str.isspace``, spelled out so the
#: OpenAPI document states the same rule): a message without one is blank.
NOT_BLANK = re.compile(r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
#: The key secret when neither IDEMPOTENCY_SECRET nor RPC_SECRET is set. Public on purpose.
PUBLIC_KEY_SECRET = b"resilient-microservices: Idempotency-Key UUIDs with no secret configured"

_VERSION_8 = 8 << 76
_VERSION_MASK = 0xF << 76
_VARIANT_RFC = 0b10 << 62
_VARIANT_MASK = 0b11 << 62


class _RandomBytes:
    """Bytes from ``os.urandom``, fetched 4 KiB at a time: one system call per 256 UUIDs.

    Never the same bytes twice: a lock keeps two threads from taking the same slice, and a
    forked child starts afresh (``reset``).
    """

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the bytes held (a forked child must not mint its parent's UUIDs)."""
        self._pool, self._at = b"", 0
        self._lock = threading.Lock()  # the parent's may have been held when it forked

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._at + count > len(self._pool):
                self._pool, self._at = os.urandom(self._chunk), 0
            start, self._at = self._at, self._at + count
            return self._pool[start:self._at]


_random_bytes = _RandomBytes()
os.register_at_fork(after_in_child=_random_bytes.reset)


def new_uuid() -> str:
    """A random message UUID (version 4), for a POST without an Idempotency-Key.

    The same 122 random bits from ``os.urandom`` as ``uuid.uuid4``, formatted
    without building a ``UUID`` object, from bytes fetched in bulk: a quarter of
    the cost, once per POST.
    """
    raw = bytearray(_random_bytes.take(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class KeyUuids:
    """Maps an Idempotency-Key to its message UUID under a server-side secret."""

    def __init__(self, secret: bytes = PUBLIC_KEY_SECRET) -> None:
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyUuids:
        """IDEMPOTENCY_SECRET, else a key derived from RPC_SECRET, else the public default."""
        if settings.idempotency_secret:
            return cls(settings.idempotency_secret.encode())
        if settings.rpc_secret:
            return cls(derived_key(settings.rpc_secret, "idempotency-key uuids"))
        return cls()

    def __call__(self, key: str) -> str:
        digest = hmac.new(self._secret, key.encode(), hashlib.sha256).digest()
        value = int.from_bytes(digest[:16], "big")
        value = (value & ~_VERSION_MASK & ~_VARIANT_MASK) | _VERSION_8 | _VARIANT_RFC
        return str(uuid.UUID(int=value))


def is_message_uuid(value: str) -> bool:
    """Whether ``value`` is in a form the facade sends."""
    return MESSAGE_UUID.fullmatch(value) is not None


def text_problem(text: str, max_chars: int) -> str | None:
    """What is wrong with ``text`` as a message (to follow its name), or None if nothing.

    A message has 1 to ``max_chars`` characters (code points), not all of them
    whitespace: a blank message says nothing a reader could see.
    """
    if not text:
        return "must not be empty"
    if len(text) > max_chars:
        return f"is longer than {max_chars} characters"
    if NOT_BLANK.search(text) is None:
        return "must not be blank"
    return None
