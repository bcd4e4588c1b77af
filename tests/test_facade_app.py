"""The facade over HTTP, wired to the real logging and messages apps on real sockets."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from facade.app import create_app as create_facade
from facade.ids import KeyUuids
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from resilience.observability.correlation import CORRELATION_HEADER
from resilience.rpc.signing import Signer
from tests.cases import BAD_BODIES
from tests.conftest import AiohttpClient, AiohttpServer, stored

Client = TestClient[web.Request, web.Application]
MakeFacade = Callable[..., Awaitable[Client]]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def facade(make_facade: MakeFacade) -> Client:
    return await make_facade()


async def test_assignment_session(facade: Client, logging_server: TestServer) -> None:
    """POST msg1..msg3 then GET answers exactly as the assignment's curl session does."""
    uuids = []
    for text in ("msg1", "msg2", "msg3"):
        resp = await facade.post("/facade", json={"msg": text})
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "success"
        uuids.append(body["uuid"])
    assert len(set(uuids)) == 3
    resp = await facade.get("/facade")
    assert resp.status == 200
    assert await resp.json() == {"logs": ["msg1", "msg2", "msg3"], "message": "not implemented yet"}
    assert stored(logging_server) == ["msg1", "msg2", "msg3"]


async def test_the_largest_body_the_facade_accepts_is_stored(
        make_facade: MakeFacade, aiohttp_server: AiohttpServer) -> None:
    """With MAX_BODY_BYTES alike on both sides, a POST of exactly that size still fits logging's
    limit once the facade has added the message's UUID (logging's contract's ENVELOPE_BYTES)."""
    limit = 1024
    logging_server = await aiohttp_server(create_logging(LoggingSettings(max_body_bytes=limit)))
    facade = await make_facade(max_body_bytes=limit,
                               logging_url=str(logging_server.make_url("")).rstrip("/"))
    body = b'{"msg": "' + b"x" * (limit - 11) + b'"}'
    assert len(body) == limit

    resp = await facade.post("/facade", data=body, headers=JSON)

    assert resp.status == 200, await resp.text()
    assert stored(logging_server) == ["x" * (limit - 11)]


async def test_post_without_content_type_is_read_as_json(facade: Client) -> None:
    """A body sent with no Content-Type at all is still parsed as JSON."""
    resp = await facade.post("/facade", data=b'{"msg": "bare"}', skip_auto_headers=["Content-Type"])
    assert resp.status == 200


@pytest.mark.parametrize(("body", "status", "says"), [b[1:] for b in BAD_BODIES],
                         ids=[b[0] for b in BAD_BODIES])
async def test_bad_input_gets_a_clear_json_error_and_stores_nothing(
    facade: Client, logging_server: TestServer, body: bytes, status: int, says: str
) -> None:
    """Every malformed POST gets its 4xx {"status": "failure", "message": ...}; nothing is stored."""
    resp = await facade.post("/facade", data=body, headers=JSON)
    assert resp.status == status
    payload = await resp.json()
    assert payload["status"] == "failure"
    assert says in payload["message"]
    assert "Traceback" not in payload["message"]
    assert stored(logging_server) == []


async def test_body_over_the_limit_is_413(make_facade: MakeFacade, logging_server: TestServer) -> None:
    """A body larger than MAX_BODY_BYTES is refused with 413 before it is parsed."""
    facade = await make_facade(max_body_bytes=1024)
    resp = await facade.post("/facade", data=b'{"msg": "' + b"x" * 2000 + b'"}', headers=JSON)
    assert resp.status == 413
    body = await resp.json()
    assert body["status"] == "failure"
    assert body["message"] == "request body is over the limit of 1024 bytes"
    assert stored(logging_server) == []


