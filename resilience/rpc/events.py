"""Nameko-style events over NATS JetStream: ``EventDispatcher`` publishes, ``@event_handler`` handles.

::

    class ShopService:
        name = "shop"
        dispatch: Dependency[EventDispatcher] = Dependency()

        async def place(self, order_id: str, item: str) -> None:
            await self.dispatch("order_placed", {"id": order_id, "item": item}, event_id=order_id)

    class AuditService:
        name = "audit"

        @event_handler("shop", "order_placed", handler_type=BROADCAST)
        def keep(self, payload: dict) -> None: ...

Every event is a message on the subject ``<stream>.<source>.<event_type>`` of
one JetStream stream, kept on ``replicas`` servers. A publish carries its
``event_id`` as ``Nats-Msg-Id``, so the stream absorbs the same event
published again within its duplicate window, and it is acknowledged once
most of the stream's servers hold the event. The caller's correlation ID and
trace context travel in the event's headers and are on its handler's lines.

A handler's event is acknowledged after the handler returns; one that raises
is delivered again a second later (a ``BROADCAST`` handler's with the events
after it, in order), and one whose payload is not JSON is dropped, with an
error line. Handlers must therefore be idempotent, by the
event's ID. ``SERVICE_POOL`` handlers (the default) share one durable
consumer per service and handler: each event is handled by one instance.
``BROADCAST`` handlers get a consumer per instance, from the stream's first
event: every instance handles every event, so an instance that starts
rebuilds what it keeps from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StreamConfig

from resilience.errors import Overloaded, RemoteError, ServiceUnavailable
from resilience.observability.correlation import (
    correlated,
    current_propagation,
    propagation_headers,
    received,
)
from resilience.observability.logs import get_logger
from resilience.policies.pipeline import CallPolicy
from resilience.rpc.batching import Coalescer, Pending
from resilience.settings import EventSettings

log = get_logger("resilience.rpc.events")
F = TypeVar("F", bound=Callable[..., Any])

#: Each event is handled by one instance of the service (a pool of competing consumers).
SERVICE_POOL = "service_pool"
#: Each event is handled by every instance of the service.
BROADCAST = "broadcast"

_HANDLER_ATTR = "__event_handler__"
# Errors of a NATS connection or of JetStream that a later try may not meet.
_UNAVAILABLE = (nats.errors.Error, nats.js.errors.ServiceUnavailableError, TimeoutError, OSError)


@dataclass(frozen=True)
class EventHandler:
    """One ``@event_handler`` method: what it handles and how its instances share the events."""

    source_service: str
    event_type: str
    handler_type: str
    method: str


def event_handler(source_service: str, event_type: str,
                  handler_type: str = SERVICE_POOL) -> Callable[[F], F]:
    """Mark a method as the handler of ``source_service``'s ``event_type`` events (nameko's)."""
    if handler_type not in (SERVICE_POOL, BROADCAST):
        raise ValueError(f"handler_type must be SERVICE_POOL or BROADCAST, not {handler_type!r}")

    def mark(fn: F) -> F:
        setattr(fn, _HANDLER_ATTR, (source_service, event_type, handler_type))
        return fn

    return mark


def event_handlers(cls: type) -> list[EventHandler]:
    """The ``@event_handler`` methods of ``cls``."""
    found = []
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if hasattr(fn, _HANDLER_ATTR):
            source_service, event_type, handler_type = getattr(fn, _HANDLER_ATTR)
            found.append(EventHandler(source_service, event_type, handler_type, name))
    return found


class EventBus:
    """A service's NATS connection, and the stream its events go to (made on first connect).

    ``start`` connects in the background, retrying until a server answers and
    JetStream can hold the stream; ``ready`` is set then. NATS reconnects on
    its own afterwards, to any server of ``servers``. An outage is one warning
    when it starts and one line when it ends, however long it lasts.

    After a reconnection, events are refused (``ServiceUnavailable``) until
    JetStream is whole again: a metadata leader answers and the stream has a
    leader. A stream leader elected while the servers have no metadata leader
    yet could take events and lose them once one is elected.
    """

    def __init__(self, servers: Sequence[str], stream: str, *, replicas: int = 3,
                 duplicate_window: float = 120.0, name: str | None = None,
                 retry_interval: float = 0.5) -> None:
        self.servers = list(servers)
        self.stream = stream
        self.replicas = replicas
        self.duplicate_window = duplicate_window
        self.name = name
        self.retry_interval = retry_interval
        self.ready = asyncio.Event()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._outage = False
        self._whole = asyncio.Event()  # JetStream can be trusted with events

    @classmethod
    def from_settings(cls, settings: EventSettings, name: str) -> EventBus:
        """The bus ``settings`` describe (``NATS_URLS``, ``EVENTS_*``), for the service ``name``."""
        return cls(settings.nats_servers(), settings.events_stream, replicas=settings.events_replicas,
                   duplicate_window=settings.events_duplicate_window, name=name)

    def subject(self, source_service: str, event_type: str) -> str:
        return f"{self.stream}.{source_service}.{event_type}"

    @property
    def js(self) -> JetStreamContext:
        if self._js is None or self._nc is None or not self._nc.is_connected:
            raise ServiceUnavailable("events", "not connected to NATS")
        return self._js

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        while self._nc is None:
            try:
                self._nc = await nats.connect(
                    self.servers, name=self.name, connect_timeout=2, max_reconnect_attempts=-1,
                    reconnect_time_wait=self.retry_interval, error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected)
            except _UNAVAILABLE as exc:
                self._warn("NATS unreachable, trying again", error=repr(exc))
                await asyncio.sleep(self.retry_interval)
        self._outage = False
        self._js = self._nc.jetstream(timeout=2.0)
        await self._until_whole(self._js, "event stream not available yet, trying again")
        log.info("event stream ready", stream=self.stream, replicas=self.replicas)
        self.ready.set()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Make the stream if it is missing; return once the servers have a metadata leader (it
        answers account information) and the stream a leader to take events."""
        await js.account_info()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await js.add_stream(StreamConfig(
                name=self.stream, subjects=[f"{self.stream}.>"], num_replicas=self.replicas,
                duplicate_window=self.duplicate_window))
        while info.cluster is not None and not info.cluster.leader:
            await asyncio.sleep(self.retry_interval)
            info = await js.stream_info(self.stream)

    def _warn(self, event: str, **fields: Any) -> None:
        if not self._outage:
            self._outage = True
            log.warning(event, **fields)

    async def _on_error(self, exc: Exception) -> None:
        self._warn("NATS connection error", error=repr(exc))

    async def _on_disconnected(self) -> None:
        self._warn("NATS disconnected")

    async def _on_reconnected(self) -> None:
        self._outage = False
        url = self._nc.connected_url if self._nc is not None else None
        log.info("NATS reconnected", server=None if url is None else url.netloc)
        if self._whole.is_set() and self._js is not None:
            self._whole.clear()
            self._task = asyncio.create_task(
                self._until_whole(self._js, "event stream not whole yet, refusing events"))

    async def _until_whole(self, js: JetStreamContext, warning: str) -> None:
        """Try ``_ensure_stream`` until it succeeds (``warning`` once meanwhile), then take events."""
        while True:
            try:
                await self._ensure_stream(js)
            except (*_UNAVAILABLE, nats.js.errors.APIError) as exc:
                self._warn(warning, stream=self.stream, error=repr(exc))
                await asyncio.sleep(self.retry_interval)
            else:
                break
        self._outage = False
        self._whole.set()

    async def publish(self, events: Sequence[tuple[str, bytes, dict[str, str]]],
                      timeout: float) -> None:
        """Publish ``events`` (subject, body, headers) pipelined on the connection and wait for
        the stream to acknowledge each; ``ServiceUnavailable`` if one did not in ``timeout``."""
        if not self._whole.is_set():
            raise ServiceUnavailable("events", "event stream recovering after a reconnection")
        acks: list[asyncio.Future[PubAck]] = []
        try:
            async with asyncio.timeout(timeout):
                for subject, body, headers in events:
                    acks.append(await self.js.publish_async(subject, body, headers=headers))
                for reply in await asyncio.gather(*acks):
                    if reply.stream != self.stream:
                        raise RemoteError("events", "WrongStream",
                                          f"acknowledged by stream {reply.stream!r}", 500)
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
            raise ServiceUnavailable("events", "no stream leader") from None
        except nats.js.errors.APIError as exc:
            if exc.code is not None and exc.code >= 500:
                raise ServiceUnavailable("events", f"JetStream {exc.code}", detail=exc.description) from None
            raise RemoteError("events", "APIError", str(exc.description), exc.code or 500) from None
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("events", type(exc).__name__, detail=str(exc)) from None
        finally:
            for future in acks:  # one not acknowledged is forgotten, and its place freed
                future.cancel()

    async def probe(self) -> bool:
        """Whether the stream answers now (an open breaker's health probe)."""
        if not self._whole.is_set():
            return False
        try:
            await self.js.stream_info(self.stream)
        except (*_UNAVAILABLE, nats.js.errors.APIError, ServiceUnavailable):
            return False
        return True

    async def last_sequence(self, subject: str) -> int:
        """The stream sequence of the last event on ``subject`` (0 when there is none)."""
        try:
            return int((await self.js.get_last_msg(self.stream, subject)).seq or 0)
        except nats.js.errors.NotFoundError:
            return 0
        except (*_UNAVAILABLE, nats.js.errors.APIError) as exc:
            raise ServiceUnavailable("events", type(exc).__name__, detail=str(exc)) from None

    async def aclose(self, timeout: float = 1.0) -> None:
        """Close the connection, waiting at most ``timeout`` seconds: with the servers gone (they
        stop with the rest under honcho), nats-py may wait on them for longer than a process's
        shutdown grace, and it swallows a cancellation while it waits for a reconnection to end,
        so a close that takes too long is left behind rather than cancelled."""
        if self._task is not None:
            self._task.cancel()
        pending = [task for task in (self._task,) if task is not None]
        if self._nc is not None and not self._nc.is_closed:
            pending.append(asyncio.ensure_future(self._nc.close()))
        if not await _stopped(pending, timeout):
            log.warning("NATS connection not closed in time, leaving it", seconds=timeout)


