"""The server side of RPC over HTTP: turns a service object into an aiohttp app.

::

    POST /rpc/<method>   body: JSON object of keyword arguments
      200 {"result": <value>}
      4xx/5xx {"error": {"type": "<ErrorName>", "message": "...", "args": [...]}}
              (a declared error adds "path": "<module.ErrorName>", the key it is re-raised by)
    GET  /health         200 {"status": "ok", "service": "<name>"}

Every body must arrive within ``BODY_READ_TIMEOUT`` (408 past it) and fit
``MAX_BODY_BYTES`` plus the envelope a caller wraps around a message (413
past it); with ``RPC_SECRET`` set every path but ``/health`` needs a good
signature (401 without one; see ``auth.py``).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from . import auth
from .access import access_log_middleware
from .correlation import correlation_middleware
from .errors import ExpectedError, InvalidArgument, error_path
from .rpc import dispatch, entrypoints
from .settings import Settings
from .web import CLOSE_ON_UNREAD_BODY, BadRequest, Handler, body_deadline, json_response, read_json

log = structlog.get_logger("resilience.server")

SERVICE_KEY = web.AppKey("service", object)
#: Bytes an RPC body may hold beyond ``MAX_BODY_BYTES``: the arguments a caller adds around a
#: message (``"uuid"`` and its value), so a message the facade accepted always fits.
ENVELOPE_BYTES = 64


#: How every 200 reply starts: orjson writes ``{"result": value}`` as exactly this, the
#: value's JSON and ``}``, which lets a caller take the value's bytes without decoding them.
RESULT_START = b'{"result":'


def result_bytes(reply: bytes) -> memoryview | None:
    """The JSON bytes of the ``result`` in a 200 reply body, or None if it is not one."""
    if reply.startswith(RESULT_START) and reply.endswith(b"}"):
        return memoryview(reply)[len(RESULT_START):-1]
    return None


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
        return refusal(exc.status, exc.message)
    except Exception:
        log.exception("rpc handler failed", path=request.path)
        return json_response(error_body("InternalError", "internal error"), status=500)


#: The error type of a refused request, by status; any other refusal is an InvalidArgument.
_REFUSALS = {408: "RequestTimeout", 413: "RequestEntityTooLarge"}


def refusal(status: int, message: str) -> web.Response:
    """The error reply to a request refused before any method ran (a bad or late body)."""
    return json_response(error_body(_REFUSALS.get(status, InvalidArgument.__name__), message),
                         status=status)


def unauthorized(reason: str) -> web.Response:
    """The 401 for a request without a good signature."""
    return json_response(error_body("Unauthorized", reason), status=401,
                         headers={"WWW-Authenticate": auth.SCHEME})


def rpc_app(service: Any, settings: Settings | None = None) -> web.Application:
    """An aiohttp app that exposes ``service``'s ``@rpc`` methods and a health check.

    Raises SettingsError when ``settings`` bind beyond loopback without ``RPC_SECRET``.
    """
    settings = Settings() if settings is None else settings
    verifier = auth.verifier_for(settings)
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

    middlewares = [correlation_middleware, access_log_middleware, rpc_errors,
                   body_deadline(settings.body_read_timeout, refusal)]
    if verifier is not None:
        middlewares.append(auth.require_signature(verifier, unauthorized))
    app = web.Application(client_max_size=settings.max_body_bytes + ENVELOPE_BYTES,
                          middlewares=middlewares, handler_args=CLOSE_ON_UNREAD_BODY)
    app[SERVICE_KEY] = service
    app.router.add_post("/rpc/{method}", call)
    app.router.add_get("/health", health)
    return app
