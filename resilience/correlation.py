"""Correlation IDs: one ID per client request, carried through every service's logs.

The facade takes ``X-Correlation-ID`` from the client or mints one; every RPC
forwards it; every service echoes it on its responses. The ID is bound with
``structlog.contextvars``, so every log line written while handling the
request carries it (``merge_contextvars`` in the log configuration).
"""

from __future__ import annotations

import random
import re

import structlog
from aiohttp import web

from .web import Handler

HEADER = "X-Correlation-ID"
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Enough of a refused ID to recognise it in the logs, never an unbounded client string.
_SHOWN_OF_REFUSED = 64

log = structlog.get_logger("resilience.correlation")


def accept_or_mint(value: str | None) -> str:
    """Keep a client's ID when it is a sane token (≤ 128 of ``A-Za-z0-9._:-``), else mint one.

    Minted IDs only need to be unique, not unguessable: 128 bits from ``random``
    spare a system call per request that ``uuid4`` would make.
    """
    if value and VALID_ID.fullmatch(value):
        return value
    return f"{random.getrandbits(128):032x}"


def current_correlation_id() -> str | None:
    """The correlation ID bound for the request being handled, if any."""
    cid = structlog.contextvars.get_contextvars().get("correlation_id")
    return cid if isinstance(cid, str) else None


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's correlation ID for its logs and outgoing RPCs, and echo it back.

    The log context starts empty for each request: requests on one keep-alive
    connection share a task, and nothing bound for one may reach the next.
    """
    sent = request.headers.get(HEADER)
    cid = accept_or_mint(sent)
    structlog.contextvars.clear_contextvars()
    with structlog.contextvars.bound_contextvars(correlation_id=cid):
        if sent is not None and sent != cid:
            log.info("client correlation ID replaced", refused=sent[:_SHOWN_OF_REFUSED])
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[HEADER] = cid
            raise
    response.headers[HEADER] = cid
    return response
