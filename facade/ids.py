"""Message UUIDs as the facade mints them, in the forms logging's contract accepts.

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
import uuid

from resilience import derived_key

from .settings import FacadeSettings

#: The key secret when neither IDEMPOTENCY_SECRET nor RPC_SECRET is set. Public on purpose.
PUBLIC_KEY_SECRET = b"resilient-microservices: Idempotency-Key UUIDs with no secret configured"

_VERSION_8 = 8 << 76
_VERSION_MASK = 0xF << 76
_VARIANT_RFC = 0b10 << 62
_VARIANT_MASK = 0b11 << 62


def new_uuid() -> str:
    """A random message UUID (version 4), for a POST without an Idempotency-Key."""
    return str(uuid.uuid4())


class KeyUuids:
    """Maps an Idempotency-Key to its message UUID under a server-side secret."""

    def __init__(self, secret: bytes = PUBLIC_KEY_SECRET) -> None:
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: FacadeSettings) -> KeyUuids:
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
