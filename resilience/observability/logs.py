"""Structured logs: one JSON object per line to a pipe or file, readable console lines on a terminal.

Every line carries ``timestamp``, ``level``, ``service`` and ``event``, and,
inside a request, its ``correlation_id``. Library logs that go through the
standard ``logging`` module (aiohttp's) are rendered the same way.

This is structlog's documented fast configuration (a filtering bound logger
cached on first use, orjson rendering); module loggers are structlog's own
(``log = get_logger(__name__)``). Two things structlog does not do are
here: lines for a stream that cannot be written are dropped instead of
raising into the request that logged (``LineWriter``), and aiohttp's report
of a malformed request is one warning, not a traceback.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from resilience.observability.correlation import add_correlation_id

#: Whether ``configure_logging`` lets structlog cache each logger on its first use (its fast
#: path). A cached logger keeps the configuration it was first used under, so the test suite,
#: which configures logging anew per test, turns this off.
CACHE_LOGGERS = True


def get_logger(name: str) -> Any:
    """The logger for module ``name``; usable at import, before ``configure_logging``."""
    return structlog.get_logger(name)


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


class LineWriter:
    """structlog's logger (and the standard library handler's stream) for one text stream: each
    line written and flushed when it is logged, so a line is out before the reply it led to.

    Unlike structlog's ``WriteLogger``, a stream that cannot be written (its
    reader went away) is said once on stderr and its lines are dropped, as the
    standard library's handlers do: logging never takes the service down.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._broken = False

    def isatty(self) -> bool:
        return self.out.isatty()

    def write(self, text: str) -> int:
        with self._lock:
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError) as exc:  # a closed pipe, a closed file
                if not self._broken:
                    self._broken = True
                    sys.stderr.write(f"log lines cannot be written, dropping them: {exc!r}\n")
        return len(text)

    def flush(self) -> None:
        """Nothing is held: ``write`` flushes."""

    def msg(self, message: str | bytes) -> None:
        self.write((message.decode() if isinstance(message, bytes) else message) + "\n")

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = msg


def configure_logging(
    service: str, log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library for ``service``.

    ``log_format`` is ``json``, ``console`` or ``auto`` (JSON unless ``stream`` is a terminal).
    """
    out = LineWriter(stream or sys.stdout)
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    level_no = logging.getLevelNamesMapping()[level.upper()]

    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
        add_correlation_id,
    ]
    # A traceback names its frames but never their local variables: those hold request headers
    # and secrets, and would make one failure a line of tens of kilobytes.
    tail: list[Processor] = (
        [structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
         structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        if log_format == "json" else
        [structlog.dev.ConsoleRenderer(colors=out.isatty(),
                                       exception_formatter=structlog.dev.plain_traceback)])

    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=lambda *_: out,
        cache_logger_on_first_use=CACHE_LOGGERS,
    )

    # aiohttp and other libraries log through the standard library: same format, same stream.
    handler = logging.StreamHandler(out)
    handler.addFilter(_MalformedRequestsWithoutTraceback())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *(tail[:-1]), _as_text(tail[-1])],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)


def _as_text(render: Processor) -> Processor:
    """The renderer giving ``str`` (the standard library's formatter must return text)."""
    def render_text(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        line = render(logger, name, event_dict)
        return line.decode() if isinstance(line, bytes) else str(line)
    return render_text