async def test_wrong_content_type_is_415(facade: Client) -> None:
    """A form post (curl -d without -H) is told to send JSON."""
    resp = await facade.post("/facade", data={"msg": "x"})
    assert resp.status == 415
    assert "application/json" in (await resp.json())["message"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405_json(facade: Client, method: str) -> None:
    """Methods other than GET and POST get 405 with Allow and a JSON body."""
    resp = await facade.request(method, "/facade")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    body = await resp.json()
    assert body["status"] == "failure"
    assert method in body["message"]


async def test_unknown_path_is_404_json(facade: Client) -> None:
    """Unknown paths get a JSON 404, not aiohttp's text page."""
    resp = await facade.get("/nope")
    assert resp.status == 404
    assert await resp.json() == {"status": "failure", "message": "no such endpoint: GET /nope"}


async def test_idempotency_key_stores_once_and_returns_the_same_uuid(
    facade: Client, logging_server: TestServer
) -> None:
    """A client retrying with its Idempotency-Key gets the same UUID; the message is stored once."""
    headers = {"Idempotency-Key": "order-42"}
    first = await (await facade.post("/facade", json={"msg": "pay"}, headers=headers)).json()
    again = await (await facade.post("/facade", json={"msg": "pay"}, headers=headers)).json()
    assert first == again
    assert stored(logging_server) == ["pay"]


async def test_idempotency_key_reused_for_another_message_is_422(
    facade: Client, logging_server: TestServer
) -> None:
    """Same key, different text: 422, and the first message stays the only one."""
    headers = {"Idempotency-Key": "order-42"}
    await facade.post("/facade", json={"msg": "pay"}, headers=headers)
    resp = await facade.post("/facade", json={"msg": "refund"}, headers=headers)
    assert resp.status == 422
    assert "Idempotency-Key" in (await resp.json())["message"]
    assert stored(logging_server) == ["pay"]


async def test_malformed_idempotency_key_is_400(facade: Client, logging_server: TestServer) -> None:
    """A key with spaces or over 128 characters is refused."""
    for key in ("has space", "k" * 129):
        resp = await facade.post("/facade", json={"msg": "x"}, headers={"Idempotency-Key": key})
        assert resp.status == 400
    assert stored(logging_server) == []


async def test_get_pages_through_the_logs(facade: Client) -> None:
    """GET /facade?offset=&limit= returns a page of the ordered messages."""
    for i in range(5):
        await facade.post("/facade", json={"msg": f"m{i}"})
    resp = await facade.get("/facade", params={"offset": "1", "limit": "2"})
    assert (await resp.json())["logs"] == ["m1", "m2"]


@pytest.mark.parametrize("query", [{"limit": "-1"}, {"limit": "x"}, {"offset": "1.5"},
                                   {"limit": "10001"}, {"offset": "²"}, {"offset": "9" * 50}])
async def test_bad_paging_is_400(facade: Client, query: dict[str, str]) -> None:
    """offset and limit must be whole numbers in range."""
    resp = await facade.get("/facade", params=query)
    assert resp.status == 400
    assert (await resp.json())["status"] == "failure"


async def test_correlation_id_is_echoed_or_minted(facade: Client) -> None:
    """A client's X-Correlation-ID comes back as sent; without one (or a bad one) one is minted."""
    resp = await facade.get("/facade", headers={CORRELATION_HEADER: "trace-1"})
    assert resp.headers[CORRELATION_HEADER] == "trace-1"
    minted = (await facade.get("/facade")).headers[CORRELATION_HEADER]
    assert len(minted) == 32
    for bad in ("has spaces", "x" * 129, "<script>"):
        resp = await facade.get("/facade", headers={CORRELATION_HEADER: bad})
        assert resp.headers[CORRELATION_HEADER] != bad


async def test_error_responses_carry_the_correlation_id(facade: Client) -> None:
    """Even a 404 or a 422 echoes the correlation ID, so failures can be traced too."""
    for resp in (await facade.get("/nope", headers={CORRELATION_HEADER: "t-404"}),
                 await facade.post("/facade", json={}, headers={CORRELATION_HEADER: "t-404"})):
        assert resp.headers[CORRELATION_HEADER] == "t-404"


async def test_health(facade: Client) -> None:
    """GET /health answers without asking the other services."""
    resp = await facade.get("/health")
    body: dict[str, Any] = await resp.json()
    assert body == {"status": "ok", "service": "facade"}


async def test_a_precomputed_idempotency_uuid_no_longer_collides(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    """Someone who can call logging (holds RPC_SECRET) but not IDEMPOTENCY_SECRET pre-stores every
    UUID they can compute for a client's key; the client's POST with that key is still stored."""
    rpc_secret, key = "shared rpc secret", "order-42"
    logging = await aiohttp_server(create_logging(LoggingSettings(rpc_secret=rpc_secret)))
    attacker = await aiohttp_client(logging)  # type: ignore[arg-type]
    guesses = [KeyUuids()(key),  # the public default
               KeyUuids.from_settings(FacadeSettings(rpc_secret=rpc_secret))(key)]  # from RPC_SECRET
    for guess in guesses:
        body = orjson.dumps({"uuid": guess, "msg": "squatted"})
        resp = await attacker.post("/rpc/log", data=body,
                                   headers={**JSON, **Signer(rpc_secret).headers("/rpc/log", body)})
        assert resp.status == 200
    old_scheme = str(uuid.uuid5(uuid.UUID("3f1c2b1e-8d0a-4c5e-9f6b-2a7d4e1c9b30"), key))
    body = orjson.dumps({"uuid": old_scheme, "msg": "squatted"})
    resp = await attacker.post("/rpc/log", data=body,
                               headers={**JSON, **Signer(rpc_secret).headers("/rpc/log", body)})
    assert resp.status == 400  # the old version-5 form is not one logging takes any more

    facade = await aiohttp_client(create_facade(FacadeSettings(
        rpc_secret=rpc_secret, idempotency_secret="only the facades know this",
        logging_url=str(logging.make_url("")).rstrip("/"))))
    resp = await facade.post("/facade", json={"msg": "pay"}, headers={"Idempotency-Key": key})
    assert resp.status == 200
    assert (await resp.json())["uuid"] not in guesses
    assert stored(logging) == ["squatted", "squatted", "pay"]


async def test_logging_url_pointing_at_messages_is_a_502_misconfiguration(
    make_facade: MakeFacade, messages_server: TestServer
) -> None:
    """A facade sent to the wrong service gets "has no method": a server fault (502, logged as a
    misconfiguration), not the client's 422."""
    facade = await make_facade(logging_url=str(messages_server.make_url("")).rstrip("/"))
    with capture_logs() as logs:
        resp = await facade.post("/facade", json={"msg": "x"})
    assert resp.status == 502
    assert await resp.json() == {"status": "failure", "message": (
        "logging service refused the call (MethodNotFound): the services are misconfigured")}
    assert [line["downstream"] for line in logs if line["event"].endswith("misconfigured")] == ["logging"]
