"""The messages service's app factory and process entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from resilience import (
    CountsCollector,
    EventBus,
    EventConsumer,
    ServiceUnavailable,
    build_service,
    event_handlers,
    rpc_app,
    run_main,
)

from .service import MessagesService, StreamMessagesService
from .settings import MessagesSettings


def create_app(settings: MessagesSettings) -> web.Application:
    """The messages service as an RPC app: task 1's stub, or with ``NATS_URLS`` the stream's
    messages (``/ready`` once it has handled what the stream held when it started)."""
    if not settings.nats_servers():
        return rpc_app(build_service(MessagesService), settings)
    bus = EventBus.from_settings(settings, "messages")
    consumer = EventConsumer(bus, "messages", event_handlers(StreamMessagesService),
                             ack_wait=settings.events_ack_wait)
    service = build_service(StreamMessagesService, config=settings, events=consumer)

    async def ready() -> None:
        if not consumer.replayed():
            raise ServiceUnavailable("messages", "replaying the event stream", retry_after=1.0)

    collectors = [CountsCollector("events_handled", "Events delivered, by what became of them",
                                  "outcome", consumer.outcomes)]
    app = rpc_app(service, settings, ready=ready, collectors=collectors)

    async def consume(_: web.Application) -> AsyncIterator[None]:
        bus.start()
        consumer.start(service)
        yield
        await consumer.aclose()
        await bus.aclose()

    app.cleanup_ctx.append(consume)
    return app


def main() -> None:
    """``messages-service``: serve on ``MESSAGES_PORT`` (default 5002)."""
    run_main("messages", MessagesSettings, create_app, lambda s: s.messages_port)
