"""One RPC exchange over HTTP, and its codec: a request's bytes out, a reply's result or error back.

Every reply is decoded here and nowhere else. A 200 carries ``{"result": ...}``
(a batch: a list of them, or of ``{"error": ...}`` items); an error body is
raised as the error it names: a declared error (one the caller's code knows,
by its registered path) as its own type when the status is a 4xx, anything
else as ``RemoteError``. Network failures and 502/503/504 are raised as
``ServiceUnavailable``, transient, with the server's Retry-After.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from resilience.errors import RemoteError, ServiceUnavailable, registered_error
from resilience.rpc.signing import Signer

TRANSIENT_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER = 3600.0
#: How every 200 reply starts: the server writes ``{"result": value}`` as exactly this, the
#: value's JSON and ``}``, which lets a caller take the value's bytes without decoding them.
RESULT_START = b'{"result":'


class Transport:
    """POSTs to one service's replicas on a shared session, signing each request with ``signer``."""

    def __init__(self, session: aiohttp.ClientSession, service: str, signer: Signer | None = None) -> None:
        self.session = session
        self.service = service
        self.signer = signer
        self._urls: dict[tuple[str, str], URL] = {}

    def url(self, replica: str, path: str) -> URL:
        """``path`` at ``replica`` (parsed once per replica and path)."""
        url = self._urls.get((replica, path))
        if url is None:
            url = self._urls[replica, path] = URL(f"{replica.rstrip('/')}{path}")
        return url

    async def post(self, url: URL, body: bytes, headers: Mapping[str, str],
                   timeout: float) -> tuple[int, bytes]:
        """POST once; the status and the reply's bytes, or the transient failure as an error."""
        if self.signer is not None:
            headers = {**headers, **self.signer.headers(url.path, body)}
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ServiceUnavailable(self.service, type(exc).__name__, detail=str(exc) or None) from exc
        if status in TRANSIENT_STATUSES:
            raise ServiceUnavailable(self.service, f"HTTP {status}", retry_after)
        return status, raw

    def result(self, status: int, raw: bytes, *, undecoded: bool = False) -> Any:
        """A single call's result (with ``undecoded``, its JSON bytes as they came), or its error."""
        if undecoded and status == 200 and raw.startswith(RESULT_START) and raw.endswith(b"}"):
            return memoryview(raw)[len(RESULT_START):-1]
        payload = self._decode(raw, status)
        if status == 200 and isinstance(payload, dict) and "result" in payload:
            return payload["result"]
        raise self._error(payload, status)

    def items(self, status: int, raw: bytes, count: int) -> list[Any]:
        """A batch reply's ``count`` items, each to be read with ``item``."""
        payload = self._decode(raw, status)
        if status != 200 or not isinstance(payload, list) or len(payload) != count:
            raise self._error(payload, status)
        return payload

    def item(self, reply: Any) -> Any:
        """A batch item's result, or its error raised (with the status its call alone would have had)."""
        if isinstance(reply, dict) and "result" in reply:
            return reply["result"]
        error = reply.get("error") if isinstance(reply, dict) else None
        status = error.get("status") if isinstance(error, dict) else None
        raise self._error(reply, status if isinstance(status, int) else 500)

    def _decode(self, raw: bytes, status: int) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RemoteError(self.service, "BadReply", f"HTTP {status}, not JSON", status) from None

    def _error(self, payload: Any, status: int) -> Exception:
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return RemoteError(self.service, "BadReply", f"HTTP {status} without an error", status)
        path = error.get("path")
        declared = registered_error(path) if isinstance(path, str) else None
        if declared is not None and 400 <= status < 500:
            return declared(str(error.get("message", "")))
        return RemoteError(self.service, str(error.get("type", "Error")), str(error.get("message", "")),
                           status)


def readiness_probe(session: aiohttp.ClientSession, timeout: float,
                    url: str) -> Callable[[], Awaitable[bool]]:
    """The health probe of an open breaker: whether ``url``'s ``GET /ready`` answers 200 within
    ``timeout`` (``/ready`` needs no signature: ``signing.OPEN_PATHS``)."""
    ready = URL(url.rstrip("/") + "/ready")

    async def probe() -> bool:
        try:
            async with session.get(ready, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    return probe


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds, at most an hour (HTTP dates and
    non-numbers such as "inf" or "nan" are ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
