"""The client side of RPC over HTTP: ``await proxy.method(**kwargs)``.

Every request goes through the method's ``CallPolicy`` (retry, hedging,
breaker, limit, timeout) and forwards the caller's correlation ID; the
exchange and its codec are ``transport.py``'s.

Methods named ``batched`` are group-committed and methods named ``shared``
are shared reads (``batching.py``): while a request for them is in flight,
new calls wait and leave together as the next request. A batch is one
``POST /rpc`` of ``[{"method", "kwargs", "correlation_id"}, ...]`` answered by
a list of ``{"result"}``/``{"error"}`` in the same order (JSON-RPC 2.0's batch
is the precedent); the policy sees one request (one breaker outcome, one
retry decision, the whole batch resent with the same arguments), and each
caller gets its own item's result or error. A batch that lost every attempt
while its deadline still holds goes on as two halves, each under the policy
again: a batch must not make its calls fail together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from resilience.errors import Overloaded, ServiceUnavailable
from resilience.observability.access import note
from resilience.observability.correlation import Propagation, current_propagation, propagation_headers
from resilience.policies.pipeline import CallPolicy
from resilience.policies.retry import is_transient
from resilience.rpc.batching import Coalescer, Pending
from resilience.rpc.signing import Signer
from resilience.rpc.transport import Transport

# Bytes a batch adds around each call's arguments: its method, correlation ID and punctuation.
_BATCH_ITEM_OVERHEAD = 256


@dataclass(slots=True)
class Call:
    """One call as it is sent: its method, JSON arguments, deadline and the caller's correlation;
    ``replica`` is where it was answered."""

    method: str
    body: bytes
    propagation: Propagation | None
    deadline: float
    undecoded: bool = False
    replica: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **propagation_headers(self.propagation)}

    @property
    def correlation_id(self) -> str | None:
        return self.propagation.correlation_id if self.propagation is not None else None


class RpcProxy:
    """Calls the RPC methods of one service, at the replica its policy picks for each attempt.

    ``await proxy.place(order_id=..., item=...)`` posts ``{"order_id": ..., "item": ...}``
    to ``<replica>/rpc/place`` and returns the reply's ``result``. A method
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
        self.service = service
        self.transport = Transport(session, service, signer)
        self.policy = policy
        self.method_policies = dict(method_policies or {})
        self._batched = frozenset(batched)
        self._shared = frozenset(shared)
        self._max_batch_calls = max_batch_calls
        self._max_batch_bytes = max_batch_bytes
        # Coalesced calls wait in a queue, not on the policy's concurrency limit, and a request
        # on the wire carries up to max_batch_calls of them: bound the queue to what the
        # limit's requests could carry. Bounding it to the limit itself would refuse callers
        # a batch has room for: under overload the caller would spend its loop refusing them.
        max_pending = policy.max_queued(max_batch_calls)
        # A late request (past its policy's hedge delay) lets the calls queued behind it leave.
        self.writes: Coalescer[str] = Coalescer(
            self._send_batch, max_pending=max_pending, refuse=self._overloaded, take=self._batch_size,
            max_in_flight=lane_requests, late_after=lambda method: self._policy(method).late_after())
        self.reads: Coalescer[tuple[str, bytes, bool]] = Coalescer(
            self._send_as_one, max_pending=max_pending, refuse=self._overloaded,
            max_in_flight=lane_requests, late_after=lambda key: self._policy(key[0]).late_after())

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if args:
                raise TypeError(f"{self.service}.{method}() takes keyword arguments only, "
                                "as an RPC body is a JSON object of them")
            return await self.call(method, kwargs)

        return call

    async def call(self, method: str, kwargs: dict[str, Any], *, undecoded: bool = False) -> Any:
        """Call ``method`` with ``kwargs`` under its policy and return its result (with
        ``undecoded``, the result's JSON bytes as they came, to pass on without a copy)."""
        policy = self._policy(method)
        if not policy.balancer.ready():  # refused at once, not after queueing behind a late request
            raise policy.balancer.refuse()
        call = Call(method, orjson.dumps(kwargs), current_propagation(),
                    policy.clock() + policy.deadline, undecoded)
        try:
            if method in self._batched:
                result = await self.writes.submit(method, call, policy.deadline)
            elif method in self._shared:
                result = await self.reads.submit((method, call.body, undecoded), call, policy.deadline)
            else:
                result = await self._call_one(call)
        except TimeoutError:  # queued behind a request for longer than the call's deadline
            raise ServiceUnavailable(self.service, "deadline passed while queued") from None
        if len(policy.balancer.targets) > 1:
            note(f"{self.service}_replica", call.replica)
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

    async def _call_one(self, call: Call) -> Any:
        """One call on its own request."""
        async def attempt(replica: str, timeout: float) -> Any:
            url = self.transport.url(replica, f"/rpc/{call.method}")
            status, raw = await self.transport.post(url, call.body, call.headers, timeout)
            result = self.transport.result(status, raw, undecoded=call.undecoded)
            call.replica = replica
            return result

        return await self._policy(call.method).call(attempt, deadline=call.deadline)

    async def _send_as_one(self, key: Any, items: list[Pending]) -> None:
        """One request for these calls (a lone call, or callers sharing a read): its result, or
        its error, for each of them."""
        first: Call = items[0].payload
        try:
            result = await self._call_one(first)
        except Exception as exc:
            for item in items:
                item.fail(exc)
            return
        for item in items:
            item.payload.replica = first.replica
            item.resolve(result)

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
        """Group commit: the calls that queued together as one batch, each settled with its own
        item's result or error (one call goes on its own request)."""
        if len(items) == 1:
            await self._send_as_one(method, items)
            return
        calls: list[Call] = [item.payload for item in items]
        body = orjson.dumps([{"method": c.method, "kwargs": orjson.Fragment(c.body),
                              "correlation_id": c.correlation_id} for c in calls])

        async def attempt(replica: str, timeout: float) -> list[Any]:
            status, raw = await self.transport.post(self.transport.url(replica, "/rpc"), body,
                                                    calls[0].headers, timeout)
            replies = self.transport.items(status, raw, len(calls))
            for call in calls:
                call.replica = replica
            return replies

        policy = self._policy(method)
        deadline = min(c.deadline for c in calls)
        try:
            replies = await policy.call(attempt, deadline=deadline)
        except Exception as exc:
            if is_transient(exc) and policy.clock() < deadline:
                # The batch lost every attempt together: its calls go on in two halves, each on
                # requests of its own, so one unlucky request cannot fail a whole group at once.
                half = len(items) // 2
                await asyncio.gather(self._send_batch(method, items[:half]),
                                     self._send_batch(method, items[half:]))
                return
            for item in items:
                item.fail(exc)
            return
        for item, reply in zip(items, replies, strict=True):
            try:
                item.resolve(self.transport.item(reply))
            except Exception as exc:
                item.fail(exc)
