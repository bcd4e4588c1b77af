"""Handlers: parse the request, call the domain, map its errors to HTTP. Nothing else."""

from __future__ import annotations

from aiohttp import web

from resilience import (
    RemoteError,
    ServiceUnavailable,
    get_logger,
    is_refusal,
    json_response,
    read_json,
    retry_after_header,
)

from .keys import SERVICE, SETTINGS
from .middlewares import failure
from .service import IdempotencyKeyReused
from .validation import idempotency_key_from, message_from, page_from

log = get_logger("facade")


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
    except (ServiceUnavailable, RemoteError) as exc:
        return downstream_failure(exc)
    return json_response({"status": "success", "uuid": message_id})


async def get_messages(request: web.Request) -> web.Response:
    """GET /facade[?offset=&limit=] -> logging's page and the messages service's answer, as
    ``FacadeService.get_messages`` joins them (``"next_offset"`` when more follow)."""
    offset, limit = page_from(request.query)
    try:
        body = await request.app[SERVICE].get_messages(offset, limit)
    except (ServiceUnavailable, RemoteError) as exc:
        return downstream_failure(exc)
    return web.Response(body=body, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """GET /health: the facade itself is up (it does not probe the others)."""
    return json_response({"status": "ok", "service": "facade"})


def downstream_failure(exc: ServiceUnavailable | RemoteError) -> web.Response:
    """503 with Retry-After when a service is unavailable; 502 when it failed or refused the call.

    A refusal (a method, an argument, a signature the downstream does not
    take) is logged as the misconfiguration it is; the only refusal that is
    the client's fault, a reused Idempotency-Key, never comes here.
    """
    if isinstance(exc, ServiceUnavailable):
        log.warning("answering 503", error=str(exc))
        headers = retry_after_header(exc.retry_after)
        return failure(503, f"{exc.service} service unavailable ({exc.reason}); "
                            f"retry in {headers['Retry-After']} s", headers)
    if is_refusal(exc):
        log.error("downstream refused the call: the services are misconfigured",
                  downstream=exc.service, error_type=exc.error_type, error=str(exc))
        return failure(502, f"{exc.service} service refused the call ({exc.error_type}): "
                            "the services are misconfigured")
    log.warning("answering 502", error=str(exc))
    return failure(502, f"{exc.service} service failed ({exc.error_type})")
