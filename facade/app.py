"""The facade's app factory and process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
from aiohttp import web
from prometheus_client import Counter

from facade.ids import KeyUuids
from resilience import (
    CLOSE_ON_UNREAD_BODY,
    Clock,
    EventBus,
    EventDispatcher,
    LoopLag,
    PolicyCollector,
    RpcProxy,
    access_log_middleware,
    body_deadline,
    build_service,
    correlation_middleware,
    downstream_policies,
    readiness_probe,
    reply_budget,
    run_main,
    setup_metrics,
    signer_for,
)

from .keys import LOOP_LAG, POLICIES, SERVICE, SETTINGS
from .middlewares import failure, json_errors, shed_load
from .routes import setup_routes
from .service import FacadeService
from .settings import FacadeSettings


def create_app(settings: FacadeSettings, clock: Clock = time.monotonic,
               loop_lag: LoopLag | None = None) -> web.Application:
    """The facade: validates, mints UUIDs and fans out to logging and messages.

    ``clock`` drives the retry deadlines and circuit breakers, ``loop_lag`` tells
    whether the event loop has fallen behind (a test passes its own of either).
    """
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[correlation_middleware, access_log_middleware, json_errors,
                                       body_deadline(settings.body_read_timeout, failure)],
                          handler_args=CLOSE_ON_UNREAD_BODY)
    registry = setup_metrics(app, [PolicyCollector(lambda: app.get(POLICIES, []))])
    shed = Counter("http_requests_shed", "Requests answered 503 at once: the facade had MAX_IN_FLIGHT "
                   "or its event loop was over MAX_LOOP_LAG behind", registry=registry)
    lag = app[LOOP_LAG] = LoopLag(settings.max_loop_lag) if loop_lag is None else loop_lag
    cut = Counter("http_replies_cut", "Replies whose client did not take them within "
                  "REPLY_SEND_TIMEOUT: the connection was cut", registry=registry)
    app.middlewares.append(shed_load(settings.max_in_flight, on_shed=shed.inc, lag=lag))
    # First of all: it writes the reply as the others finished it (their headers included).
    app.middlewares.insert(0, reply_budget(settings.max_reply_bytes, settings.reply_send_timeout,
                                           failure, on_cut=cut.inc))
    app.cleanup_ctx.append(measure_loop_lag)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(functools.partial(downstream_clients, clock=clock))
    setup_routes(app)
    return app


async def measure_loop_lag(app: web.Application) -> AsyncIterator[None]:
    """The loop-lag monitor, for the app's lifetime."""
    task = asyncio.create_task(app[LOOP_LAG].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def downstream_clients(app: web.Application, clock: Clock) -> AsyncIterator[None]:
    """One keep-alive ClientSession for the app's lifetime, and a proxy per downstream service."""
    settings = app[SETTINGS]
    # No retries inside aiohttp and no limit below the retry policy's own.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    signer = signer_for(settings)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        # Reads and writes to logging have a breaker each: a heavy read that times out
        # must not refuse writes.
        # Each logging replica has a breaker of its own.
        probe = functools.partial(readiness_probe, session, settings.breaker_probe_interval)
        logging_policies = downstream_policies("logging", settings.logging_replicas(), settings,
                                               ("write", "read"), clock=clock, probe=probe)
        # GET answers without messages when it is down: one attempt, no retry (with several
        # instances, a retry goes to another).
        messages_urls = settings.messages_replicas()
        messages_policies = downstream_policies("messages", messages_urls, settings, ("read",),
                                                attempts=None if len(messages_urls) > 1 else 1,
                                                clock=clock, probe=probe)
        # Writes are group-committed; reads with the same arguments share the next request.
        logging_rpc = RpcProxy(session, "logging", logging_policies["read"],
                               method_policies={"log": logging_policies["write"]}, signer=signer,
                               batched={"log"}, shared={"messages"},
                               max_batch_calls=settings.rpc_batch_max_calls,
                               max_batch_bytes=settings.rpc_batch_max_bytes,
                               lane_requests=settings.rpc_lane_requests)
        messages_rpc = RpcProxy(session, "messages", messages_policies["read"], signer=signer,
                                shared={"message", "messages"}, lane_requests=settings.rpc_lane_requests)
        dispatch = event_dispatcher(settings, clock)
        app[SERVICE] = build_service(FacadeService, logging_rpc=logging_rpc, messages_rpc=messages_rpc,
                                     key_uuids=KeyUuids.from_settings(settings), dispatch=dispatch)
        app[POLICIES] = [*logging_policies.values(), *messages_policies.values(),
                         *([dispatch.policy] if dispatch is not None else [])]
        yield
        await logging_rpc.aclose()
        await messages_rpc.aclose()
        if dispatch is not None:
            await dispatch.aclose()
            await dispatch.bus.aclose()


def event_dispatcher(settings: FacadeSettings, clock: Clock) -> EventDispatcher | None:
    """With ``NATS_URLS``: the facade's publisher, on a connection to the event stream.

    A publish is one message on a connection shared by every call, pipelined
    by NATS: the facade's own ``MAX_IN_FLIGHT`` bounds them, not the limit of
    an RPC downstream's requests.
    """
    if not settings.nats_servers():
        return None
    bus = EventBus.from_settings(settings, "facade")
    bus.start()
    publish = downstream_policies("events", bus.servers[:1],
                                  replace(settings, max_calls_in_flight=settings.max_in_flight),
                                  ("publish",), clock=clock, probe=lambda _server: bus.probe)
    return EventDispatcher(bus, "facade", publish["publish"])


def main() -> None:
    """``facade-service``: serve on ``FACADE_PORT`` (default 5000)."""
    run_main("facade", FacadeSettings, create_app, lambda s: s.facade_port)
