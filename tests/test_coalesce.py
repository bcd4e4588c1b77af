"""Coalescing on its own: one request per key in flight, the calls that arrive meanwhile leave next.

No network and no sleeps: ``send`` is a fake whose requests the test holds open and releases.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from resilience import Overloaded
from resilience.rpc.batching import Coalescer, Pending


class FakeWire:
    """Records each request's payloads; holds every request open until ``release()``."""

    def __init__(self) -> None:
        self.requests: list[list[object]] = []
        self.gate = asyncio.Event()
        self.contexts: list[object] = []

    async def send(self, key: object, items: list[Pending]) -> None:
        self.requests.append([item.payload for item in items])
        self.contexts.append(CALLER.get())
        await self.gate.wait()
        for item in items:
            if item.payload == "bad":
                item.fail(ValueError(f"{item.payload} refused"))
            else:
                item.resolve(f"{item.payload} stored")

    def release(self) -> None:
        self.gate.set()


CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


def coalescer(wire: FakeWire, **kwargs: object) -> Coalescer[str]:
    options = {"max_pending": 100, "refuse": lambda: Overloaded("logging", "full"), **kwargs}
    return Coalescer(wire.send, **options)  # type: ignore[arg-type]


async def until(condition: object) -> None:
    """Let the loop run until ``condition()`` holds (no timers: a bounded number of turns)."""
    for _ in range(100):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_lone_call_goes_out_at_once_alone() -> None:
    """With nothing in flight, a call is sent on the first turn of the loop, by itself."""
    wire = FakeWire()
    wire.release()
    calls = coalescer(wire)
    task = asyncio.create_task(calls.submit("log", "a"))
    await asyncio.sleep(0)  # one turn: the call is already on the wire
    assert wire.requests == [["a"]]
    assert await task == "a stored"
    assert (calls.requests, calls.calls, calls.pending) == (1, 1, 0)


async def test_calls_made_while_one_is_in_flight_leave_together_next() -> None:
    """Five calls queued behind a request in flight go as one second request, in arrival order."""
    wire = FakeWire()
    calls = coalescer(wire)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    rest = [asyncio.create_task(calls.submit("log", text)) for text in "bcdef"]
    await until(lambda: calls.pending == 6)
    assert wire.requests == [["a"]]  # none of them joined the request already on the wire
    wire.release()
    assert await asyncio.gather(first, *rest) == [f"{t} stored" for t in "abcdef"]
    assert wire.requests == [["a"], ["b", "c", "d", "e", "f"]]


async def test_each_caller_gets_its_own_result_or_error() -> None:
    """An item's error goes to its own caller only; the others in the batch get their results."""
    wire = FakeWire()
    calls = coalescer(wire)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    good, bad = asyncio.create_task(calls.submit("log", "b")), asyncio.create_task(calls.submit("log", "bad"))
    await until(lambda: calls.pending == 3)
    wire.release()
    assert await first == "a stored"
    assert await good == "b stored"
    with pytest.raises(ValueError, match="bad refused"):
        await bad


async def test_batches_are_split_at_max_items() -> None:
    """Ten queued calls with at most four per request leave as 4, 4 and 2."""
    wire = FakeWire()
    calls = coalescer(wire, max_items=4)
    first = asyncio.create_task(calls.submit("log", "x"))
    await until(lambda: wire.requests)
    queued = [asyncio.create_task(calls.submit("log", str(i))) for i in range(10)]
    await until(lambda: calls.pending == 11)
    wire.release()
    await asyncio.gather(first, *queued)
    assert [len(request) for request in wire.requests] == [1, 4, 4, 2]


async def test_keys_do_not_wait_for_each_other() -> None:
    """A request in flight for one key does not hold calls for another."""
    wire = FakeWire()
    calls = coalescer(wire)
    tasks = [asyncio.create_task(calls.submit(key, key)) for key in ("messages:0", "messages:5")]
    await until(lambda: len(wire.requests) == 2)
    wire.release()
    await asyncio.gather(*tasks)


async def test_past_max_pending_a_call_is_refused_at_once() -> None:
    """With max_pending calls waiting, the next one raises the refusal without being queued."""
    wire = FakeWire()
    calls = coalescer(wire, max_pending=3)
    waiting = [asyncio.create_task(calls.submit("log", str(i))) for i in range(3)]
    await until(lambda: calls.pending == 3)
    with pytest.raises(Overloaded, match="full"):
        await calls.submit("log", "one too many")
    wire.release()
    await asyncio.gather(*waiting)
    assert "one too many" not in [payload for request in wire.requests for payload in request]


async def test_a_queued_call_waits_no_longer_than_its_timeout_and_is_then_not_sent() -> None:
    """A call queued past its timeout raises TimeoutError and never goes out later."""
    wire = FakeWire()
    calls = coalescer(wire)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    with pytest.raises(TimeoutError):
        await calls.submit("log", "late", timeout=0)
    on_time = asyncio.create_task(calls.submit("log", "b"))
    await until(lambda: calls.pending == 2)
    wire.release()
    await asyncio.gather(first, on_time)
    assert wire.requests == [["a"], ["b"]]


async def test_a_cancelled_caller_is_not_sent() -> None:
    """A caller cancelled while queued is dropped from the next request."""
    wire = FakeWire()
    calls = coalescer(wire)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    gone, kept = (asyncio.create_task(calls.submit("log", text)) for text in ("gone", "kept"))
    await until(lambda: calls.pending == 3)
    gone.cancel()
    wire.release()
    await asyncio.gather(first, kept)
    assert wire.requests == [["a"], ["kept"]]


