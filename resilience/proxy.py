"""The client side of RPC over HTTP: ``await proxy.method(**kwargs)``.

Every request goes through the method's ``CallPolicy`` (retry, breaker,
limit, timeout) on the app's one shared ``ClientSession``, and forwards the
caller's correlation ID. Errors come back as data: declared ones are
re-raised as their own type, 502/503/504 and network failures as
``ServiceUnavailable`` (transient, retried), anything else as ``RemoteError``.

Methods named ``batched`` are group-committed and methods named ``shared``
are shared reads (``coalesce.py``): while a request for them is in flight,
new calls wait and leave together as the next request. A batch is one
``POST /rpc`` of ``[{"method", "kwargs", "correlation_id"}, ...]`` answered by
a list of ``{"result"}``/``{"error"}`` in the same order (JSON-RPC 2.0's batch
is the precedent); the policy sees one request (one breaker outcome, one
retry decision, the whole batch resent with the same arguments), and each
caller gets its own item's result or error. A server that answers 404 to
``POST /rpc`` does not know batches: its calls are then sent one by one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from .access import note
from .auth import Signer
from .coalesce import Coalescer, Pending
from .correlation import Propagation, current_propagation, propagation_headers
from .errors import Overloaded, RemoteError, ServiceUnavailable, registered_error
from .policy import CallPolicy
from .server import result_bytes

TRANSIENT_STATUSES = frozenset({502, 503, 504})
_JSON_HEADERS = {"Content-Type": "application/json"}
# Bytes a batch adds around each call's arguments: its method, correlation ID and punctuation.
_BATCH_ITEM_OVERHEAD = 256


@dataclass(slots=True)
class _Call:
    """One call as it will be sent: its method, JSON arguments, deadline, and the request's
    correlation (its headers are built only for a call that goes on the wire alone or first
    in its batch). Not frozen: a frozen dataclass takes three times as long to build, once
    per call; nothing changes it after."""

    method: str
    body: bytes
    propagation: Propagation | None
    deadline: float
    undecoded: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {**_JSON_HEADERS, **propagation_headers(self.propagation)}

    @property
    def correlation_id(self) -> str | None:
        return self.propagation.correlation_id if self.propagation is not None else None


class RpcProxy:
    """Calls the RPC methods of one service, at the replica its policy picks for each attempt.

    ``await proxy.log(uuid=..., msg=...)`` posts ``{"uuid": ..., "msg": ...}``
    to ``<replica>/rpc/log`` and returns the reply's ``result``. A method
    named in ``method_policies`` is called under that policy, any other under
    ``policy``. With several replicas, the one that answered is bound to the
    caller's log context as ``<service>_replica``, so its access line names it.
    With a ``signer`` (``RPC_SECRET``), every attempt is signed afresh.
    """

    def __init__(self, session: aiohttp.ClientSession, service: str, policy: CallPolicy,
                 method_policies: Mapping[str, CallPolicy] | None = None, *,
                 signer: Signer | None = None, batched: Collection[str] = (),
                 shared: Collection[str] = (), max_batch_calls: int = 64,
                 max_batch_bytes: int = 1 << 20, lane_requests: int = 8) -> None:
        self.session = session
        self.signer = signer
        self.service = service
        self.policy = policy
        self.method_policies = dict(method_policies or {})
        self._batched = frozenset(batched)
        self._shared = frozenset(shared)
        # Coalesced calls wait in a queue, not on the policy's concurrency limit, and a request
        # on the wire carries up to max_batch_calls of them: bound the queue to what the
        # limit's requests could carry. Bounding it to the limit itself would refuse callers
        # a batch has room for: under overload the facade would spend its loop refusing them.
        limit = policy.limit.limit if policy.limit is not None else 1 << 16
        max_pending = limit * max_batch_calls
        # A late request (past its policy's hedge delay) lets the calls queued behind it leave.
        self.writes: Coalescer[str] = Coalescer(
            self._send_batch, max_pending=max_pending, refuse=self._overloaded, take=self._batch_size,
            max_in_flight=lane_requests, late_after=lambda method: self._policy(method).late_after())
        self.reads: Coalescer[tuple[str, bytes, bool]] = Coalescer(
            self._send_shared, max_pending=max_pending, refuse=self._overloaded,
            max_in_flight=lane_requests, late_after=lambda key: self._policy(key[0]).late_after())
        self._max_batch_calls = max_batch_calls
        self._max_batch_bytes = max_batch_bytes
        self._without_batches: set[str] = set()  # replicas that answered 404 to a batch
        self._urls: dict[tuple[str, str], URL] = {}
        self._replica_key = f"{service}_replica"

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(**kwargs: Any) -> Any:
            return await self.call(method, kwargs)

        self.__dict__[method] = call  # found as an attribute from now on, not made per call
        return call

    async def call(self, method: str, kwargs: dict[str, Any], *, undecoded: bool = False) -> Any:
        """Call ``method`` with ``kwargs`` under its policy and return its result (with
        ``undecoded``, the result's JSON bytes as they came, to pass on without a copy)."""
        policy = self._policy(method)
        if not policy.balancer.ready():  # refused at once, not after queueing behind a late request
            raise policy.balancer.refuse()
        call = _Call(method, orjson.dumps(kwargs), current_propagation(),
                     policy.clock() + policy.deadline, undecoded)
        try:
            if method in self._batched:
                result, replica = await self.writes.submit(method, call, policy.deadline)
            elif method in self._shared:
                result, replica = await self.reads.submit((method, call.body, undecoded), call,
                                                          policy.deadline)
            else:
                result, replica = await self._call_one(call)
        except TimeoutError:  # queued behind a request for longer than the call's deadline
            raise ServiceUnavailable(self.service, "deadline passed while queued") from None
        if len(policy.balancer.targets) > 1:
            note(self._replica_key, replica)
        return result

    async def aclose(self) -> None:
        """Wait for coalesced requests still in flight (before the session closes), and stop the
        breakers' health probes."""
        await self.writes.aclose()
        await self.reads.aclose()
        for policy in {id(p): p for p in (self.policy, *self.method_policies.values())}.values():
            for breaker in policy.breakers:
                await breaker.aclose()

    def _overloaded(self) -> Overloaded:
        return Overloaded(self.service, "too many calls waiting", retry_after=1.0)

    def _policy(self, method: str) -> CallPolicy:
        return self.method_policies.get(method, self.policy)

    def _url(self, replica: str, path: str) -> URL:
        url = self._urls.get((replica, path))
        if url is None:  # parsed once per replica and path, not once per call
            url = self._urls[replica, path] = URL(f"{replica.rstrip('/')}{path}")
        return url

    async def _call_one(self, call: _Call) -> tuple[Any, str]:
        """One call on its own request: its result and the replica that answered."""
        async def attempt(replica: str, timeout: float) -> tuple[Any, str]:
            status, raw = await self._exchange(self._url(replica, f"/rpc/{call.method}"),
                                               call.body, call.headers, timeout)
            if call.undecoded and status == 200 and (result := result_bytes(raw)) is not None:
                return result, replica
            payload = self._decode(raw, status)
            if status == 200 and isinstance(payload, dict) and "result" in payload:
                return payload["result"], replica
            raise self._error(payload, status)

        return await self._policy(call.method).call(attempt, deadline=call.deadline)

    async def _send_shared(self, key: Any, items: list[Pending]) -> None:
        """A shared read: one request, its result (or error) for every caller."""
        try:
            outcome = await self._call_one(items[0].payload)
        except Exception as exc:
            for item in items:
                item.fail(exc)
            return
        for item in items:
            item.resolve(outcome)

    def _batch_size(self, queue: list[Pending]) -> int:
        """How many queued calls fit one batch: at most the call and byte limits."""
        size = count = 0
        for item in queue[:self._max_batch_calls]:
            size += len(item.payload.body) + _BATCH_ITEM_OVERHEAD
            if count and size > self._max_batch_bytes:
                break
            count += 1
        return count

    async def _send_batch(self, method: str, items: list[Pending]) -> None:
        """Group commit: the calls that queued together, as one batch (one call goes alone)."""
        if len(items) == 1:
            await self._send_shared(method, items)
            return
        policy = self._policy(method)
        calls: list[_Call] = [item.payload for item in items]
        body = orjson.dumps([{"method": c.method, "kwargs": orjson.Fragment(c.body),
                              "correlation_id": c.correlation_id} for c in calls])

        async def attempt(replica: str, timeout: float) -> tuple[list[Any], str]:
            if replica in self._without_batches:
                return await self._one_by_one(calls, replica, timeout), replica
            status, raw = await self._exchange(self._url(replica, "/rpc"), body,
                                               calls[0].headers, timeout)
            if status == 404:  # no batch endpoint there (a server from before batches)
                self._without_batches.add(replica)
                return await self._one_by_one(calls, replica, timeout), replica
            payload = self._decode(raw, status)
            if status != 200 or not isinstance(payload, list) or len(payload) != len(calls):
                raise self._error(payload, status)
            return [self._item_outcome(reply) for reply in payload], replica

        try:
            outcomes, replica = await policy.call(attempt, deadline=min(c.deadline for c in calls))
        except Exception as exc:
            for item in items:
                item.fail(exc)
            return
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Exception):
                item.fail(outcome)
            else:
                item.resolve((outcome, replica))

    async def _one_by_one(self, calls: list[_Call], replica: str, timeout: float) -> list[Any]:
        """A batch for a server without batches: each call on its own request, at once."""
        async def one(call: _Call) -> Any:
            status, raw = await self._exchange(self._url(replica, f"/rpc/{call.method}"),
                                               call.body, call.headers, timeout)
            payload = self._decode(raw, status)
            if status == 200 and isinstance(payload, dict) and "result" in payload:
                return payload["result"]
            return self._error(payload, status)

        return list(await asyncio.gather(*(one(call) for call in calls)))

    def _item_outcome(self, reply: Any) -> Any:
        """One batch item's result, or its error as an exception (returned, not raised)."""
        if isinstance(reply, dict) and "result" in reply:
            return reply["result"]
        error = reply.get("error") if isinstance(reply, dict) else None
        status = error.get("status") if isinstance(error, dict) else None
        return self._error(reply, status if isinstance(status, int) else 500)

    async def _exchange(self, url: URL, body: bytes, headers: Mapping[str, str],
                        timeout: float) -> tuple[int, bytes]:
        """POST once; the status and the reply's bytes, or the transient failure as an error."""
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
        return status, raw

    def _decode(self, raw: bytes, status: int) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RemoteError(self.service, "BadReply", f"HTTP {status}, not JSON", status) from None

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


def readiness_probe(session: aiohttp.ClientSession, signer: Signer | None, timeout: float,
                    url: str) -> Callable[[], Awaitable[bool]]:
    """The health probe of an open breaker: whether ``url``'s ``GET /ready`` answers 200 within
    ``timeout`` (signed with ``signer``, as every RPC path but ``/health`` must be)."""
    ready = URL(url.rstrip("/") + "/ready")

    async def probe() -> bool:
        headers = signer.headers(ready.path, b"") if signer is not None else None
        try:
            async with session.get(ready, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    return probe


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
