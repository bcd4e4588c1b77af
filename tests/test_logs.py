"""Log configuration: JSON lines with the required fields; stdlib logs rendered the same way."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from resilience.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    structlog.reset_defaults()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_carry_the_required_fields() -> None:
    """Each line is one JSON object with timestamp, level, service, event and the correlation ID."""
    out = io.StringIO()
    configure_logging("facade", "auto", "info", stream=out)
    with structlog.contextvars.bound_contextvars(correlation_id="cid-1"):
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