async def test_the_next_request_does_not_carry_the_first_callers_context() -> None:
    """Queued calls are sent from a fresh context: nothing the caller whose request ended had
    bound (its correlation ID in the logs) rides along."""
    wire = FakeWire()
    calls = coalescer(wire)
    CALLER.set("first caller")
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    second = asyncio.create_task(calls.submit("log", "b"))
    await until(lambda: calls.pending == 2)
    wire.release()
    await asyncio.gather(first, second)
    assert wire.contexts == ["first caller", "none"]
    await calls.aclose()


async def test_collect_turn_sends_the_calls_of_one_turn_as_one_request() -> None:
    """With collect_turn, calls made together by one gather leave as one request, not 1 then 4."""
    wire = FakeWire()
    wire.release()
    calls = coalescer(wire, collect_turn=True)
    assert await asyncio.gather(*(calls.submit("log", t) for t in "abcde")) == [
        f"{t} stored" for t in "abcde"]
    assert wire.requests == [["a", "b", "c", "d", "e"]]


async def test_collect_turn_keeps_a_lone_call_alone_and_max_items() -> None:
    """A lone call still leaves by itself within a turn or two; six calls at once with at most
    four per request leave as 4 then 2."""
    wire = FakeWire()
    wire.release()
    calls = coalescer(wire, collect_turn=True, max_items=4)
    task = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    assert wire.requests == [["a"]]
    await task
    await asyncio.gather(*(calls.submit("log", str(i)) for i in range(6)))
    assert [len(request) for request in wire.requests] == [1, 4, 2]


async def test_collect_turn_leaves_out_a_first_caller_cancelled_in_its_turn() -> None:
    """The first caller cancelled while it lets the turn run is not sent; the others are."""
    wire = FakeWire()
    wire.release()
    calls = coalescer(wire, collect_turn=True)
    first = asyncio.create_task(calls.submit("log", "gone"))
    await asyncio.sleep(0)  # it is waiting for the rest of the turn
    others = [asyncio.create_task(calls.submit("log", t)) for t in "bc"]
    first.cancel()
    assert await asyncio.gather(*others) == ["b stored", "c stored"]
    assert wire.requests == [["b", "c"]]
    assert calls.pending == 0


async def test_a_shorter_timeout_queued_behind_a_longer_one_still_expires_first() -> None:
    """The queue's one timer moves to an earlier deadline: a call with no time to wait, queued
    after one with a minute, times out while the other stays queued and is sent."""
    wire = FakeWire()
    calls = coalescer(wire)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    patient = asyncio.create_task(calls.submit("log", "patient", timeout=60))
    with pytest.raises(TimeoutError):
        await calls.submit("log", "hasty", timeout=0)
    assert not patient.done()
    wire.release()
    assert await asyncio.gather(first, patient) == ["a stored", "patient stored"]
    assert wire.requests == [["a"], ["patient"]]


async def test_calls_behind_a_late_request_leave_beside_it() -> None:
    """While the request in flight is late, a new call leaves at once as a second request."""
    wire = FakeWire()
    calls = coalescer(wire, max_in_flight=2, late_after=lambda key: 0.0)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    second = asyncio.create_task(calls.submit("log", "b"))
    await until(lambda: len(wire.requests) == 2)
    assert wire.requests == [["a"], ["b"]]
    wire.release()
    assert await asyncio.gather(first, second) == ["a stored", "b stored"]


async def test_late_requests_are_bounded_by_max_in_flight() -> None:
    """With two requests late in flight and max_in_flight=2, the next calls queue and leave together."""
    wire = FakeWire()
    calls = coalescer(wire, max_in_flight=2, late_after=lambda key: 0.0)
    tasks = [asyncio.create_task(calls.submit("log", "a"))]
    await until(lambda: len(wire.requests) == 1)
    tasks.append(asyncio.create_task(calls.submit("log", "b")))
    await until(lambda: len(wire.requests) == 2)
    tasks += [asyncio.create_task(calls.submit("log", text)) for text in "cd"]
    await until(lambda: calls.pending == 4)
    assert wire.requests == [["a"], ["b"]]
    wire.release()
    assert await asyncio.gather(*tasks) == [f"{t} stored" for t in "abcd"]
    assert wire.requests == [["a"], ["b"], ["c", "d"]]


async def test_a_request_on_time_keeps_the_others_queued() -> None:
    """A request not yet late holds the calls behind it for the next batch, as without lateness."""
    wire = FakeWire()
    calls = coalescer(wire, max_in_flight=8, late_after=lambda key: 3600.0)
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    rest = [asyncio.create_task(calls.submit("log", text)) for text in "bc"]
    await until(lambda: calls.pending == 3)
    assert wire.requests == [["a"]]
    wire.release()
    await asyncio.gather(first, *rest)
    assert wire.requests == [["a"], ["b", "c"]]


async def test_a_queue_leaves_when_the_request_ahead_turns_late() -> None:
    """A call queued behind a request on time leaves when the lane's timer finds it late."""
    wire = FakeWire()
    # Asked when "b" arrives (on time: it queues), when the timer is armed (due at once),
    # and when it fires (late).
    answers = iter([3600.0, 0.0, 0.0])
    calls = coalescer(wire, max_in_flight=2, late_after=lambda key: next(answers))
    first = asyncio.create_task(calls.submit("log", "a"))
    await until(lambda: wire.requests)
    queued = asyncio.create_task(calls.submit("log", "b"))
    await until(lambda: len(wire.requests) == 2)
    assert wire.requests == [["a"], ["b"]]
    wire.release()
    assert await asyncio.gather(first, queued) == ["a stored", "b stored"]
