"""The messages service's app factory and process entry point."""

from __future__ import annotations

from aiohttp import web

from resilience import build_service, rpc_app
from resilience.runtime.runner import run_main

from .service import MessagesService
from .settings import MessagesSettings


def create_app(settings: MessagesSettings) -> web.Application:
    """The messages service as an RPC app."""
    return rpc_app(build_service(MessagesService), settings)


def main() -> None:
    """``messages-service``: serve on ``MESSAGES_PORT`` (default 5002)."""
    run_main("messages", MessagesSettings, create_app, lambda s: s.messages_port)
