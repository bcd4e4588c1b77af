"""The access log: one line per request, written once it is answered (or cancelled).

``note(key, value)`` adds a field to the current request's line from anywhere
that handles it, child tasks included (``asyncio.gather`` copies the context,
not the notes: the copy refers to the same notes). The app's ``OBSERVERS``
hear of every answered request too (the metrics count them there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

from aiohttp import web

from resilience.observability.logs import get_logger
from resilience.runtime.web import Handler

log = get_logger("resilience.observability.access")

#: Called with the request, its status (None if cancelled) and the seconds it took.
Observer = Callable[[web.Request, int | None, float], None]
OBSERVERS = web.AppKey("access_observers", list[Observer])

_notes: ContextVar[dict[str, object] | None] = ContextVar("access_notes", default=None)


def note(key: str, value: object) -> None:
    """Put ``key=value`` on the access line of the request being handled (nothing outside one)."""
    notes = _notes.get()
    if notes is not None:
        notes[key] = value


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log method, path, status and duration of every request; a cancelled one as such."""
    started = time.perf_counter()
    status: int | None = None  # stays None if the handler is cancelled: nobody was answered
    notes: dict[str, object] = {}
    token = _notes.set(notes)
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
        _notes.reset(token)
        seconds = time.perf_counter() - started
        for observe in request.app.get(OBSERVERS, ()):
            observe(request, status, seconds)
        log.info("request handled" if status is not None else "request cancelled",
                 method=request.method, path=request.path, status=status,
                 duration_ms=round(seconds * 1000, 3), **notes)
