"""Who may call an RPC method: every request is signed with the shared ``RPC_SECRET``.

The signature is an HMAC-SHA256, under the secret, of a timestamp, the
request path (which names the method) and the body::

    Authorization: RPC-HMAC-SHA256 t=<unix seconds>,sig=<64 hex digits>
    signed bytes:  b"<t>\\n/rpc/<method>\\n" + body

Why this rather than a bearer token compared in constant time: the services
talk plain HTTP, so anything on the path that sees one request learns a
bearer token, and with it every method, with any arguments, for as long as
the secret lives. A signature is good for the one request it signs (this
method, these exact arguments) and only within ``WINDOW`` seconds of the
receiver's clock. A replay inside the window repeats an exact request:
for ``log`` that is a duplicate the store acknowledges and ignores (the
exactly-once rule), for a read it returns what the eavesdropper already saw.
So there is no nonce store to keep. Confidentiality is not provided: the
messages themselves still travel in clear (use a private network or TLS).

Without a secret requests are unsigned, so the services run only on loopback:
an RPC port bound to any other address without a secret refuses to start, as
Redis's protected mode does.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from resilience.runtime.web import Handler
from resilience.settings import ServerSettings, SettingsError

HEADER = "Authorization"
SCHEME = "RPC-HMAC-SHA256"
#: Seconds a signature stays good either side of the receiver's clock: room for clock
#: skew between hosts and for a retry's backoff, little for a replay.
WINDOW = 30
#: Paths any caller may reach without a signature: read-only probes for supervisors and Prometheus
#: (counts and states, never a message).
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
#: A signature's form. A unix time in seconds has 10 digits until the year 2286: a longer one
#: is no time at all, and one too long for a float (or for int()) must be refused as malformed
#: before it is compared with the clock.
_TIMESTAMP = re.compile(r"[0-9]{1,11}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
#: The derivation label that keeps keys drawn from RPC_SECRET apart from RPC signing.
_DERIVED = b"resilience derived key\n"

Clock = Callable[[], float]


def _signature(key: bytes, timestamp: int, path: str, body: bytes) -> str:
    mac = hmac.new(key, f"{timestamp}\n{path}\n".encode(), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


class Signer:
    """Signs outgoing RPC requests (the client side)."""

    def __init__(self, secret: str, clock: Clock = time.time) -> None:
        self._key = secret.encode()
        self._clock = clock

    def headers(self, path: str, body: bytes) -> dict[str, str]:
        """The header that authenticates a POST of ``body`` to ``path``, signed now."""
        timestamp = int(self._clock())
        return {HEADER: f"{SCHEME} t={timestamp},sig={_signature(self._key, timestamp, path, body)}"}


class Verifier:
    """Checks incoming RPC requests (the server side)."""

    def __init__(self, secret: str, clock: Clock = time.time) -> None:
        self._key = secret.encode()
        self._clock = clock

    def refusal(self, header: str | None, path: str, body: bytes) -> str | None:
        """Why the request must be refused, or None when its signature is good and fresh."""
        if header is None:
            return "request is not signed: the caller needs the same RPC_SECRET"
        scheme, _, params = header.partition(" ")
        fields = dict(part.partition("=")[::2] for part in params.split(","))
        timestamp, signature = fields.get("t", ""), fields.get("sig", "")
        if scheme != SCHEME or not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return f"Authorization must be {SCHEME} t=<unix seconds>,sig=<64 hex digits>"
        if abs(self._clock() - int(timestamp)) > WINDOW:
            return f"signature is more than {WINDOW} s old or ahead (are the clocks in sync?)"
        expected = _signature(self._key, int(timestamp), path, body)
        if not hmac.compare_digest(expected, signature):
            return "signature does not match: the caller's RPC_SECRET differs"
        return None


def derived_key(secret: str, purpose: str) -> bytes:
    """A key for ``purpose`` drawn from ``secret``, useless for signing RPC."""
    return hmac.new(secret.encode(), _DERIVED + purpose.encode(), hashlib.sha256).digest()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a port on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def signer_for(settings: ServerSettings) -> Signer | None:
    """The caller's signer, or None when no secret is configured."""
    return Signer(settings.rpc_secret) if settings.rpc_secret else None


def verifier_for(settings: ServerSettings) -> Verifier | None:
    """The server's verifier; None (no checks) only on loopback.

    Raises SettingsError for an RPC port bound beyond loopback without a secret.
    """
    if settings.rpc_secret:
        return Verifier(settings.rpc_secret)
    if not is_loopback(settings.host):
        raise SettingsError(f"HOST={settings.host} would expose the RPC port to the network without "
                            "authentication: set RPC_SECRET (the same on every service) or bind "
                            "127.0.0.1")
    return None


def require_signature(verifier: Verifier, refuse: Callable[[str], web.StreamResponse]) -> Middleware:
    """A middleware that lets a request through only with a good signature (``OPEN_PATHS`` are open).

    It must come after ``body_deadline``: the signature covers the body.
    ``refuse(reason)`` builds the 401 reply in the app's error format.
    """

    @web.middleware
    async def check_signature(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            reason = verifier.refusal(request.headers.get(HEADER), request.path, await request.read())
            if reason is not None:
                return refuse(reason)
        return await handler(request)

    return check_signature
