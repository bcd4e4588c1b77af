"""The facade's app factory and process entry point."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from resilience import CallPolicy, RpcProxy, Settings, build_service
from resilience.auth import signer_for
from resilience.breaker import Clock
from resilience.contract import KeyUuids
from resilience.correlation import correlation_middleware
from resilience.runner import run_main
from resilience.web import CLOSE_ON_UNREAD_BODY, body_deadline

from .keys import SERVICE, SETTINGS
from .middlewares import failure, json_errors, shed_load
from .routes import setup_routes
from .service import FacadeService


def create_app(settings: Settings, clock: Clock = time.monotonic) -> web.Application:
    """The facade: validates, mints UUIDs and fans out to logging and messages.

    ``clock`` drives the retry deadlines and circuit breakers (a test passes a fake one).
    """
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[correlation_middleware, json_errors,
                                       body_deadline(settings.body_read_timeout, failure),
                                       shed_load(settings.max_in_flight)],
                          handler_args=CLOSE_ON_UNREAD_BODY)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(functools.partial(downstream_clients, clock=clock))
    setup_routes(app)
    return app


async def downstream_clients(app: web.Application, clock: Clock) -> AsyncIterator[None]:
    """One keep-alive ClientSession for the app's lifetime, and a proxy per downstream service."""
    settings = app[SETTINGS]
    # No retries inside aiohttp and no limit below the retry policy's own.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    signer = signer_for(settings)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        app[SERVICE] = build_service(
            FacadeService,
            logging_rpc=RpcProxy(session, settings.logging_url, "logging",
                                 CallPolicy.from_settings("logging", settings, clock=clock), signer),
            # GET answers without messages when it is down: one attempt, no retry.
            messages_rpc=RpcProxy(session, settings.messages_url, "messages",
                                  CallPolicy.from_settings("messages", settings, attempts=1,
                                                           clock=clock), signer),
            key_uuids=KeyUuids.from_settings(settings),
        )
        yield


def main() -> None:
    """``facade-service``: serve on ``FACADE_PORT`` (default 5000)."""
    run_main("facade", create_app, lambda s: s.facade_port)
