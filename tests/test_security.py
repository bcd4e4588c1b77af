"""The facade's security basics: loopback by default, bare 500s, enforced limits, nothing leaked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import facade.app
import logging_service.app
import messages.app
from facade.service import FacadeService
from facade.settings import FacadeSettings
from resilience.observability.correlation import CORRELATION_HEADER
from resilience.rpc.server import error_body
from resilience.runtime.web import json_response
from tests.conftest import MakeFacade, stored
from tests.oracle import leaked_internals
from tests.strategies import MAX_BODY, MAX_MSG


@pytest.mark.parametrize("main", [facade.app.main, logging_service.app.main, messages.app.main],
                         ids=["facade", "logging", "messages"])
def test_services_listen_on_loopback_by_default(monkeypatch: pytest.MonkeyPatch,
                                                main: Callable[[], None]) -> None:
    """With no HOST in the environment, every service process binds 127.0.0.1 only."""
    for name in ("HOST", "FACADE_PORT", "LOGGING_PORT", "MESSAGES_PORT", "LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("resilience.runtime.runner.configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr("resilience.runtime.runner.serve", lambda app, **kwargs: calls.append(kwargs))
    main()
    assert FacadeSettings().host == "127.0.0.1"
    assert [call["host"] for call in calls] == ["127.0.0.1"]


async def test_unexpected_failure_is_a_bare_500(make_facade: MakeFacade,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside a handler answers {"status": "failure", "message": "internal error"} only."""
    async def explode(self: FacadeService, msg: str, idempotency_key: str | None = None) -> str:
        raise RuntimeError("secret detail at /srv/app/service.py")

    monkeypatch.setattr(FacadeService, "post_message", explode)
    resp = await (await make_facade()).post("/facade", json={"msg": "x"})
    assert resp.status == 500
    assert await resp.json() == {"status": "failure", "message": "internal error"}


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """``body`` as a chunked upload, with no Content-Length up front."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["Content-Length", "chunked"])
async def test_body_over_the_limit_is_a_json_413(make_facade: MakeFacade, logging_server: TestServer,
                                                 chunked: bool) -> None:
    """A body one byte over the limit, declared or streamed, answers 413 in the failure shape; no write."""
    body = b'{"msg": "' + b"x" * (MAX_BODY - 10) + b'"}'
    assert len(body) == MAX_BODY + 1
    client = await make_facade()
    resp = await client.post("/facade", data=_chunks(body) if chunked else body,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["status"] == "failure"
    assert stored(logging_server) == []


@pytest.mark.parametrize(("msg", "status"), [("x" * MAX_MSG, 200), ("é" * MAX_MSG, 200),
                                             ("x" * (MAX_MSG + 1), 422), ("é" * (MAX_MSG + 1), 422)])
async def test_message_length_limit_counts_characters(make_facade: MakeFacade, logging_server: TestServer,
                                                      msg: str, status: int) -> None:
    """A msg of up to 10000 characters is stored, whatever their byte size; one more is a 422."""
    resp = await (await make_facade()).post("/facade", json={"msg": msg})
    assert resp.status == status
    assert stored(logging_server) == ([msg] if status == 200 else [])


@pytest.mark.parametrize("headers", [
    {"X-Big": "v" * 9000},
    {CORRELATION_HEADER: "c" * 9000},
    {"Idempotency-Key": "k" * 9000},
    {f"X-Many-{i}": "v" for i in range(200)},
], ids=["one long header", "long correlation id", "long idempotency key", "200 headers"])
async def test_oversized_headers_are_refused_without_a_5xx(make_facade: MakeFacade,
                                                            logging_server: TestServer,
                                                            headers: dict[str, str]) -> None:
    """Over-long or too many headers get a 4xx without a traceback, store nothing; the facade serves on."""
    client = await make_facade()
    resp = await client.post("/facade", json={"msg": "x"}, headers=headers)
    assert 400 <= resp.status < 500
    assert not leaked_internals(await resp.read())
    assert stored(logging_server) == []
    assert (await client.get("/health")).status == 200


async def test_overlong_request_line_is_refused_without_a_5xx(make_facade: MakeFacade) -> None:
    """A URL over the parser's line limit gets a 4xx without a traceback, and the facade serves on."""
    client = await make_facade()
    resp = await client.get("/facade?offset=" + "9" * 9000)
    assert 400 <= resp.status < 500
    assert not leaked_internals(await resp.read())
    assert (await client.get("/health")).status == 200


async def test_corrupt_gzip_body_is_a_400(make_facade: MakeFacade, logging_server: TestServer) -> None:
    """A body declared gzip that is not gzip is the client's fault: 400, not 500."""
    resp = await (await make_facade()).post(
        "/facade", data=b'{"msg": "x"}',
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 400
    assert stored(logging_server) == []


async def test_unavailable_reply_does_not_reveal_internal_addresses(make_facade: MakeFacade,
                                                                    unused_tcp_port: int) -> None:
    """A 503 names the service that is down, but not the host and port the facade reaches it on."""
    client = await make_facade(logging_url=f"http://127.0.0.1:{unused_tcp_port}", retry_attempts=1)
    resp = await client.post("/facade", json={"msg": "x"})
    assert resp.status == 503
    message = (await resp.json())["message"]
    assert "logging" in message
    assert str(unused_tcp_port) not in message
    assert "127.0.0.1" not in message
    assert not leaked_internals(await resp.read())


async def _unavailable_forever(request: web.Request) -> web.Response:
    """A downstream that is down and says to come back after an infinite time."""
    return json_response(error_body("Busy", "busy"), status=503, headers={"Retry-After": "inf"})


async def test_non_finite_retry_after_from_logging_is_still_a_503(
    make_facade: MakeFacade, aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]
) -> None:
    """Whatever Retry-After a downstream sends, the client gets a 503 with a whole-seconds Retry-After."""
    stub = web.Application()
    stub.router.add_post("/rpc/{method}", _unavailable_forever)
    server = await aiohttp_server(stub)
    client = await make_facade(logging_url=str(server.make_url("")).rstrip("/"), retry_attempts=1)
    resp = await client.post("/facade", json={"msg": "x"})
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
