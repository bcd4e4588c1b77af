"""The server side of RPC over HTTP: turns a service object into an aiohttp app.

::

    POST /rpc/<method>   body: JSON object of keyword arguments
      200 {"result": <value>}
      4xx/5xx {"error": {"type": "<ErrorName>", "message": "...", "args": [...]}}
              (a declared error adds "path": "<module.ErrorName>", the key it is re-raised by)
    GET  /health         200 {"status": "ok", "service": "<name>"}
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from .access import access_log_middleware
from .correlation import correlation_middleware
from .errors import ExpectedError, InvalidArgument, error_path
from .rpc import dispatch, entrypoints
from .web import BadRequest, Handler, json_response, read_json

log = structlog.get_logger("resilience.server")

SERVICE_KEY = web.AppKey("service", object)


def error_body(error_type: str, message: str, args: list[Any] | None = None,
               path: str | None = None) -> dict[str, Any]:
    """The wire form of an error; ``path`` names a registered type the caller may re-raise."""
    error: dict[str, Any] = {"type": error_type, "message": message, "args": args or [message]}
    if path is not None:
        error["path"] = path
    return {"error": error}


@web.middleware
async def rpc_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure, ours or aiohttp's (404, 405, 413), as an error body; never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(error_body(type(exc).__name__.removeprefix("HTTP"), exc.reason),
                             status=exc.status)
    except BadRequest as exc:
        return json_response(error_body(InvalidArgument.__name__, exc.message), status=exc.status)
    except Exception:
        log.exception("rpc handler failed", path=request.path)
        return json_response(error_body("InternalError", "internal error"), status=500)


def rpc_app(service: Any, *, max_body_bytes: int = 64 * 1024) -> web.Application:
    """An aiohttp app that exposes ``service``'s ``@rpc`` methods and a health check."""
    table = entrypoints(type(service))
    name = getattr(service, "name", type(service).__name__)

    async def call(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        kwargs = await read_json(request, require_content_type=True)
        try:
            result = await dispatch(service, method, kwargs, table)
        except ExpectedError as exc:
            return json_response(error_body(type(exc).__name__, str(exc), list(exc.args),
                                            error_path(type(exc))), status=exc.status)
        return json_response({"result": result})

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok", "service": name})

    app = web.Application(client_max_size=max_body_bytes,
                          middlewares=[correlation_middleware, access_log_middleware, rpc_errors])
    app[SERVICE_KEY] = service
    app.router.add_post("/rpc/{method}", call)
    app.router.add_get("/health", health)
    return app
