"""Structured logs: one JSON object per line under honcho, readable console lines on a terminal.

Every line carries ``timestamp``, ``level``, ``service`` and ``event``, and,
inside a request, its ``correlation_id``. Library logs that go through the
standard ``logging`` module (aiohttp's) are rendered the same way.

Lines written on the event loop leave once per turn of the loop, in one
write, rather than once each (``TurnBuffer``): under load that is one system
call for dozens of lines, instead of one per line. Where a line is the record
of what a reply acknowledges (logging's "message stored"), the RPC server
writes the lines held before the reply leaves (``write_held_lines``), so a
process killed between the two never acknowledges what its log does not show.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TextIO, cast

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError
from structlog.typing import EventDict, Processor, WrappedLogger

from resilience.observability.correlation import add_correlation_id


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


class TurnBuffer:
    """A write-only stream that holds what is written on an event loop until the end of the
    loop's turn, then writes it to ``out`` at once; outside a running loop, at once.

    A line waits at most one turn of the loop (well under a millisecond when it keeps up),
    and never more than ``max_chars`` wait. A process killed with SIGKILL loses the lines of
    that last turn; one that exits writes them (``atexit``). When ``out`` cannot be written
    (its reader went away), that is said once on stderr and the lines are dropped, as the
    standard library's handlers do: logging must never take the service down with it.

    It is structlog's logger too (``msg`` and the level names): a rendered line
    goes straight in, without ``WriteLogger``'s lock and call on top of this one's.
    """

    def __init__(self, out: TextIO, max_chars: int = 64 * 1024) -> None:
        self.out = out
        self.max_chars = max_chars
        self._parts: list[str] = []
        self._chars = 0
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._broken = False

    def isatty(self) -> bool:
        return self.out.isatty()

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
            self._chars += len(text)
        if self._chars >= self.max_chars:
            self.drain()
        return len(text)

    def msg(self, message: str) -> None:
        """A rendered structlog line: held with its newline, to be written at the turn's end."""
        self.write(message + "\n")
        self.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = msg

    def flush(self) -> None:
        """Write what is held at the end of this turn of the running loop, or now without one."""
        scheduled = self._scheduled_on
        if scheduled is not None and scheduled.is_running():
            return  # a drain is due at the end of this turn (asking for the loop costs a getpid)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
            return
        self._scheduled_on = loop  # the drain scheduled on a loop that stopped never runs
        loop.call_soon(self.drain)

    def drain(self) -> None:
        """Write everything held, now."""
        with self._lock:
            self._scheduled_on = None
            if not self._parts:
                return
            text, self._parts, self._chars = "".join(self._parts), [], 0
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError) as exc:  # a closed pipe, a closed file
                if not self._broken:
                    self._broken = True
                    sys.stderr.write(f"log lines cannot be written, dropping them: {exc!r}\n")


class Stamp:
    """What every line carries: ``level``, ``timestamp`` (ISO 8601 in UTC to the microsecond,
    ``2026-12-01T10:42:43.123456Z``) and ``service``, in one processor.

    One call instead of three (structlog's ``add_log_level`` and ``TimeStamper``
    and a ``service`` adder): it runs on every line, a few per request. The
    level is named as ``add_log_level`` names it; structlog's ``TimeStamper``
    builds a ``datetime`` per line, while the date and time to the second here
    are formatted once per second, the microseconds per line.
    """

    def __init__(self, service: str, clock: Callable[[], float] = time.time) -> None:
        self._service = service
        self._clock = clock
        self._formatted = (-1, "")  # one attribute: a thread never sees half an update

    def __call__(self, _: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
        second, micros = divmod(round(self._clock() * 1_000_000), 1_000_000)
        formatted_second, prefix = self._formatted
        if second != formatted_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._formatted = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{micros:06d}Z"
        event_dict.setdefault("service", self._service)
        return event_dict


# Method names whose level is named otherwise (as structlog's add_log_level has them).
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}


class Logger:
    """A module's logger (``log = get_logger(__name__)`` at import): structlog's logger as
    ``configure_logging`` set it up, its methods looked up once per configuration.

    structlog's own module-level proxy (``structlog.get_logger``) assembles its
    logger on first use too, but then pays an attribute miss, ``__getattr__``
    and ``bind()`` on every call: more than the rest of a line's trip, on
    lines written once per request. structlog's advice for such lines is a
    local ``bind()``; this is that local logger, kept for the module while
    structlog is configured with ``cache_logger_on_first_use`` (as
    ``configure_logging`` does; a test that turns it off gets a fresh logger
    per call, as from structlog's proxy).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        _loggers.add(self)

    def __getattr__(self, method: str) -> Any:
        value = getattr(structlog.get_logger(self._name).bind(), method)
        if structlog.get_config()["cache_logger_on_first_use"]:
            self.__dict__[method] = value  # found as an attribute from now on
        return value

    def _forget(self) -> None:
        """Drop the looked-up methods: the next call assembles the logger anew."""
        name = self._name
        self.__dict__.clear()
        self._name = name


_loggers: weakref.WeakSet[Logger] = weakref.WeakSet()


def get_logger(name: str) -> Logger:
    """The logger for module ``name``; usable at import, before ``configure_logging``."""
    return Logger(name)


def forget_loggers() -> None:
    """Make every module logger assemble itself anew on its next call: after structlog's
    configuration changed (``configure_logging`` calls it; a test that resets structlog does)."""
    for logger in list(_loggers):
        logger._forget()


# The process's log stream, as ``configure_logging`` set it up. Process-wide, as stdout and
# structlog's own configuration are: not the state of one app.
_buffer: TurnBuffer | None = None


def write_held_lines() -> None:
    """Write the log lines held for the end of this loop turn now (if logging was configured)."""
    if _buffer is not None:
        _buffer.drain()


atexit.register(write_held_lines)


_dict_tracebacks = structlog.processors.dict_tracebacks


def render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """The line as one JSON object; a traceback as data (structlog's ``dict_tracebacks``).

    One processor for what structlog's ``dict_tracebacks`` and ``JSONRenderer``
    do in two: the traceback step runs only for a line that has one.
    """
    if "exc_info" in event_dict:
        event_dict = _dict_tracebacks(logger, method_name, event_dict)
    return orjson.dumps(event_dict, default=repr).decode()


def configure_logging(
    service: str, log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library for ``service``.

    ``log_format`` is ``json``, ``console`` or ``auto`` (JSON unless ``stream`` is a terminal).
    """
    global _buffer
    _buffer = buffer = TurnBuffer(stream or sys.stdout)
    out = cast(TextIO, buffer)
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    level_no = logging.getLevelNamesMapping()[level.upper()]

    shared: list[Processor] = [Stamp(service), add_correlation_id]
    tail: list[Processor] = [render_json if log_format == "json"
                             else structlog.dev.ConsoleRenderer(colors=out.isatty())]

    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=lambda *_: buffer,
        cache_logger_on_first_use=True,
    )
    forget_loggers()

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
