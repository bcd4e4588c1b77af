"""The facade's middlewares: every failure as ``{"status": "failure", "message": ...}``, and
load shedding."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from resilience import BadRequest, Handler, LoopLag, get_logger, json_response

log = get_logger("facade")

#: What a shed request is told to wait: the queue it met drains within a retry deadline.
SHED_RETRY_AFTER = 1
#: Paths answered even when shedding, so a supervisor does not take overload for death.
UNSHED_PATHS = frozenset({"/health", "/metrics"})


def failure(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The facade's error body."""
    return json_response({"status": "failure", "message": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP errors, bad input and unexpected failures into JSON; never a traceback."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return failure(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return failure(exc.status, _describe(request, exc), _kept_headers(exc))
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return failure(500, "internal error")


def _describe(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    return exc.reason


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}


def shed_load(limit: int, on_shed: Callable[[], object], lag: LoopLag) -> Middleware:
    """A middleware that answers 503 with Retry-After at once past ``limit`` requests in flight,
    or while the event loop has been overloaded (``lag``, see ``resilience/runtime/lag.py``).

    Past the limit each extra request would only slow every other one (and
    keep its memory) until all time out; a fast 503 tells the client to come
    back while the admitted ones finish. On a loop that has fallen behind,
    every request waits before it even starts, however few are in flight.
    Place it after ``body_deadline``: a request counts from the moment its
    body is in, so clients that stall their bodies hold no slot and cannot
    starve normal requests of them (the body deadline bounds them instead).
    ``on_shed`` is called for each request shed (the metrics count them).
    """
    in_flight = 0

    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if request.path not in UNSHED_PATHS:
            if in_flight >= limit:
                return _shed(on_shed, f"at its limit of {limit} requests in flight")
            if lag.overloaded:
                return _shed(on_shed, f"{lag.late:.2f} s behind (over {lag.target:g} s "
                                      f"for {lag.window:g} s)")
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return admit


def _shed(on_shed: Callable[[], object], reason: str) -> web.Response:
    on_shed()
    return failure(503, f"the facade is {reason}; retry in {SHED_RETRY_AFTER} s",
                   {"Retry-After": str(SHED_RETRY_AFTER)})
