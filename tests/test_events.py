"""Events in the library: EventDispatcher and @event_handler on a real three-server NATS cluster."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import nats.errors
import pytest

from facade.ids import new_uuid
from resilience import (
    BROADCAST,
    SERVICE_POOL,
    CallPolicySettings,
    EventBus,
    EventConsumer,
    EventDispatcher,
    ServiceUnavailable,
    downstream_policies,
    event_handler,
    event_handlers,
)
from resilience.observability.correlation import correlated
from resilience.observability.logs import configure_logging
from resilience.testing.events import RecordingDispatcher, deliver
from resilience.testing.nats_server import NatsCluster
from tests.conftest import wait_for

_streams = itertools.count()


class Keeper:
    """Keeps each message once by UUID, in the order events came."""

    name = "keeper"

    def __init__(self) -> None:
        self.kept: dict[str, str] = {}
        self.calls = 0
        self.fail_first = 0
        self.fail_once: set[str] = set()  # texts whose first event the handler fails on

    @event_handler("front", "said", handler_type=BROADCAST)
    def keep(self, payload: dict[str, Any]) -> None:
        self.calls += 1
        if self.fail_first > 0 or payload["msg"] in self.fail_once:
            self.fail_first = max(0, self.fail_first - 1)
            self.fail_once.discard(payload["msg"])
            raise RuntimeError("not now")
        self.kept.setdefault(payload["uuid"], payload["msg"])


class Worker:
    """A pool of workers: each event goes to one of them."""

    name = "worker"

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.seen: list[str] = []
        self.entered = 0
        self.gate = gate

    @event_handler("front", "said")  # SERVICE_POOL, nameko's default
    async def work(self, payload: dict[str, Any]) -> None:
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        self.seen.append(payload["uuid"])


@pytest.fixture
async def bus(nats_cluster: NatsCluster) -> AsyncIterator[EventBus]:
    """A connected bus on a stream of this test's own, replicated on the three servers; the
    consumers started on it are closed with it."""
    bus = EventBus(nats_cluster.urls.split(","), f"test-{next(_streams)}-{new_uuid()[:8]}")
    bus.start()
    await asyncio.wait_for(bus.ready.wait(), 30)
    yield bus
    for consumer in _consumers.pop(id(bus), []):
        await consumer.aclose()
    await bus.aclose()


_consumers: dict[int, list[EventConsumer]] = {}


def dispatcher(bus: EventBus) -> EventDispatcher:
    policies = downstream_policies("events", bus.servers[:1], CallPolicySettings(), ("publish",),
                                   probe=lambda _url: bus.probe)
    return EventDispatcher(bus, "front", policies["publish"])


async def consume(bus: EventBus, service: Any, **options: Any) -> EventConsumer:
    consumer = EventConsumer(bus, service.name, event_handlers(type(service)), **options)
    consumer.start(service)
    _consumers.setdefault(id(bus), []).append(consumer)
    return consumer


async def test_every_instance_of_a_broadcast_handler_gets_every_event_once(bus: EventBus) -> None:
    """Two instances each keep all 50 events, in the order they were published."""
    dispatch = dispatcher(bus)
    uuids = [new_uuid() for _ in range(50)]
    for i, uuid in enumerate(uuids):
        await dispatch("said", {"uuid": uuid, "msg": f"m{i}"}, event_id=uuid)
    first, second = Keeper(), Keeper()
    consumers = [await consume(bus, first), await consume(bus, second)]
    await wait_for(lambda: len(first.kept) == len(second.kept) == 50, timeout=10)
    assert list(first.kept) == list(second.kept) == uuids
    assert (first.calls, second.calls) == (50, 50)
    for consumer in consumers:
        assert consumer.tally == {("keep", "handled"): 50}


async def test_a_service_pool_shares_the_events_between_its_instances(bus: EventBus) -> None:
    """Each of 60 events is handled by exactly one of two instances: while one is stuck in its
    handler, the other takes every event the stuck one has not fetched."""
    dispatch = dispatcher(bus)
    gate = asyncio.Event()
    stuck, free = Worker(gate), Worker()
    await consume(bus, stuck, batch=8)
    uuids = [new_uuid() for _ in range(60)]
    await dispatch("said", {"uuid": uuids[0], "msg": "x"}, event_id=uuids[0])
    await wait_for(lambda: stuck.entered == 1, timeout=10)
    await consume(bus, free, batch=8)
    await asyncio.gather(*(dispatch("said", {"uuid": u, "msg": "x"}, event_id=u) for u in uuids[1:]))
    await wait_for(lambda: len(free.seen) == 59, timeout=10)
    gate.set()
    await wait_for(lambda: len(stuck.seen) == 1, timeout=10)
    assert sorted(stuck.seen + free.seen) == sorted(uuids)


async def test_the_stream_absorbs_an_event_published_again(bus: EventBus) -> None:
    """The same event ID published three times is one event for its handlers."""
    dispatch = dispatcher(bus)
    uuid = new_uuid()
    for _ in range(3):
        await dispatch("said", {"uuid": uuid, "msg": "once"}, event_id=uuid)
    last = new_uuid()
    await dispatch("said", {"uuid": last, "msg": "last"}, event_id=last)
    keeper = Keeper()
    await consume(bus, keeper)
    await wait_for(lambda: last in keeper.kept, timeout=10)
    assert keeper.calls == 2


async def test_an_event_whose_handler_failed_is_delivered_again(bus: EventBus) -> None:
    """A handler that raises is not acknowledged: the event comes again, and is then kept."""
    keeper = Keeper()
    keeper.fail_first = 2
    consumer = await consume(bus, keeper, redelivery_delay=0.05)
    uuid = new_uuid()
    await dispatcher(bus)("said", {"uuid": uuid, "msg": "again"}, event_id=uuid)
    await wait_for(lambda: uuid in keeper.kept, timeout=10)
    assert keeper.calls == 3
    assert consumer.tally == {("keep", "failed"): 2, ("keep", "handled"): 1}


async def test_a_broadcast_handler_that_failed_goes_on_from_that_event_in_order(
        bus: EventBus) -> None:
    """The handler fails on the second of five events: that event and the three after it come
    again, in the stream's order; each is handled once and none is skipped."""
    keeper = Keeper()
    keeper.fail_once = {"m1"}
    consumer = await consume(bus, keeper, redelivery_delay=0.05)
    texts = [f"m{i}" for i in range(5)]
    for text in texts:
        uuid = new_uuid()
        await dispatcher(bus)("said", {"uuid": uuid, "msg": text}, event_id=uuid)
    await wait_for(lambda: len(keeper.kept) == 5, timeout=10)
    assert list(keeper.kept.values()) == texts
    assert consumer.tally == {("keep", "failed"): 1, ("keep", "handled"): 5}
    assert consumer.handled["keep"] == await bus.last_sequence(bus.subject("front", "said"))