async def _stopped(tasks: Sequence[asyncio.Future[Any]], timeout: float) -> bool:
    """Whether ``tasks`` (cancelled, or closing) all ended within ``timeout`` seconds."""
    if not tasks:
        return True
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: how a close failed does not matter any more
    return not pending


class EventDispatcher:
    """Publishes ``source_service``'s events under ``policy``: ``await dispatch(type, payload,
    event_id=...)`` returns once the stream holds the event, or raises as any call does.

    Events published while others are on their way leave together (group
    commit, ``batching.Coalescer``): one pass of the policy for the batch,
    its events pipelined on the connection. A batch that fails is retried
    whole; the stream absorbs the events it already held (their IDs).
    """

    def __init__(self, bus: EventBus, source_service: str, policy: CallPolicy, *,
                 max_batch: int = 64, lane_requests: int = 8) -> None:
        self.bus = bus
        self.source_service = source_service
        self.policy = policy
        self._batches: Coalescer[str] = Coalescer(
            self._send, max_pending=policy.max_queued(max_batch), max_items=max_batch,
            refuse=lambda: Overloaded("events", "too many events waiting", retry_after=1.0),
            max_in_flight=lane_requests, late_after=lambda _: policy.late_after())

    async def __call__(self, event_type: str, payload: Any, *, event_id: str) -> None:
        subject = self.bus.subject(self.source_service, event_type)
        headers = {"Nats-Msg-Id": event_id, **propagation_headers(current_propagation())}
        try:
            await self._batches.submit(subject, (subject, orjson.dumps(payload), headers),
                                       self.policy.deadline)
        except TimeoutError:  # queued behind a batch for longer than the deadline
            raise ServiceUnavailable("events", "deadline passed while queued") from None

    async def _send(self, _subject: str, items: list[Pending]) -> None:
        async def attempt(_server: str, timeout: float) -> None:
            await self.bus.publish([item.payload for item in items], timeout)

        try:
            await self.policy.call(attempt)
        except Exception as exc:
            for item in items:
                item.fail(exc)
            return
        for item in items:
            item.resolve(None)

    async def aclose(self) -> None:
        """Wait for the batches on their way."""
        await self._batches.aclose()


