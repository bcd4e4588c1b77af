"""The server side of RPC over HTTP: turns a service object into an aiohttp app.

::

    POST /rpc/<method>   body: JSON object of keyword arguments
      200 {"result": <value>}
      4xx/5xx {"error": {"type": "<ErrorName>", "message": "...", "args": [...]}}
              (a declared error adds "path": "<module.ErrorName>", the key it is re-raised by)
    POST /rpc            body: [{"method": "<name>", "kwargs": {...}, "correlation_id": "..."}, ...]
      200 [{"result": <value>} | {"error": {..., "status": <4xx/5xx>}}, ...]   (in order)
    GET  /health         200 {"status": "ok", "service": "<name>"}              (liveness)
    GET  /ready          200 {"status": "ready", "service": "<name>"}           (readiness)
                         503 {"status": "unavailable", "service": ..., "reason": ...}

A method that raises ``ServiceUnavailable`` (a store it needs is down) is
answered 503 with ``Retry-After``: transient, so the caller may retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from .access import access_log_middleware
from .correlation import VALID_ID, correlation_middleware
from .errors import ExpectedError, InvalidArgument, ServiceUnavailable, error_path
from .rpc import dispatch, entrypoints
from .web import BadRequest, Handler, json_response, read_json, retry_after_header

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
    except ServiceUnavailable as exc:
        # Whoever raised it logged the outage; the client gets the reason, not the detail.
        return json_response(error_body(ServiceUnavailable.__name__, unavailable_reason(exc)),
                             status=503, headers=retry_after_header(exc.retry_after))
    except Exception:
        log.exception("rpc handler failed", path=request.path)
        return json_response(error_body("InternalError", "internal error"), status=500)


def unavailable_reason(exc: ServiceUnavailable) -> str:
    """What a client is told about an unavailable dependency: its name and the kind of failure."""
    return f"{exc.service} unavailable: {exc.reason}"


Readiness = Callable[[], Awaitable[None]]


def _declared_error(exc: ExpectedError) -> dict[str, Any]:
    return error_body(type(exc).__name__, str(exc), list(exc.args), error_path(type(exc)))


def _item_error(body: dict[str, Any], status: int) -> dict[str, Any]:
    """A batch item's error: the error body, with the status a call on its own would have had."""
    body["error"]["status"] = status
    return body


def rpc_app(service: Any, *, max_body_bytes: int = 64 * 1024, max_batch_calls: int = 64,
            max_batch_bytes: int = 1 << 20, ready: Readiness | None = None) -> web.Application:
    """An aiohttp app that exposes ``service``'s ``@rpc`` methods, batches of them, a liveness and
    a readiness check.

    A single call's body is at most ``max_body_bytes``; a batch, at most
    ``max_batch_calls`` calls in ``max_batch_bytes``. ``ready`` raises
    ``ServiceUnavailable`` when the service cannot serve calls (its store is
    unreachable); without it, a live service is ready.
    """
    table = entrypoints(type(service))
    name = getattr(service, "name", type(service).__name__)

    async def call(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        kwargs = await read_json(request, require_content_type=True)
        if len(await request.read()) > max_body_bytes:  # the app's limit is the batches' one
            raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes,
                                                actual_size=len(await request.read()))
        try:
            result = await dispatch(service, method, kwargs, table)
        except ExpectedError as exc:
            return json_response(_declared_error(exc), status=exc.status)
        return json_response({"result": result})

    async def batch(request: web.Request) -> web.Response:
        """Each call in order, each with its own correlation ID and its own result or error.

        A transient failure (a store that is down) fails the whole batch with
        503, so the caller retries it whole; logging deduplicates what was stored.
        """
        calls = await read_json(request, require_content_type=True)
        if not isinstance(calls, list) or not 0 < len(calls) <= max_batch_calls:
            raise BadRequest(400, f"a batch is a JSON array of 1 to {max_batch_calls} calls")
        replies = []
        for item in calls:
            if not (isinstance(item, dict) and isinstance(item.get("method"), str)):
                replies.append(_item_error(error_body(
                    InvalidArgument.__name__, 'each call must be {"method": ..., "kwargs": {...}}'), 400))
                continue
            cid = item.get("correlation_id")
            context = {"correlation_id": cid} if isinstance(cid, str) and VALID_ID.fullmatch(cid) else {}
            with structlog.contextvars.bound_contextvars(**context):
                try:
                    replies.append({"result": await dispatch(service, item["method"],
                                                             item.get("kwargs", {}), table)})
                except ExpectedError as exc:
                    replies.append(_item_error(_declared_error(exc), exc.status))
                except ServiceUnavailable:
                    raise
                except Exception:
                    log.exception("rpc batch item failed", method=item["method"])
                    replies.append(_item_error(error_body("InternalError", "internal error"), 500))
        return json_response(replies)

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok", "service": name})

    async def readiness(request: web.Request) -> web.Response:
        if ready is not None:
            try:
                await ready()
            except ServiceUnavailable as exc:
                return json_response({"status": "unavailable", "service": name,
                                      "reason": unavailable_reason(exc)},
                                     status=503, headers=retry_after_header(exc.retry_after))
        return json_response({"status": "ready", "service": name})

    app = web.Application(client_max_size=max(max_body_bytes, max_batch_bytes),
                          middlewares=[correlation_middleware, access_log_middleware, rpc_errors])
    app[SERVICE_KEY] = service
    app.router.add_post("/rpc/{method}", call)
    app.router.add_post("/rpc", batch)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    return app