async def test_a_payload_that_is_not_json_is_dropped_and_the_next_is_handled(bus: EventBus) -> None:
    keeper = Keeper()
    consumer = await consume(bus, keeper)
    await bus.publish([(bus.subject("front", "said"), b"{not json", {"Nats-Msg-Id": "bad"})], 5.0)
    await consumer.caught_up("keep", 10.0)  # a dropped event is behind the handler too
    assert consumer.tally == {("keep", "dropped"): 1}
    uuid = new_uuid()
    await dispatcher(bus)("said", {"uuid": uuid, "msg": "fine"}, event_id=uuid)
    await wait_for(lambda: uuid in keeper.kept, timeout=10)
    assert consumer.tally == {("keep", "dropped"): 1, ("keep", "handled"): 1}


async def test_a_restarted_broadcast_consumer_rebuilds_from_the_stream(bus: EventBus) -> None:
    """An instance that starts again (nothing kept in memory) gets every event again, and says
    it has replayed the stream once it has."""
    dispatch = dispatcher(bus)
    uuids = [new_uuid() for _ in range(30)]
    for uuid in uuids:
        await dispatch("said", {"uuid": uuid, "msg": "kept"}, event_id=uuid)
    keeper = Keeper()
    consumer = await consume(bus, keeper)
    await wait_for(consumer.replayed, timeout=10)
    await consumer.aclose()
    again = Keeper()
    restarted = await consume(bus, again)
    assert not restarted.replayed()
    await wait_for(restarted.replayed, timeout=10)
    assert list(again.kept) == uuids


async def test_caught_up_returns_once_every_acknowledged_event_is_handled(bus: EventBus) -> None:
    keeper = Keeper()
    consumer = await consume(bus, keeper)
    dispatch = dispatcher(bus)
    uuids = [new_uuid() for _ in range(20)]
    await asyncio.gather(*(dispatch("said", {"uuid": u, "msg": "x"}, event_id=u) for u in uuids))
    await consumer.caught_up("keep", timeout=10)
    assert set(keeper.kept) == set(uuids)