@dataclass
class _Push:
    """One push subscription of a ``BROADCAST`` handler, as its deliveries go."""

    ended: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 1  # the consumer sequence of the next delivery
    busy: bool = False  # a delivery is being handled


class EventConsumer:
    """Runs a service's ``@event_handler`` methods: a consumer and a task each.

    ``tally`` counts events by handler and outcome (handled, failed, dropped);
    ``caught_up`` waits until a handler has handled every event the stream
    held when it was called (a read that must see what was acknowledged).
    """

    def __init__(self, bus: EventBus, service_name: str, handlers: Sequence[EventHandler], *,
                 ack_wait: float = 30.0, redelivery_delay: float = 1.0, batch: int = 64,
                 check_interval: float = 2.0) -> None:
        self.bus = bus
        self.service_name = service_name
        self.handlers = {handler.method: handler for handler in handlers}
        self.ack_wait = ack_wait
        self.redelivery_delay = redelivery_delay
        self.batch = batch
        self.check_interval = check_interval
        self.tally: Counter[tuple[str, str]] = Counter()
        self.handled = dict.fromkeys(self.handlers, 0)  # the last stream sequence each acknowledged
        self._replayed_to: dict[str, int] = {}  # the stream's end when each handler subscribed
        self._subscribed: set[str] = set()  # the handlers whose subscription is working
        self._following: dict[str, Any] = {}  # each handler's subscription, left when it ends
        self._progress = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, service: object) -> None:
        self._tasks = [asyncio.create_task(self._run(service, handler))
                       for handler in self.handlers.values()]

    def outcomes(self) -> Counter[str]:
        """Events by outcome, over every handler (for the metrics)."""
        counts: Counter[str] = Counter()
        for (_, outcome), count in self.tally.items():
            counts[outcome] += count
        return counts

    def replayed(self) -> bool:
        """Whether every handler is subscribed, and has handled what the stream held when it
        first subscribed (a readiness check)."""
        return self._subscribed == set(self.handlers) and all(
            self.handled[method] >= end for method, end in self._replayed_to.items())

    async def caught_up(self, method: str, timeout: float) -> None:
        """Return once handler ``method`` has handled the stream's events up to now; raise
        ``ServiceUnavailable`` if it has not within ``timeout`` seconds.

        For a ``BROADCAST`` handler (a ``SERVICE_POOL`` one sees only its share). An event
        whose handler failed comes again later; this does not wait for it.
        """
        handler = self.handlers[method]
        try:
            async with asyncio.timeout(timeout):
                await self.bus.ready.wait()
                end = await self.bus.last_sequence(
                    self.bus.subject(handler.source_service, handler.event_type))
                async with self._progress:
                    await self._progress.wait_for(lambda: self.handled[method] >= end)
        except TimeoutError:
            raise ServiceUnavailable(self.service_name, "catching up with the event stream",
                                     retry_after=1.0) from None

    async def _run(self, service: object, handler: EventHandler) -> None:
        """Keep ``handler`` subscribed, and subscribe again from its next event when the
        subscription fails or its consumer is gone (one the servers dropped sends nothing, so it
        is looked for every ``check_interval`` while no event comes).
        """
        await self.bus.ready.wait()
        follow = self._follow_push if handler.handler_type == BROADCAST else self._follow_pull
        while True:
            delay = self.bus.retry_interval
            try:
                await follow(service, handler)
                delay = self.redelivery_delay  # it ended to start again from an event not handled
            except (*_UNAVAILABLE, nats.js.errors.APIError, ServiceUnavailable) as exc:
                log.warning("event consumer interrupted, subscribing again",
                            handler=handler.method, error=repr(exc))
                self._subscribed.discard(handler.method)
            except Exception:  # a bug here must not end the consumer without a word
                log.exception("event consumer failed, subscribing again", handler=handler.method)
                self._subscribed.discard(handler.method)
            subscription = self._following.pop(handler.method, None)
            if subscription is not None:
                with contextlib.suppress(*_UNAVAILABLE):
                    await subscription.unsubscribe()
            await asyncio.sleep(delay)

    async def _follow_push(self, service: object, handler: EventHandler) -> None:
        """Follow a ``BROADCAST`` handler's own consumer until it must start again.

        The servers push its events, handled one at a time as they come, in the stream's
        order. When the handler fails on one, a delivery is missing (the consumer numbers
        them), or none has come for a whole ``check_interval`` while the servers owe some,
        the rest of this subscription is left alone and ``_run`` starts a new one from the
        first event not handled ``redelivery_delay`` later, so the events are handled in
        order and none is skipped or left waiting.
        """
        subject, config = await self._consumer(handler)
        push = _Push()

        async def deliver(msg: Msg) -> None:
            if push.ended.is_set():
                return
            push.busy = True
            try:
                if msg.metadata.sequence.consumer != push.expected:
                    # A delivery lost on the way (its server went down): the servers would
                    # send it again only after ack_wait, behind later ones.
                    self._subscribe_again(handler, push, "event stream delivery lost")
                elif not await self._handle(service, handler, msg):
                    push.ended.set()
            finally:
                push.expected += 1
                push.busy = False

        subscription = await self.bus.js.subscribe(
            subject, cb=deliver, stream=self.bus.stream, config=config, manual_ack=True)
        self._following[handler.method] = subscription
        self._subscribed.add(handler.method)
        quiet_at = 0  # push.expected when a check last found deliveries owed
        while not push.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(push.ended.wait(), self.check_interval)
            if push.ended.is_set():
                return
            info = await subscription.consumer_info()  # NotFoundError: gone
            owed = ((info.num_pending or 0) + (info.num_ack_pending or 0) > 0
                    or await self.bus.last_sequence(subject) > self.handled[handler.method])
            if push.busy or subscription.pending_msgs or not owed:
                quiet_at = 0
            elif quiet_at == push.expected:
                # The servers owe this consumer events, or the stream holds some it has not
                # handled, yet none came for a whole interval: its deliveries stalled (the
                # last ones lost with nothing after them to show the gap, or its server
                # behind the stream's leader).
                self._subscribe_again(handler, push, "event stream deliveries stalled")
            else:
                quiet_at = push.expected

    async def _follow_pull(self, service: object, handler: EventHandler) -> None:
        """Follow a ``SERVICE_POOL`` handler's durable consumer, shared by the service's instances.

        It pulls up to ``batch`` events when it is free, so a busy or stuck instance takes
        none the others could handle; an event it fails on comes again ``redelivery_delay``
        later, to whichever instance is free.
        """
        subject, config = await self._consumer(handler)
        subscription = await self.bus.js.pull_subscribe(
            subject, durable=config.durable_name, stream=self.bus.stream, config=config)
        self._following[handler.method] = subscription
        self._subscribed.add(handler.method)
        while True:
            try:
                messages = await subscription.fetch(self.batch, timeout=self.check_interval)
            except nats.errors.TimeoutError:
                await subscription.consumer_info()  # NotFoundError: gone
                continue
            for msg in messages:
                await self._handle(service, handler, msg)

    def _subscribe_again(self, handler: EventHandler, push: _Push, why: str) -> None:
        log.warning(f"{why}, subscribing again from the first event not handled",
                    handler=handler.method, sequence=self.handled[handler.method] + 1)
        push.ended.set()

    async def _consumer(self, handler: EventHandler) -> tuple[str, ConsumerConfig]:
        """The subject of ``handler``'s events, and the consumer that delivers them."""
        subject = self.bus.subject(handler.source_service, handler.event_type)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                filter_subject=subject)
        if handler.handler_type == SERVICE_POOL:  # one durable consumer for all the instances
            config.durable_name = f"{self.service_name}-{handler.method}"
            config.deliver_policy = DeliverPolicy.ALL
        else:  # this instance's own, from its next event on (the first, when it starts)
            config.inactive_threshold = max(self.ack_wait, 60.0)
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.handled[handler.method] + 1
        if handler.method not in self._replayed_to:
            self._replayed_to[handler.method] = await self.bus.last_sequence(subject)
        return subject, config

    async def _handle(self, service: object, handler: EventHandler, msg: Msg) -> bool:
        """Run the handler on one event under its sender's correlation and acknowledge it, or
        drop it (not JSON); ``False`` when the handler failed (the event is to come again)."""
        sender, _ = received(msg.headers or {})
        sequence = msg.metadata.sequence.stream
        fields = {"handler": handler.method, "event_type": handler.event_type,
                  "source_service": handler.source_service, "sequence": sequence}
        with correlated(sender.correlation_id, sender.flags, sender.tracestate):
            try:
                payload = orjson.loads(msg.data)
            except orjson.JSONDecodeError as exc:
                log.error("event dropped: its payload is not JSON", error=str(exc), **fields)
                outcome = "dropped"
                await msg.term()
            else:
                try:
                    result = getattr(service, handler.method)(payload)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    log.exception("event handler failed, the event will be delivered again",
                                  error=repr(exc), **fields)
                    self.tally[handler.method, "failed"] += 1
                    await msg.nak(delay=self.redelivery_delay)
                    return False
                outcome = "handled"
                await msg.ack()
                log.info("event handled", **fields)
        self.tally[handler.method, outcome] += 1
        async with self._progress:
            self.handled[handler.method] = max(self.handled[handler.method], sequence)
            self._progress.notify_all()
        return True

    async def aclose(self, timeout: float = 1.0) -> None:
        """Stop the consumers, waiting at most ``timeout`` seconds (nats-py may hold a
        cancellation back while its connection is lost)."""
        for task in self._tasks:
            task.cancel()
        if not await _stopped(self._tasks, timeout):
            log.warning("event consumers not stopped in time, leaving them", seconds=timeout)
