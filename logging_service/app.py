"""The logging service's app factory and process entry point."""

from __future__ import annotations

from aiohttp import web

from resilience import Settings, build_service, rpc_app
from resilience.runner import run_main

from .service import LoggingService


def create_app(settings: Settings) -> web.Application:
    """The logging service as an RPC app, with a fresh in-memory store."""
    service = build_service(LoggingService, config=settings)
    return rpc_app(service, settings)


def main() -> None:
    """``logging-service``: serve on ``LOGGING_PORT`` (default 5001)."""
    run_main("logging", create_app, lambda s: s.logging_port)