async def test_caught_up_fails_as_unavailable_while_the_handler_cannot_keep_up(bus: EventBus) -> None:
    keeper = Keeper()
    keeper.fail_first = 10**6  # never handles anything
    consumer = await consume(bus, keeper, redelivery_delay=0.05)
    uuid = new_uuid()
    await dispatcher(bus)("said", {"uuid": uuid, "msg": "x"}, event_id=uuid)
    with pytest.raises(ServiceUnavailable, match="catching up"):
        await consumer.caught_up("keep", timeout=0.3)


async def test_the_handler_logs_under_the_publishers_correlation_id(
        bus: EventBus, restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("keeper", "json", "info", stream=out)
    keeper = Keeper()
    await consume(bus, keeper)
    uuid = new_uuid()
    with correlated("4bf92f3577b34da6a3ce929d0e0e4736"):
        await dispatcher(bus)("said", {"uuid": uuid, "msg": "traced"}, event_id=uuid)
    await wait_for(lambda: uuid in keeper.kept, timeout=10)
    await wait_for(lambda: "event handled" in out.getvalue())
    handled = [line for line in map(json.loads, out.getvalue().splitlines())
               if line["event"] == "event handled"]
    assert [(line["correlation_id"], line["handler"]) for line in handled] == [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "keep")]


class Unsettled:
    """JetStream after its servers restarted: no metadata leader until ``elected`` is set."""

    def __init__(self) -> None:
        self.elected = asyncio.Event()
        self.published: list[str] = []

    async def account_info(self) -> Any:
        if not self.elected.is_set():
            raise nats.errors.TimeoutError
        return SimpleNamespace()

    async def stream_info(self, stream: str) -> Any:
        return SimpleNamespace(cluster=SimpleNamespace(leader="nats2"))

    async def publish_async(self, subject: str, body: bytes, headers: Any) -> Any:
        self.published.append(subject)
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acked.set_result(SimpleNamespace(stream="events"))
        return acked


async def test_after_a_reconnection_events_wait_for_a_metadata_leader() -> None:
    """Once reconnected, the bus refuses events and fails its probe until JetStream has a
    metadata leader again, whatever the stream's leader would take meanwhile."""
    bus = EventBus(["nats://127.0.0.1:1"], "events", retry_interval=0.0)
    unsettled = Unsettled()
    bus._nc = SimpleNamespace(is_connected=True, connected_url=None)  # type: ignore[assignment]
    bus._js = unsettled  # type: ignore[assignment]
    bus._whole.set()  # as it was before the servers went away
    event = [(bus.subject("front", "said"), b"{}", {})]

    await bus._on_reconnected()

    with pytest.raises(ServiceUnavailable, match="recovering after a reconnection"):
        await bus.publish(event, 1.0)
    assert await bus.probe() is False
    unsettled.elected.set()
    await wait_for(bus._whole.is_set)
    await bus.publish(event, 1.0)
    assert unsettled.published == ["events.front.said"]
    assert await bus.probe() is True


def test_the_test_servers_write_each_event_to_disk_before_acknowledging_it(
        nats_cluster: NatsCluster) -> None:
    """The harness runs nats-server with ``sync_interval: always``, so killing all three at
    once loses nothing acknowledged (tests/test_events_cluster.py does)."""
    for name in nats_cluster.names:
        with urllib.request.urlopen(nats_cluster.monitor_url(name) + "/varz") as reply:
            assert json.loads(reply.read())["jetstream"]["config"]["sync_always"] is True


async def test_publishing_to_servers_that_are_all_down_fails_as_unavailable(
        tmp_path: Any) -> None:
    """With no server up, a publish is refused at once as ServiceUnavailable (a 503 upstream)."""
    with NatsCluster(tmp_path, size=1) as single:
        single.start_all()
        bus = EventBus(single.urls.split(","), "down", replicas=1)
        bus.start()
        await asyncio.wait_for(bus.ready.wait(), 30)
        single.kill("nats1")
        await wait_for(lambda: bus._nc is not None and not bus._nc.is_connected, timeout=10)
        with pytest.raises(ServiceUnavailable, match="not connected"):
            await bus.publish([(bus.subject("front", "said"), b"{}", {})], 1.0)
        assert await bus.probe() is False
        await bus.aclose()


