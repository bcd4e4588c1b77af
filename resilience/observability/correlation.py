"""Correlation IDs and W3C Trace Context: one ID per client request, through every service's logs.

The first service a request reaches takes its ID from the client or mints
one; every RPC forwards it; every service echoes it on its responses. The
ID is held in one context variable, so every log line written while
handling the request carries it (``add_correlation_id`` in the log
configuration reads it). It is the same variable the RPCs read their
headers from, so what a line says and what is forwarded cannot differ, as
they could with a copy bound for structlog's ``merge_contextvars``.

Where the ID comes from, first match wins:

1. a valid W3C ``traceparent`` (https://www.w3.org/TR/trace-context/): its
   trace-id is the correlation ID, so a request can be followed by any
   tracing tool's ID as well as with jq; ``tracestate`` is passed on as it came;
2. ``X-Correlation-ID``, when it is 1 to 128 of ``A-Za-z0-9._:-``;
3. a minted one: 32 lower-case hex digits, itself a valid trace-id.

Every RPC then carries ``X-Correlation-ID`` and, when the ID is a trace-id,
a ``traceparent`` with that trace-id and a new parent-id (this hop's). A
malformed ``traceparent`` is ignored, never refused.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass

import structlog
from aiohttp import web
from structlog.typing import EventDict, WrappedLogger

from resilience.runtime.web import Handler

#: The header that carries a correlation ID on requests, replies and RPCs.
CORRELATION_HEADER = "X-Correlation-ID"
#: W3C Trace Context's headers.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The correlation IDs a service keeps as they come (others are replaced by a minted one).
VALID_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# version-trace_id-parent_id-flags; a future version may append fields after another "-".
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
# Enough of a refused ID to recognise it in the logs, never an unbounded client string.
_SHOWN_OF_REFUSED = 64
# The longest tracestate passed on (the spec's 32 members of at most 256 bytes fit 8 KiB).
_MAX_TRACESTATE = 8192

# structlog's own (logs.get_logger is the same): logs.py imports this module for add_correlation_id.
log = structlog.get_logger("resilience.observability.correlation")


@dataclass(frozen=True, slots=True)
class Propagation:
    """What a request's log lines and RPCs carry on: its correlation ID and, when that is a
    trace-id, the flags and tracestate its ``traceparent`` came with."""

    correlation_id: str
    flags: str = "00"
    tracestate: str | None = None


_propagation: ContextVar[Propagation | None] = ContextVar("propagation", default=None)


def accept_or_mint(value: str | None) -> str:
    """Keep a client's ID when it is a sane token (≤ 128 of ``A-Za-z0-9._:-``), else mint one.

    Minted IDs only need to be unique, not unguessable: 128 bits of the
    process's ``random`` (seeded by the system, again after a fork) will do.
    """
    if value and VALID_CORRELATION_ID.fullmatch(value):
        return value
    return _random_hex(128)


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """The (trace-id, flags) of a valid ``traceparent``, else ``None``.

    As the spec says: version ``ff`` is invalid, version ``00`` has exactly
    four fields, an all-zero trace-id or parent-id is invalid, and a later
    version is read for its first four fields.
    """
    match = _TRACEPARENT.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id, flags


def current_propagation() -> Propagation | None:
    """What an RPC made now carries on (``None`` outside a request)."""
    return _propagation.get()


def add_correlation_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: a line written inside a request carries its ``correlation_id``."""
    current = _propagation.get()
    if current is not None:
        event_dict.setdefault("correlation_id", current.correlation_id)
    return event_dict


def propagation_headers(current: Propagation | None) -> dict[str, str]:
    """The headers of an RPC that carries ``current`` on: the correlation ID, and trace context
    for a trace-id (a new parent-id each time: each request on the wire is a span of its own)."""
    if current is None:
        return {}
    cid = current.correlation_id
    headers = {CORRELATION_HEADER: cid}
    if _TRACE_ID.fullmatch(cid) and set(cid) != {"0"}:
        headers[TRACEPARENT] = f"00-{cid}-{_random_hex(64)}-{current.flags}"
        if current.tracestate:
            headers[TRACESTATE] = current.tracestate
    return headers


def received(headers: Mapping[str, str]) -> tuple[Propagation, str | None]:
    """What a request or an event that came with ``headers`` carries on, and its ``traceparent``
    when that was valid.

    A valid ``traceparent`` gives its trace-id, flags and ``tracestate`` (cut
    to what is passed on); else the sender's ``X-Correlation-ID`` when it is a
    sane token; else a minted ID.
    """
    traceparent = headers.get(TRACEPARENT)
    parent = parse_traceparent(traceparent)
    if parent is None:
        return Propagation(accept_or_mint(headers.get(CORRELATION_HEADER))), None
    tracestate = headers.get(TRACESTATE)
    return (Propagation(*parent, tracestate[:_MAX_TRACESTATE] if tracestate else None),
            traceparent)


@contextlib.contextmanager
def correlated(cid: str, flags: str = "00", tracestate: str | None = None) -> Iterator[None]:
    """Within the block, log lines carry ``cid`` and RPCs forward it (and the trace context)."""
    token = _propagation.set(Propagation(cid, flags, tracestate))
    try:
        yield
    finally:
        _propagation.reset(token)


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's correlation ID for its logs and outgoing RPCs, and echo it back.

    Requests on one keep-alive connection share a task: what is bound for one
    is reset when it is answered, so nothing reaches the next (fields for the
    access line go through ``access.note``, never the log context).
    """
    headers = request.headers
    sent = headers.get(CORRELATION_HEADER)
    current, echoed_parent = received(headers)  # a traceparent is echoed only when it was valid
    cid = current.correlation_id
    with correlated(cid, current.flags, current.tracestate):
        if sent is not None and sent != cid:
            log.info("client correlation ID replaced", refused=_shown(sent))
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _echo(exc.headers, cid, echoed_parent)
            raise
    _echo(response.headers, cid, echoed_parent)
    return response


def _echo(headers: MutableMapping[str, str], cid: str, traceparent: str | None) -> None:
    headers[CORRELATION_HEADER] = cid
    if traceparent is not None:
        headers[TRACEPARENT] = traceparent


def _shown(refused: str) -> str:
    """The start of a refused ID as text any log can hold.

    aiohttp hands over header bytes that are not UTF-8 as lone surrogates
    (``surrogateescape``), which no UTF-8 encoder writes, JSON's or a
    terminal's: they are shown as escapes (``caf\\xe9``) instead.
    """
    shown = refused[:_SHOWN_OF_REFUSED]
    return shown.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _random_hex(bits: int) -> str:
    return f"{random.getrandbits(bits):0{bits // 4}x}"
