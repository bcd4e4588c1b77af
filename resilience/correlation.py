"""Correlation IDs: one ID per client request, carried through every service's logs.

The facade takes ``X-Correlation-ID`` from the client or mints one; every RPC
forwards it; every service echoes it on its responses and puts it on every
log line written while handling the request.
"""

from __future__ import annotations

import random
import re
import time
from contextvars import ContextVar

import structlog
from aiohttp import web

from .web import Handler

HEADER = "X-Correlation-ID"
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = structlog.get_logger("resilience.access")

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def accept_or_mint(value: str | None) -> str:
    """Keep a client's ID when it is a sane token (≤ 128 of ``A-Za-z0-9._:-``), else mint one.

    Minted IDs only need to be unique, not unguessable: 128 bits from ``random``
    spare a system call per request that ``uuid4`` would make.
    """
    if value and VALID_ID.fullmatch(value):
        return value
    return f"{random.getrandbits(128):032x}"


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's correlation ID for its logs and outgoing RPCs, echo it back,
    and log the request once it is answered."""
    cid = accept_or_mint(request.headers.get(HEADER))
    token = correlation_id.set(cid)
    started = time.perf_counter()
    status: int | None = None  # stays None if the handler is cancelled: nobody was answered
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[HEADER] = cid
        raise
    except Exception:
        status = 500  # aiohttp answers it
        raise
    finally:
        log.info("request handled" if status is not None else "request cancelled",
                 method=request.method, path=request.path, status=status,
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))
        correlation_id.reset(token)
    response.headers[HEADER] = cid
    return response
