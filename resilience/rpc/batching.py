"""Coalescing: one request per key on the wire while it is on time; what arrives meanwhile leaves next.

Group commit, as databases flush concurrent commits at once and Kafka
producers send what accumulated while the previous batch was in flight:
when nothing is in flight for a key, a call goes out at once, alone, in the
caller's own task (a lone call waits for no timer); while one is in flight,
new calls queue, and when it returns they leave together as the *next*
request (split by ``max_items``). A call never joins a request that started
before it, so a read coalesced this way still sees every write acknowledged
before it was made.

What "leave together" means is the ``send`` function's business: a batch of
writes with a result each, or one read whose result every caller shares.
``send`` must settle every pending call's future.

With ``collect_turn``, a call that finds nothing in flight first lets the
rest of the loop's turn run, and the calls made in that same turn leave with
it (DataLoader's "one tick"): a store handed a batch of calls by one
``asyncio.gather`` sends them as one request rather than the first alone and
the rest after it. That costs one pass of the loop, never a timer.

A request that is late (``late_after(key)`` seconds on the wire: a reply
swallowed, a downstream stalled) must not hold everyone else back: while
every request in flight for a key is late, queued calls leave as another
request beside them, up to ``max_in_flight`` requests ("The Tail at Scale":
don't wait on a straggler). A healthy downstream keeps one request in flight
per key, so batches stay as large as group commit makes them.

Waiting is bounded twice: at most ``max_pending`` calls (sent or queued) at
once, past which a call is refused at once (``Overloaded``, as the
concurrency limit refuses a call), and a queued call waits at most its own
``timeout`` while it is queued (a timer of its own): a
downstream that hangs cannot pile calls up behind it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(eq=False, slots=True)
class Pending:
    """One call waiting to be sent: what it sends, where its outcome goes, and the timer that
    ends its wait in the queue."""

    payload: Any
    future: asyncio.Future[Any]
    timer: asyncio.TimerHandle | None = None

    def resolve(self, result: Any) -> None:
        """Hand the caller its result (unless it stopped waiting)."""
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        """Hand the caller its error (unless it stopped waiting); a cancellation cancels it."""
        if self.future.done():
            return
        if isinstance(exc, Exception):
            self.future.set_exception(exc)
        else:
            self.future.cancel()


Send = Callable[[Any, list[Pending]], Awaitable[None]]


@dataclass(slots=True)
class _Lane:
    """A key with a request in flight, and the calls waiting for the next one."""

    queue: list[Pending] = field(default_factory=list)
    in_flight: int = 0
    #: When the newest request in flight left (on the loop's clock).
    newest: float = 0.0
    late_timer: asyncio.TimerHandle | None = None


class Coalescer(Generic[K]):
    """One request per key at a time while it is on time; ``await coalescer.submit(key, payload)``
    gives the call's result.

    ``take`` picks how many queued calls leave together (default: at most
    ``max_items``); the rest wait for the request after. ``collect_turn``: see
    the module's docstring.
    """

    def __init__(self, send: Send, *, max_pending: int, refuse: Callable[[], Exception],
                 max_items: int = 64, take: Callable[[list[Pending]], int] | None = None,
                 collect_turn: bool = False, max_in_flight: int = 1,
                 late_after: Callable[[K], float] | None = None) -> None:
        if max_items < 1 or max_pending < 1 or max_in_flight < 1:
            raise ValueError("max_items, max_pending and max_in_flight must be at least 1")
        self._max_in_flight = max_in_flight
        self._late_after = late_after
        self._send = send
        self._refuse = refuse
        self._max_pending = max_pending
        self._take = take or (lambda queue: min(len(queue), max_items))
        self._collect_turn = collect_turn
        self._lanes: dict[K, _Lane] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self.pending = 0  # calls sent or queued, not yet answered
        self.requests = 0  # requests sent, for tests
        self.calls = 0

    async def submit(self, key: K, payload: Any, timeout: float | None = None) -> Any:
        """Send ``payload`` now if nothing is in flight for ``key``, else with the next request.

        Raises ``refuse()`` at once when ``max_pending`` calls wait already, and
        ``TimeoutError`` when queued for longer than ``timeout`` seconds.
        """
        if self.pending >= self._max_pending:
            raise self._refuse()
        loop = asyncio.get_running_loop()
        item = Pending(payload, loop.create_future())
        self.calls += 1
        self.pending += 1
        try:
            lane = self._lanes.get(key)
            if lane is not None and (lane.queue or not self._late(key, lane)):
                if timeout is not None:
                    item.timer = loop.call_later(timeout, item.fail, TimeoutError())
                lane.queue.append(item)
                self._arm_late(key, lane)
                return await item.future
            if lane is None:
                lane = self._lanes[key] = _Lane()
            self._started(lane)
            try:
                await self._flush(key, await self._first(lane, item))
            finally:
                lane.in_flight -= 1
                self._next(key, lane)
            return item.future.result()
        finally:
            self.pending -= 1
            if item.timer is not None:
                item.timer.cancel()

    async def aclose(self) -> None:
        """Wait for the requests still being sent for queued calls."""
        while self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)

    async def _first(self, lane: _Lane, item: Pending) -> list[Pending]:
        """What the call that found nothing in flight sends: itself, or with ``collect_turn``
        itself and the calls made in the rest of this turn (up to what ``take`` allows)."""
        if not self._collect_turn:
            return [item]
        lane.queue.append(item)
        try:
            await asyncio.sleep(0)  # the tasks already scheduled in this turn run, and queue
        except asyncio.CancelledError:
            item.future.cancel()  # so that the next request leaves it out
            raise
        self._drop_settled(lane)  # its own call is still waiting: the queue is not empty
        return self._take_batch(lane)

    def _started(self, lane: _Lane) -> None:
        lane.in_flight += 1
        lane.newest = asyncio.get_running_loop().time()

    def _late(self, key: K, lane: _Lane) -> bool:
        """Whether another request may leave beside those in flight: they are all late."""
        return (self._late_after is not None and lane.in_flight < self._max_in_flight
                and asyncio.get_running_loop().time() >= lane.newest + self._late_after(key))

    def _arm_late(self, key: K, lane: _Lane) -> None:
        """Send the queue when the newest request in flight becomes late (if more may leave)."""
        if (self._late_after is None or lane.late_timer is not None
                or lane.in_flight >= self._max_in_flight):
            return
        lane.late_timer = asyncio.get_running_loop().call_at(lane.newest + self._late_after(key),
                                                       self._on_late, key, lane)

    def _on_late(self, key: K, lane: _Lane) -> None:
        lane.late_timer = None
        self._drop_settled(lane)
        if not lane.queue:
            return
        if self._late(key, lane):
            self._send_next(key, lane)
        else:  # a newer request left meanwhile, or the most are in flight: wait for that one
            self._arm_late(key, lane)

    def _drop_settled(self, lane: _Lane) -> None:
        """Leave out of the queue the calls already settled: cancelled, or past their timeout."""
        lane.queue = [item for item in lane.queue if not item.future.done()]

    def _take_batch(self, lane: _Lane) -> list[Pending]:
        """The next request's calls, in arrival order: as many as ``take`` allows, at least one."""
        count = max(1, self._take(lane.queue))
        batch, lane.queue = lane.queue[:count], lane.queue[count:]
        for item in batch:  # sent: no longer waiting in the queue
            if item.timer is not None:
                item.timer.cancel()
        return batch

    async def _flush(self, key: K, items: list[Pending]) -> None:
        self.requests += 1
        try:
            await self._send(key, items)
        except BaseException as exc:
            for item in items:
                item.fail(exc)
            if not isinstance(exc, Exception):
                raise
        for item in items:
            item.fail(RuntimeError("send left a call without an outcome"))

    def _next(self, key: K, lane: _Lane) -> None:
        """After a request: send what queued meanwhile, in a task of its own, or go idle."""
        self._drop_settled(lane)
        if lane.queue:
            self._send_next(key, lane)
        elif lane.in_flight == 0:
            if lane.late_timer is not None:
                lane.late_timer.cancel()
            del self._lanes[key]

    def _send_next(self, key: K, lane: _Lane) -> None:
        """The next batch off the queue, as a request in a task of its own."""
        if lane.late_timer is not None:
            lane.late_timer.cancel()
            lane.late_timer = None
        batch = self._take_batch(lane)
        self._started(lane)
        # A fresh context: the drain must not carry the log context of the caller that ended.
        task = asyncio.get_running_loop().create_task(self._drain(key, lane, batch),
                                                context=contextvars.Context())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)
        if lane.queue:
            self._arm_late(key, lane)

    async def _drain(self, key: K, lane: _Lane, batch: list[Pending]) -> None:
        try:
            await self._flush(key, batch)
        except asyncio.CancelledError:
            pass  # the outcome went to the callers' futures
        finally:
            lane.in_flight -= 1
            self._next(key, lane)