async def test_a_publish_the_stream_never_acknowledges_times_out_and_is_let_go(
        tmp_path: Any) -> None:
    """A server that stops answering (SIGSTOP) takes the events but acknowledges none: the
    publish fails as ServiceUnavailable after its timeout, and nothing is left waiting."""
    with NatsCluster(tmp_path, size=1) as single:
        single.start_all()
        bus = EventBus(single.urls.split(","), "stalled", replicas=1)
        bus.start()
        try:
            await asyncio.wait_for(bus.ready.wait(), 30)
            events = [(bus.subject("front", "said"), b"{}", {"Nats-Msg-Id": f"e{i}"})
                      for i in range(3)]
            await bus.publish(events[:1], 5.0)
            pid = single.procs["nats1"].pid
            os.kill(pid, signal.SIGSTOP)
            try:
                await wait_for(lambda: stopped(pid))
                with pytest.raises(ServiceUnavailable, match="TimeoutError"):
                    await bus.publish(events[1:], 0.2)
                assert bus.js.publish_async_pending() == 0
            finally:
                os.kill(pid, signal.SIGCONT)
            await bus.publish(events[1:], 5.0)
            assert await bus.last_sequence(bus.subject("front", "said")) == 3
        finally:
            await bus.aclose()


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (its state in /proc is T)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


class FakeJetStream:
    """Push subscriptions whose deliveries the test makes, each recording where it started."""

    def __init__(self) -> None:
        self.deliver: list[Callable[[Any], Awaitable[None]]] = []
        self.starts: list[int | None] = []
        # What the servers say of the consumer: events not yet delivered, delivered unacknowledged.
        self.owed = SimpleNamespace(num_pending=0, num_ack_pending=0)
        self.checks = 0

    async def subscribe(self, subject: str, *, cb: Callable[[Any], Awaitable[None]],
                        stream: str, config: Any, manual_ack: bool) -> Any:
        self.deliver.append(cb)
        self.starts.append(config.opt_start_seq)
        self.owed = SimpleNamespace(num_pending=0, num_ack_pending=0)  # a new consumer's
        return SimpleNamespace(consumer_info=self.consumer_info, unsubscribe=AsyncMock(),
                               pending_msgs=0)

    async def consumer_info(self) -> Any:
        self.checks += 1
        return self.owed


class FakeBus:
    """An EventBus to the test's FakeJetStream, ready at once."""

    stream = "events"
    retry_interval = 0.0

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.js = FakeJetStream()
        self.last = 0  # the stream's last event, as its leader says

    def subject(self, source_service: str, event_type: str) -> str:
        return f"events.{source_service}.{event_type}"

    async def last_sequence(self, subject: str) -> int:
        return self.last


def delivery(stream_sequence: int, consumer_sequence: int) -> Any:
    """A delivered event, as nats-py hands it over: the message with text m<stream sequence>."""
    sequence = SimpleNamespace(stream=stream_sequence, consumer=consumer_sequence)
    body = {"uuid": f"u{stream_sequence}", "msg": f"m{stream_sequence}"}
    return SimpleNamespace(metadata=SimpleNamespace(sequence=sequence), headers={},
                           data=json.dumps(body).encode(), ack=AsyncMock(), nak=AsyncMock(),
                           term=AsyncMock())


@contextlib.asynccontextmanager
async def consuming(keeper: Keeper, check_interval: float) -> AsyncIterator[tuple[FakeBus, EventConsumer]]:
    """``keeper``'s handler consuming from a FakeBus, once its first subscription is made."""
    bus = FakeBus()
    consumer = EventConsumer(bus, "keeper", event_handlers(type(keeper)),  # type: ignore[arg-type]
                             redelivery_delay=0.0, check_interval=check_interval)
    consumer.start(keeper)
    try:
        await wait_for(lambda: len(bus.js.deliver) == 1)
        yield bus, consumer
    finally:
        await consumer.aclose()


async def test_a_lost_delivery_starts_the_broadcast_subscription_again_from_it() -> None:
    """Deliveries are numbered by the consumer: when one never comes (its server went down),
    the events after it are left alone and a new subscription starts from the first event not
    handled, so none is skipped and the order holds."""
    keeper = Keeper()
    async with consuming(keeper, check_interval=3600.0) as (bus, consumer):
        first = bus.js.deliver[0]
        await first(delivery(1, 1))
        await first(delivery(2, 2))
        await first(delivery(4, 4))  # the delivery of event 3 was lost
        await first(delivery(5, 5))
        await wait_for(lambda: len(bus.js.deliver) == 2)
        assert bus.js.starts == [1, 3]
        for consumer_sequence, stream_sequence in enumerate((3, 4, 5), start=1):
            await bus.js.deliver[1](delivery(stream_sequence, consumer_sequence))
        assert list(keeper.kept.values()) == ["m1", "m2", "m3", "m4", "m5"]
        assert consumer.tally == {("keep", "handled"): 5}


