"""Handlers: parse the request, call the domain, map its errors to HTTP. Nothing else."""

from __future__ import annotations

import structlog
from aiohttp import web

from resilience import ExpectedError, RemoteError, ServiceUnavailable
from resilience.web import json_response, read_json, retry_after_header

from .keys import SERVICE, SETTINGS
from .middlewares import failure
from .service import IdempotencyKeyReused
from .validation import idempotency_key_from, message_from, page_from

log = structlog.get_logger("facade")


async def post_message(request: web.Request) -> web.Response:
    """POST /facade {"msg": "..."} -> {"status": "success", "uuid": "..."}."""
    settings = request.app[SETTINGS]
    msg = message_from(await read_json(request, require_content_type=False),
                       settings.max_msg_chars)
    key = idempotency_key_from(request.headers.get("Idempotency-Key"))
    try:
        message_id = await request.app[SERVICE].post_message(msg, key)
    except IdempotencyKeyReused as exc:
        return failure(422, str(exc))
    except (ServiceUnavailable, RemoteError, ExpectedError) as exc:
        return downstream_failure(exc)
    return json_response({"status": "success", "uuid": message_id})


async def get_messages(request: web.Request) -> web.Response:
    """GET /facade[?offset=&limit=] -> {"logs": [...], "message": "not implemented yet"}."""
    offset, limit = page_from(request.query)
    try:
        result = await request.app[SERVICE].get_messages(offset, limit)
    except (ServiceUnavailable, RemoteError, ExpectedError) as exc:
        return downstream_failure(exc)
    return json_response(result)


async def health(request: web.Request) -> web.Response:
    """GET /health: the facade itself is up (it does not probe the others)."""
    return json_response({"status": "ok", "service": "facade"})


def downstream_failure(exc: Exception) -> web.Response:
    """503 with Retry-After when a service is unavailable; 502 when it failed; 422 when it refused."""
    if isinstance(exc, ServiceUnavailable):
        log.warning("answering 503", error=str(exc))
        headers = retry_after_header(exc.retry_after)
        return failure(503, f"{exc.service} service unavailable ({exc.reason}); "
                            f"retry in {headers['Retry-After']} s", headers)
    if isinstance(exc, RemoteError):
        return failure(502, f"{exc.service} service failed ({exc.error_type})")
    return failure(422, str(exc))
