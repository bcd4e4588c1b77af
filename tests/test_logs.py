"""Log configuration: JSON lines with the required fields; stdlib logs rendered the same way."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
import structlog
from aiohttp import web

from facade.ids import new_uuid
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience.observability import logs
from resilience.observability.correlation import correlated
from resilience.observability.logs import Stamp, TurnBuffer, configure_logging
from tests.conftest import AiohttpClient

pytestmark = pytest.mark.usefixtures("restore_logging")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_carry_the_required_fields() -> None:
    """Each line is one JSON object with timestamp, level, service, event and the correlation ID."""
    out = io.StringIO()
    configure_logging("facade", "auto", "info", stream=out)
    with correlated("cid-1"):
        structlog.get_logger().info("message accepted", uuid="u-1")
    line = json.loads(out.getvalue())
    assert line["event"] == "message accepted"
    assert (line["level"], line["service"], line["correlation_id"], line["uuid"]) == (
        "info", "facade", "cid-1", "u-1")
    assert line["timestamp"].endswith("Z")


def test_level_filters_cheaply() -> None:
    """Below LOG_LEVEL nothing is written."""
    out = io.StringIO()
    configure_logging("logging", "json", "warning", stream=out)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]


def test_console_format_on_a_terminal() -> None:
    """On a terminal the lines are for people, not JSON."""
    out = FakeTerminal()
    configure_logging("messages", "auto", "info", stream=out)
    structlog.get_logger().info("hello")
    assert "hello" in out.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.getvalue())


def test_standard_library_logs_are_json_too() -> None:
    """aiohttp's own log lines (through logging) come out as the same JSON objects."""
    out = io.StringIO()
    configure_logging("facade", "json", "info", stream=out)
    logging.getLogger("aiohttp.server").warning("something %s", "odd")
    line = json.loads(out.getvalue())
    assert (line["event"], line["level"], line["service"]) == ("something odd", "warning", "facade")


class CountingStream(io.StringIO):
    """A stream that counts the writes it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_lines_of_one_loop_turn_leave_in_one_write() -> None:
    """On the event loop, lines are held until the turn ends, then written together once."""
    out = CountingStream()
    configure_logging("facade", "json", "info", stream=out)
    for i in range(50):
        structlog.get_logger().info("line", n=i)
    assert out.getvalue() == ""
    await asyncio.sleep(0)  # the turn ends
    assert [json.loads(x)["n"] for x in out.getvalue().splitlines()] == list(range(50))
    assert out.writes == 1


async def test_a_full_buffer_is_written_at_once() -> None:
    """More than the buffer holds is written without waiting for the turn to end."""
    out = io.StringIO()
    buffer = TurnBuffer(out, max_chars=100)
    buffer.write("x" * 60)
    buffer.flush()
    assert out.getvalue() == ""
    buffer.write("y" * 60)
    assert out.getvalue() == "x" * 60 + "y" * 60


def test_a_turn_that_never_ends_strands_nothing() -> None:
    """Lines held for a loop that closed before its turn ended are written with the next line
    written off the loop, in order."""
    out = io.StringIO()
    buffer = TurnBuffer(out)

    async def write_on_the_loop() -> None:
        asyncio.get_running_loop().stop()  # this turn is the loop's last
        buffer.write("first\n")
        buffer.flush()  # held for the end of the next turn, which never comes

    loop = asyncio.new_event_loop()
    loop.run_until_complete(write_on_the_loop())
    loop.close()
    assert out.getvalue() == ""
    buffer.write("second\n")
    buffer.flush()
    assert out.getvalue() == "first\nsecond\n"


def test_timestamps_are_iso_utc_to_the_microsecond() -> None:
    """Each line's time is ISO 8601 UTC with six digits of microseconds, the second's part
    formatted anew when the second changes."""
    clock = iter([1_796_121_763.000_001, 1_796_121_763.5, 1_796_121_764.25])
    stamp = Stamp("facade", clock=lambda: next(clock))
    assert [stamp(None, "info", {})["timestamp"] for _ in range(3)] == [
        "2026-12-01T10:42:43.000001Z", "2026-12-01T10:42:43.500000Z", "2026-12-01T10:42:44.250000Z"]


def test_the_stamp_names_levels_as_structlog_does_and_keeps_a_lines_own_service() -> None:
    """``warn`` is logged as warning and ``exception`` as error, other method names as they are;
    ``service`` is the process's unless the line names its own."""
    stamp = Stamp("facade", clock=lambda: 0.0)
    levels = [stamp(None, name, {})["level"] for name in ("warn", "exception", "info", "critical")]
    assert levels == ["warning", "error", "info", "critical"]
    assert [stamp(None, "info", e)["service"] for e in ({}, {"service": "other"})] == [
        "facade", "other"]
    for name in ("warn", "exception", "debug", "info", "warning", "error", "critical"):
        assert stamp(None, name, {})["level"] == structlog.stdlib.add_log_level(None, name, {})["level"]


