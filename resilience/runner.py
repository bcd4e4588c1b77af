"""Running a service process: settings, logs, the event loop, and a clean stop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import structlog
from aiohttp import web

from .logs import configure_logging
from .settings import Settings, SettingsError

log = structlog.get_logger("resilience.runner")


def run_main(name: str, create_app: Callable[[Settings], web.Application],
             port: Callable[[Settings], int]) -> None:
    """Entry point of a service process: serve ``create_app(settings)`` until SIGINT or SIGTERM.

    Bad configuration or a port already in use end the process with a
    one-line message and exit status 2 or 1, not a traceback.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.stderr.write(f"{name}: configuration error: {exc}\n")
        raise SystemExit(2) from None
    configure_logging(name, settings.log_format, settings.log_level)
    try:
        serve(create_app(settings), name=name, host=settings.host, port=port(settings),
              shutdown_timeout=settings.shutdown_timeout)
    except OSError as exc:
        log.error("cannot listen", host=settings.host, port=port(settings), error=str(exc))
        raise SystemExit(1) from None


def serve(app: web.Application, *, name: str, host: str, port: int,
          shutdown_timeout: float) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then let in-flight requests finish and stop.

    aiohttp waits up to ``shutdown_timeout`` for in-flight requests, then
    cancels their request bodies and waits up to as long again before closing
    the connections: twice the timeout must stay under honcho's 5 s grace
    before SIGKILL. (A facade request ends within ``retry_deadline`` anyway.)
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed everywhere but Windows
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    log.info("service starting", host=host, port=port)

    def listening(_banner: str) -> None:
        # aiohttp calls this once every site listens: then, and only then, the port is ours.
        log.info("service listening", host=host, port=port)

    web.run_app(app, host=host, port=port, shutdown_timeout=shutdown_timeout,
                access_log=None, print=listening, loop=loop)
    log.info("service stopped")
