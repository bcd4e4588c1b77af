"""The access log: one line per request, written once it is answered (or cancelled)."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from .web import Handler

log = structlog.get_logger("resilience.access")


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log method, path, status and duration of every request; a cancelled one as such."""
    started = time.perf_counter()
    status: int | None = None  # stays None if the handler is cancelled: nobody was answered
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        status = 500  # aiohttp answers it
        raise
    finally:
        log.info("request handled" if status is not None else "request cancelled",
                 method=request.method, path=request.path, status=status,
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))