@pytest.mark.parametrize("owing", ["consumer", "stream"])
async def test_a_broadcast_subscription_whose_deliveries_stall_starts_again(owing: str) -> None:
    """Event 3 is owed, and no delivery comes for a whole check interval: a new subscription
    starts from the first event not handled. Owed by the consumer (delivered, never
    acknowledged: lost with nothing after it to show the gap), or by the stream (its leader
    holds it, the consumer's server is behind)."""
    keeper = Keeper()
    async with consuming(keeper, check_interval=0.0) as (bus, _):
        await bus.js.deliver[0](delivery(1, 1))
        await bus.js.deliver[0](delivery(2, 2))
        checks = bus.js.checks
        await wait_for(lambda: bus.js.checks > checks + 2)  # owing nothing, it is left alone
        assert bus.js.starts == [1]
        if owing == "consumer":
            bus.js.owed.num_ack_pending = 1  # event 3 went out and was lost
        else:
            bus.last = 3
        await wait_for(lambda: len(bus.js.deliver) >= 2)
        bus.last = 0  # the new subscription is owed nothing more (it may have started twice)
        assert (bus.js.starts[0], set(bus.js.starts[1:])) == (1, {3})
        await bus.js.deliver[-1](delivery(3, 1))
        assert list(keeper.kept.values()) == ["m1", "m2", "m3"]


class SlowKeeper(Keeper):
    """Keeps each message once it is let go on."""

    def __init__(self) -> None:
        super().__init__()
        self.go_on = asyncio.Event()

    @event_handler("front", "said", handler_type=BROADCAST)
    async def keep(self, payload: dict[str, Any]) -> None:
        await self.go_on.wait()
        self.kept.setdefault(payload["uuid"], payload["msg"])


async def test_a_slow_handler_is_no_stall() -> None:
    """While the handler works on an event the servers still count it unacknowledged; however long
    it takes, the subscription is kept."""
    keeper = SlowKeeper()
    async with consuming(keeper, check_interval=0.0) as (bus, _):
        bus.js.owed.num_ack_pending = 1
        handling = asyncio.create_task(bus.js.deliver[0](delivery(1, 1)))
        checks = bus.js.checks
        await wait_for(lambda: bus.js.checks > checks + 5)
        assert bus.js.starts == [1]
        keeper.go_on.set()
        await handling
        assert keeper.kept == {"u1": "m1"}


class Stuck:
    """What nats-py can be at shutdown with its servers gone: a wait that swallows cancellation
    until it is released."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.is_closed = False

    async def close(self) -> None:
        while not self.released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.released.wait()


async def _close_both(consumer: EventConsumer, bus: EventBus) -> None:
    await consumer.aclose(timeout=0)
    await bus.aclose(timeout=0)


async def test_closing_is_bounded_even_when_nats_py_swallows_the_cancellation(
        restore_logging: None) -> None:
    """The bus and the consumer stop within their timeout (here none) and say so, whatever
    nats-py does with the cancellation: a process stops within its shutdown grace."""
    out = io.StringIO()
    configure_logging("messages", "json", stream=out)
    stuck = Stuck()
    bus = EventBus(["nats://127.0.0.1:1"], "stopping")
    bus._nc = stuck  # type: ignore[assignment]
    consumer = EventConsumer(bus, "messages", event_handlers(Keeper))
    consumer._tasks = [asyncio.create_task(stuck.close())]
    await asyncio.sleep(0)  # the task starts waiting
    closing = asyncio.create_task(_close_both(consumer, bus))
    _, late = await asyncio.wait({closing}, timeout=5)  # a bound for the test, never reached
    stuck.released.set()  # whatever happened, nothing is left waiting after the test
    await asyncio.gather(closing, *consumer._tasks)
    assert not late
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["event consumers not stopped in time, leaving them",
                      "NATS connection not closed in time, leaving it"]


async def test_the_test_helpers_call_handlers_and_record_dispatches_without_a_broker() -> None:
    keeper = Keeper()
    assert await deliver(keeper, "front", "said", {"uuid": "u1", "msg": "hi"}) == 1
    assert await deliver(keeper, "front", "other", {"uuid": "u2", "msg": "no"}) == 0
    assert keeper.kept == {"u1": "hi"}
    dispatch = RecordingDispatcher()
    await dispatch("said", {"uuid": "u1"}, event_id="u1")
    assert dispatch.events == [("said", {"uuid": "u1"}, "u1")]
    dispatch.fail_with = ServiceUnavailable("events", "down")
    with pytest.raises(ServiceUnavailable):
        await dispatch("said", {}, event_id="u2")


def test_handler_types_are_checked_and_default_to_service_pool() -> None:
    assert [(h.method, h.handler_type) for h in event_handlers(Worker)] == [("work", SERVICE_POOL)]
    with pytest.raises(ValueError, match="handler_type"):
        event_handler("front", "said", handler_type="everyone")
