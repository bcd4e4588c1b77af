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

Every body must arrive within ``BODY_READ_TIMEOUT`` (408 past it) and fit
``MAX_BODY_BYTES`` plus the service's ``envelope_bytes`` (413 past it);
with ``RPC_SECRET`` set every path but ``OPEN_PATHS`` (``/health``, ``/ready``,
``/metrics``) needs a good signature (401 without one; see ``signing.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.registry import Collector

from resilience.errors import ExpectedError, InvalidArgument, ServiceUnavailable, error_path
from resilience.observability.access import access_log_middleware
from resilience.observability.correlation import VALID_CORRELATION_ID, correlated, correlation_middleware
from resilience.observability.logs import get_logger
from resilience.observability.metrics import setup_metrics
from resilience.rpc import signing as auth
from resilience.rpc.service import dispatch, entrypoints
from resilience.runtime.web import (
    CLOSE_ON_UNREAD_BODY,
    BadRequest,
    Handler,
    body_deadline,
    json_response,
    read_json,
    retry_after_header,
)
from resilience.settings import ServerSettings

log = get_logger("resilience.rpc.server")
# A batch item without a valid correlation ID of its own logs under the batch request's.
_UNCHANGED = contextlib.nullcontext()


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


@dataclass(frozen=True)
class Endpoint:
    """What the handlers of one RPC app serve: the service, its methods and its limits."""

    service: Any
    name: str
    table: Mapping[str, Any]
    ready: Readiness | None
    max_body_bytes: int
    max_batch_calls: int


ENDPOINT = web.AppKey("rpc_endpoint", Endpoint)


async def call(request: web.Request) -> web.Response:
    """``POST /rpc/<method>``: one call, its result or its declared error."""
    endpoint = request.app[ENDPOINT]
    kwargs = await read_json(request, require_content_type=True)
    size = len(await request.read())
    if size > endpoint.max_body_bytes:  # the app's own limit is the batches' one
        raise web.HTTPRequestEntityTooLarge(max_size=endpoint.max_body_bytes, actual_size=size)
    try:
        result = await dispatch(endpoint.service, request.match_info["method"], kwargs, endpoint.table)
    except ExpectedError as exc:
        return json_response(_declared_error(exc), status=exc.status)
    return json_response({"result": result})


async def batch(request: web.Request) -> web.Response:
    """``POST /rpc``: every call of the batch at once, each answered in its place, in order.

    The calls come from different callers (each one's own waits for its
    answer), so they have no order among them to keep; run together, a store
    can group their round trips instead of adding them up (send what comes
    together as one pipeline). A transient failure (a store
    that is down) fails the whole batch with 503 and cancels its calls still
    running, so the caller retries it whole (its calls must be safe to repeat).
    """
    endpoint = request.app[ENDPOINT]
    calls = await read_json(request, require_content_type=True)
    if not isinstance(calls, list) or not 0 < len(calls) <= endpoint.max_batch_calls:
        raise BadRequest(400, f"a batch is a JSON array of 1 to {endpoint.max_batch_calls} calls")
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_batch_item(endpoint, item)) for item in calls]
    except* ServiceUnavailable as unavailable:
        raise unavailable.exceptions[0] from None
    return json_response([task.result() for task in tasks])


async def _batch_item(endpoint: Endpoint, item: Any) -> dict[str, Any]:
    """One call of a batch, logged with its own correlation ID: its result or its error."""
    if not (isinstance(item, dict) and isinstance(item.get("method"), str)):
        return _item_error(error_body(
            InvalidArgument.__name__, 'each call must be {"method": ..., "kwargs": {...}}'), 400)
    cid = item.get("correlation_id")
    with correlated(cid) if isinstance(cid, str) and VALID_CORRELATION_ID.fullmatch(cid) else _UNCHANGED:
        try:
            return {"result": await dispatch(endpoint.service, item["method"], item.get("kwargs", {}),
                                             endpoint.table)}
        except ExpectedError as exc:
            return _item_error(_declared_error(exc), exc.status)
        except ServiceUnavailable:
            raise
        except Exception:
            log.exception("rpc batch item failed", method=item["method"])
            return _item_error(error_body("InternalError", "internal error"), 500)


async def health(request: web.Request) -> web.Response:
    """``GET /health``: the process is up."""
    return json_response({"status": "ok", "service": request.app[ENDPOINT].name})


async def readiness(request: web.Request) -> web.Response:
    """``GET /ready``: the service can serve calls (what it depends on is reachable)."""
    endpoint = request.app[ENDPOINT]
    if endpoint.ready is not None:
        try:
            await endpoint.ready()
        except ServiceUnavailable as exc:
            return json_response({"status": "unavailable", "service": endpoint.name,
                                  "reason": unavailable_reason(exc)},
                                 status=503, headers=retry_after_header(exc.retry_after))
    return json_response({"status": "ready", "service": endpoint.name})


def rpc_app(service: Any, settings: ServerSettings | None = None, *,
            ready: Readiness | None = None, collectors: Iterable[Collector] = (),
            refresh: Callable[[], Awaitable[None]] | None = None,
            envelope_bytes: int = 0) -> web.Application:
    """An aiohttp app that exposes ``service``'s ``@rpc`` methods, batches of them, a liveness and
    a readiness check.

    A single call's body is at most ``MAX_BODY_BYTES`` plus ``envelope_bytes``
    (the arguments a caller wraps around a body it accepted within that
    limit, so such a body always fits); a batch, at most
    ``RPC_BATCH_MAX_CALLS`` calls in ``RPC_BATCH_MAX_BYTES``.
    ``ready`` raises ``ServiceUnavailable`` when the service cannot serve
    calls (its store is unreachable); without it, a live service is ready.
    ``GET /metrics`` serves the request counts and ``collectors`` (``refresh``
    runs before each scrape; see ``metrics.py``).
    Raises SettingsError when ``settings`` bind beyond loopback without ``RPC_SECRET``.
    """
    settings = ServerSettings() if settings is None else settings
    verifier = auth.verifier_for(settings)
    middlewares = [correlation_middleware, access_log_middleware, rpc_errors,
                   body_deadline(settings.body_read_timeout, refusal)]
    if verifier is not None:
        middlewares.append(auth.require_signature(verifier, unauthorized))
    max_body_bytes = settings.max_body_bytes + envelope_bytes
    app = web.Application(client_max_size=max(max_body_bytes, settings.rpc_batch_max_bytes),
                          middlewares=middlewares, handler_args=CLOSE_ON_UNREAD_BODY)
    app[ENDPOINT] = Endpoint(service, getattr(service, "name", type(service).__name__),
                             entrypoints(type(service)), ready, max_body_bytes,
                             settings.rpc_batch_max_calls)
    app.router.add_post("/rpc/{method}", call)
    app.router.add_post("/rpc", batch)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", readiness)
    setup_metrics(app, collectors, refresh)
    return app
