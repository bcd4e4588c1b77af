"""Log configuration: JSON lines with the required fields; stdlib logs rendered the same way."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import structlog
from aiohttp import web

from facade.ids import new_uuid
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience.observability import logs
from resilience.observability.correlation import correlated
from resilience.observability.logs import configure_logging
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


def test_timestamps_are_iso_utc_to_the_microsecond() -> None:
    """Each line's time is ISO 8601 in UTC with six digits of microseconds."""
    out = io.StringIO()
    configure_logging("facade", "json", "info", stream=out)
    structlog.get_logger().info("stamped")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
                        json.loads(out.getvalue())["timestamp"])


def test_levels_are_named_as_structlog_names_them_and_a_line_keeps_its_own_service() -> None:
    """``warn`` is logged as warning and ``exception`` as error; ``service`` is the process's
    unless the line names its own."""
    out = io.StringIO()
    configure_logging("facade", "json", "debug", stream=out)
    log = structlog.get_logger()
    log.warn("w")
    log.exception("e")
    log.critical("c")
    log.info("other", service="other")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["level"], line["service"]) for line in lines] == [
        ("warning", "facade"), ("error", "facade"), ("critical", "facade"), ("info", "other")]


def test_a_process_caches_its_loggers_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the test suite, structlog's fast path is on: a logger is assembled once."""
    monkeypatch.setattr(logs, "CACHE_LOGGERS", True)
    configure_logging("facade", "json", "info", stream=io.StringIO())
    assert structlog.get_config()["cache_logger_on_first_use"] is True


async def test_an_rpc_reply_leaves_after_the_lines_of_what_it_answers(
        aiohttp_client: AiohttpClient) -> None:
    """When logging's reply to a call is about to be sent, "message stored" and the access line
    are already written."""
    out = io.StringIO()
    configure_logging("logging", "json", "info", stream=out)
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
    configure_logging("facade", "json", "info", stream=BrokenPipe())
    for _ in range(3):
        structlog.get_logger().info("lost")
        logging.getLogger("aiohttp.server").warning("lost too")
    assert capsys.readouterr().err.count("log lines cannot be written") == 1


def test_a_traceback_is_data_in_the_json_line() -> None:
    """``log.exception`` inside ``except`` gives one JSON line whose ``exception`` names the
    error and where it was raised, without the frames' local variables; a line without one
    has no such field."""
    out = io.StringIO()
    configure_logging("facade", "json", "info", stream=out)
    log = logs.get_logger("tests.traceback")
    secret = "Bearer do-not-log-me"
    try:
        raise ValueError("broken on purpose")
    except ValueError:
        log.exception("request failed")
    log.info("fine")
    assert secret not in out.getvalue()
    failed, fine = map(json.loads, out.getvalue().splitlines())
    (error,) = failed["exception"]
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "broken on purpose")
    assert error["frames"][-1]["name"] == "test_a_traceback_is_data_in_the_json_line"
    assert "locals" not in error["frames"][-1]
    assert failed["level"] == "error"
    assert set(fine) == {"event", "level", "timestamp", "service"}


def test_a_console_traceback_shows_no_local_variables() -> None:
    """On the console a traceback is Python's own, without the frames' local variables."""
    out = io.StringIO()
    configure_logging("facade", "console", "info", stream=out)
    secret = "Bearer do-not-log-me"
    try:
        raise ValueError("broken on purpose")
    except ValueError:
        logs.get_logger("tests.traceback").exception("request failed")
    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "ValueError: broken on purpose" in text
    assert secret not in text


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
    """A module's logger writes where a new ``configure_logging`` says once that is called (not to
    the stream it first wrote to)."""
    first, second = io.StringIO(), io.StringIO()
    log = logs.get_logger("tests.reconfigured")
    configure_logging("facade", "json", "info", stream=first)
    log.info("one")
    configure_logging("facade", "json", "warning", stream=second)
    log.info("two")  # below the new level
    log.warning("three")
    assert [json.loads(x)["event"] for x in first.getvalue().splitlines()] == ["one"]
    assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["three"]
