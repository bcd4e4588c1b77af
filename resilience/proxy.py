"""The client side of RPC over HTTP: ``await proxy.method(**kwargs)``.

Every call goes through the proxy's ``CallPolicy`` (retry, breaker,
timeout) on the app's one shared ``ClientSession``, and forwards the current
correlation ID. Errors come back as data: declared ones are re-raised as
their own type, 502/503/504 and network failures as ``ServiceUnavailable``
(transient, retried), anything else as ``RemoteError``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from .auth import Signer
from .correlation import HEADER, current_correlation_id
from .errors import RemoteError, ServiceUnavailable, registered_error
from .policy import CallPolicy
from .server import result_bytes

TRANSIENT_STATUSES = frozenset({502, 503, 504})
_JSON_HEADERS = {"Content-Type": "application/json"}


class RpcProxy:
    """Calls the RPC methods of one service, at the replica its policy picks for each attempt.

    ``await proxy.log(uuid=..., msg=...)`` posts ``{"uuid": ..., "msg": ...}``
    to ``<replica>/rpc/log`` and returns the reply's ``result``. A method
    named in ``method_policies`` is called under that policy, any other under ``policy``.
    With several replicas, the one that answered is bound to the request's
    log context as ``<service>_replica``, so the request's access line names it.
    """

    def __init__(self, session: aiohttp.ClientSession, service: str, policy: CallPolicy,
                 method_policies: Mapping[str, CallPolicy] | None = None,
                 signer: Signer | None = None) -> None:
        self.session = session
        self.signer = signer  # signs every attempt afresh (RPC_SECRET), when set
        self.service = service
        self.policy = policy
        self.method_policies = dict(method_policies or {})
        self._urls: dict[tuple[str, str], URL] = {}
        self._replica_key = f"{service}_replica"

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(**kwargs: Any) -> Any:
            return await self.call(method, kwargs)

        return call

    async def call(self, method: str, kwargs: dict[str, Any], *, undecoded: bool = False) -> Any:
        """Call ``method`` with ``kwargs`` under the policy and return its result (with
        ``undecoded``, the result's JSON bytes as they came, to pass on without a copy)."""
        body = orjson.dumps(kwargs)
        policy = self.method_policies.get(method, self.policy)
        replicated = len(policy.balancer.targets) > 1

        async def attempt(replica: str, timeout: float) -> Any:
            url = self._urls.get((replica, method))
            if url is None:  # parsed once per replica and method, not once per call
                url = self._urls[replica, method] = URL(f"{replica.rstrip('/')}/rpc/{method}")
            result = await self._post(url, body, timeout, undecoded)
            if replicated:
                structlog.contextvars.bind_contextvars(**{self._replica_key: replica})
            return result

        return await policy.call(attempt)

    async def _post(self, url: URL, body: bytes, timeout: float, undecoded: bool = False) -> Any:
        """One attempt: POST, then turn the reply or the failure into a result or an error."""
        headers = _JSON_HEADERS
        cid = current_correlation_id()
        if cid is not None:
            headers = {**headers, HEADER: cid}
        if self.signer is not None:
            headers = {**headers, **self.signer.headers(url.path, body)}
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ServiceUnavailable(self.service, type(exc).__name__, detail=str(exc) or None) from exc
        if status in TRANSIENT_STATUSES:
            raise ServiceUnavailable(self.service, f"HTTP {status}", retry_after)
        if undecoded and status == 200 and (result := result_bytes(raw)) is not None:
            return result
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RemoteError(self.service, "BadReply", f"HTTP {status}, not JSON", status) from None
        if status == 200 and isinstance(payload, dict) and "result" in payload:
            return payload["result"]
        raise self._error(payload, status)

    def _error(self, payload: Any, status: int) -> Exception:
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return RemoteError(self.service, "BadReply", f"HTTP {status} without an error", status)
        error_type = str(error.get("type", "Error"))
        message = str(error.get("message", ""))
        path = error.get("path")
        declared = registered_error(path) if isinstance(path, str) else None
        if declared is not None and 400 <= status < 500:
            return declared(message)
        return RemoteError(self.service, error_type, message, status)


MAX_RETRY_AFTER = 3600.0


def _retry_after(value: str | None) -> float | None:
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
