"""The logging service's app factory and process entry point."""

from __future__ import annotations

import contextlib

from aiohttp import web

from resilience import CountsCollector, ServiceUnavailable, ValueCollector, build_service, rpc_app, run_main

from .contract import ENVELOPE_BYTES
from .service import LoggingService
from .settings import LoggingSettings
from .store import open_store


def create_app(settings: LoggingSettings) -> web.Application:
    """The logging service as an RPC app, on the store ``LOGGING_STORE`` names (fresh memory by default).

    ``/ready`` answers whether that store is reachable; the store's connections close with the app.
    """
    store = open_store(settings.logging_store)
    service = build_service(LoggingService, config=settings, store=store)
    size = [0]

    async def read_size() -> None:
        # The store down: /ready says so; the gauge keeps the last size read.
        with contextlib.suppress(ServiceUnavailable):
            size[0] = await store.count()

    collectors = [
        CountsCollector("logging_messages", "Messages logging was asked to store, by what it did",
                        "outcome", lambda: service.tally),
        ValueCollector("logging_store_messages", "Messages in the store", lambda: size[0]),
    ]
    app = rpc_app(service, settings, ready=store.ping, collectors=collectors, refresh=read_size,
                  envelope_bytes=ENVELOPE_BYTES)
    app.on_cleanup.append(lambda _: store.close())
    return app


def main() -> None:
    """``logging-service``: serve on ``LOGGING_PORT`` (default 5001)."""
    run_main("logging", LoggingSettings, create_app, lambda s: s.logging_port)