async def test_an_rpc_reply_leaves_after_the_lines_of_what_it_answers(
        aiohttp_client: AiohttpClient) -> None:
    """When logging's reply to a call is about to be sent, "message stored" and the access line
    are already written, not held for the end of the loop's turn."""
    out = io.StringIO()
    configure_logging("logging", "json", "info", stream=out)
    # The services' module loggers must not keep this configuration after the test.
    structlog.configure(cache_logger_on_first_use=False)
    app = create_logging(LoggingSettings())
    written_at_reply: list[str] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        written_at_reply.append(out.getvalue())

    app.on_response_prepare.append(record)  # runs after the server's own hook
    client = await aiohttp_client(app)
    resp = await client.post("/rpc/log", json={"uuid": new_uuid(), "msg": "kept"})
    assert resp.status == 200
    events = [json.loads(line)["event"] for line in written_at_reply[0].splitlines()]
    assert events[-2:] == ["message stored", "request handled"]


class BrokenPipe(io.StringIO):
    """A stream whose reader went away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_stream_that_cannot_be_written_drops_lines_and_says_so_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Lines for a stream whose reader is gone are dropped without an error reaching the caller,
    and stderr says so once, however many lines follow."""
    buffer = TurnBuffer(BrokenPipe())
    for _ in range(3):
        buffer.write("lost\n")
        buffer.flush()
    assert capsys.readouterr().err.count("log lines cannot be written") == 1


def test_a_traceback_is_data_in_the_json_line() -> None:
    """``log.exception`` inside ``except`` gives one JSON line whose ``exception`` names the
    error and where it was raised; a line without one has no such field."""
    out = io.StringIO()
    configure_logging("facade", "json", "info", stream=out)
    log = logs.get_logger("tests.traceback")
    try:
        raise ValueError("broken on purpose")
    except ValueError:
        log.exception("request failed")
    log.info("fine")
    failed, fine = map(json.loads, out.getvalue().splitlines())
    (error,) = failed["exception"]
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "broken on purpose")
    assert error["frames"][-1]["name"] == "test_a_traceback_is_data_in_the_json_line"
    assert failed["level"] == "error"
    assert set(fine) == {"event", "level", "timestamp", "service"}


def test_a_line_carries_the_correlation_id_of_the_request_it_is_written_in() -> None:
    """Inside ``correlated`` a line has its ID, outside it none; an ID given to the line wins."""
    out = io.StringIO()
    configure_logging("logging", "json", "info", stream=out)
    log = logs.get_logger("tests.correlation")
    with correlated("cid-outer"):
        log.info("inside")
        with correlated("cid-inner"):
            log.info("nested")
        log.info("given", correlation_id="cid-given")
    log.info("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("correlation_id") for line in lines] == [
        "cid-outer", "cid-inner", "cid-given", None]


def test_a_module_logger_follows_a_new_configuration() -> None:
    """A module's logger keeps its methods while the configuration lasts, and writes where a new
    ``configure_logging`` says once that is called (not to the stream it first wrote to)."""
    first, second = io.StringIO(), io.StringIO()
    log = logs.get_logger("tests.reconfigured")
    configure_logging("facade", "json", "info", stream=first)
    log.info("one")
    assert "info" in vars(log)  # looked up once, then an attribute
    configure_logging("facade", "json", "warning", stream=second)
    log.info("two")  # below the new level
    log.warning("three")
    assert [json.loads(x)["event"] for x in first.getvalue().splitlines()] == ["one"]
    assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["three"]
