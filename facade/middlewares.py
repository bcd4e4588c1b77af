"""Every failure the facade answers becomes ``{"status": "failure", "message": ...}``."""

from __future__ import annotations

import structlog
from aiohttp import web

from resilience.web import BadRequest, Handler, json_response

log = structlog.get_logger("facade")


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
    if exc.status == 413:
        return f"request body too large: {exc.text}"
    return exc.reason


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
