"""A client's correlation ID: replaced, never refused, when it is no sane token, on real sockets."""

from __future__ import annotations

import io
import json
import re

import orjson
import pytest
from aiohttp.test_utils import BaseTestServer, TestServer

from facade.ids import new_uuid
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience.observability.correlation import CORRELATION_HEADER
from resilience.observability.logs import configure_logging
from tests.conftest import AiohttpServer, MakeFacade, stored
from tests.rawhttp import Reply, exchange

MINTED = re.compile(r"[0-9a-f]{32}")
# "café" in Latin-1: no client library sends it, since header values are text, but a raw one can.
NOT_UTF8 = b"caf\xe9"


@pytest.fixture
def json_log(restore_logging: None) -> io.StringIO:
    """The log lines, rendered as JSON as the service processes render them."""
    out = io.StringIO()
    configure_logging("test", "json", "info", stream=out)
    return out


def lines(out: io.StringIO) -> list[dict[str, object]]:
    """Every line logged so far."""
    return [json.loads(line) for line in out.getvalue().splitlines()]


def assert_replaced(reply: Reply, out: io.StringIO) -> None:
    """The reply carries a minted ID; the log says what was replaced, and holds no error."""
    assert MINTED.fullmatch(reply.headers[CORRELATION_HEADER.lower()])
    logged = lines(out)
    replaced = [line for line in logged if line["event"] == "client correlation ID replaced"]
    assert [line["refused"] for line in replaced] == ["caf\\xe9"]
    assert [line for line in logged if line["level"] == "error"] == []


async def post(server: BaseTestServer, path: str, body: object) -> Reply:
    """POST ``body`` as JSON with an X-Correlation-ID that is not UTF-8."""
    return await exchange(server, path, {"Content-Type": "application/json", CORRELATION_HEADER: NOT_UTF8},
                          orjson.dumps(body))


async def test_a_non_utf8_id_on_the_facade_is_replaced(
    make_facade: MakeFacade, logging_server: TestServer, json_log: io.StringIO,
) -> None:
    """X-Correlation-ID bytes that are not UTF-8 get a minted ID; the message is stored as usual."""
    facade = await make_facade()
    reply = await post(facade.server, "/facade", {"msg": "café"})
    body = reply.json()
    assert reply.status == 200
    assert isinstance(body, dict)
    assert body["status"] == "success"
    assert stored(logging_server) == ["café"]
    assert_replaced(reply, json_log)


async def test_a_non_utf8_id_on_an_rpc_server_is_replaced(aiohttp_server: AiohttpServer,
                                                          json_log: io.StringIO) -> None:
    """The RPC server treats such an ID as the facade does: the call is served, under a minted ID."""
    server = await aiohttp_server(create_logging(LoggingSettings()))
    reply = await post(server, "/rpc/log", {"uuid": new_uuid(), "msg": "café"})
    assert (reply.status, reply.json()) == (200, {"result": {"stored": True}})
    assert stored(server) == ["café"]
    assert_replaced(reply, json_log)
