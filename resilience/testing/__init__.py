"""Test helpers for services built on ``resilience``, shipped so others can test against them.

- ``worker_factory``: build a service with fake dependencies (as nameko's does).
- ``call_entrypoint``: call an ``@rpc`` method the way the HTTP server would, without a network.
- ``FakeClock``: a monotonic clock and ``sleep`` that advance only when told to.
- ``faults.FaultProxy``: an HTTP proxy that refuses, delays, fails, drops or swallows replies.
- ``events``: ``deliver`` an event to a service's handlers, and a ``RecordingDispatcher``,
  both without a broker.
- ``redis_server.RedisServer``: a real redis-server on a free port, in a folder of its own.
- ``nats_server.NatsCluster``: real nats-server processes with JetStream, one or a cluster.
- ``processes``: a free port, and waiting until a started service answers its health check.
"""

from __future__ import annotations

from typing import Any, TypeVar
from unittest.mock import AsyncMock

from resilience.rpc.service import build_service, dependencies, dispatch

S = TypeVar("S")


def worker_factory(cls: type[S], **fakes: Any) -> S:
    """Instantiate ``cls`` with ``fakes`` for its dependencies.

    A dependency not given is built by its factory if it has one, else
    replaced by an ``AsyncMock`` (a proxy to another service, typically).
    """
    for name, dep in dependencies(cls).items():
        if name not in fakes and dep.factory is None:
            fakes[name] = AsyncMock(name=f"{cls.__name__}.{name}")
    return build_service(cls, **fakes)


async def call_entrypoint(service: object, method: str, **kwargs: Any) -> Any:
    """Call ``service.method(**kwargs)`` with the RPC server's checks and error rules."""
    return await dispatch(service, method, kwargs)


class FakeClock:
    """A monotonic clock that moves only when ``advance`` or ``sleep`` is called."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep and advance the clock instead of waiting."""
        self.sleeps.append(seconds)
        self.now += seconds
