"""Structured logs: one JSON object per line under honcho, readable console lines on a terminal.

Every line carries ``timestamp``, ``level``, ``service`` and ``event``, and,
inside a request, its ``correlation_id``. Library logs that go through the
standard ``logging`` module (aiohttp's) are rendered the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError
from structlog.typing import EventDict, Processor, WrappedLogger


class _MalformedRequestsWithoutTraceback(logging.Filter):
    """aiohttp logs a malformed HTTP request (the client's fault, answered 400) with a
    traceback, and so a body it cannot decode when it drains the rest after our 400;
    keep it to one warning line saying what was wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            exc = exc.__cause__
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed HTTP request: %s"
            record.args = (exc.message,)
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=repr).decode()


def configure_logging(
    service: str, log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library for ``service``.

    ``log_format`` is ``json``, ``console`` or ``auto`` (JSON unless ``stream`` is a terminal).
    """
    out = stream or sys.stdout
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    level_no = logging.getLevelNamesMapping()[level.upper()]

    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
        structlog.contextvars.merge_contextvars,  # the request's correlation_id
    ]
    # JSON lines carry tracebacks as data; the console renderer prints its own.
    tail: list[Processor]
    if log_format == "json":
        tail = [structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(serializer=_dumps)]
    else:
        tail = [structlog.dev.ConsoleRenderer(colors=out.isatty())]

    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )

    # aiohttp and other libraries log through the standard library: same format, same stream.
    handler = logging.StreamHandler(out)
    handler.addFilter(_MalformedRequestsWithoutTraceback())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)
