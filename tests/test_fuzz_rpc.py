"""Property-based fuzz of the internal RPC endpoints (logging and messages), plus their security basics.

Each property runs its examples against one real logging (or messages) app on
a real socket. Oracles: the wire contract of ``resilience.rpc.server`` (200
``{"result": ...}``, else ``{"error": {"type", "message", "args"}}``, never a
5xx) and a model of the logging store (only a valid, new ``log`` call adds a
message; nothing else changes it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import event, given
from hypothesis import strategies as st
from yarl import URL

from facade.settings import FacadeSettings
from logging_service.paging import MAX_PAGE
from logging_service.service import LoggingService
from tests.conftest import stored
from tests.oracle import leaked_internals, own_words
from tests.strategies import FUZZ, HEADER_TEXT, JSON_VALUES, MAX_MSG, TEXT, encode, weighted

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[TestServer], Awaitable[Client]]

JSON_HEADERS = {"Content-Type": "application/json"}
# orjson reads integers outside this range as floats.
JSON_INT_RANGE = range(-(2**63), 2**64)


# --- Strategies -------------------------------------------------------------------------------------

METHOD_NAMES = weighted(
    (6, st.sampled_from(["log", "messages", "count", "message"])),
    (2, st.sampled_from(["__init__", "__class__", "store", "name", "config", "max_msg_chars",
                         "Log", "log ", "log/", "..", "%00", "health"])),
    (2, st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)),
)
KWARG_NAMES = st.sampled_from(["uuid", "msg", "offset", "limit", "self", "kwargs", ""]) | TEXT
CONTENT_TYPES = weighted(
    (8, st.sampled_from(["application/json", "application/json; charset=utf-8", "application/x+json"])),
    (2, st.sampled_from([None, "text/plain", "application/x-www-form-urlencoded", "", "json", "*/*",
                         "multipart/form-data; boundary=x", "application/jsonx"])),
    (1, HEADER_TEXT),
)
BODIES = weighted(
    (2, st.just(b"{}")),
    (4, st.builds(encode, st.dictionaries(KWARG_NAMES, JSON_VALUES, max_size=4), st.booleans())),
    (2, st.builds(encode, JSON_VALUES, st.booleans())),
    (1, st.binary(max_size=64)),
    (1, st.sampled_from([b"", b" ", b"{", b"{}", b"[]", b"null", b'{"msg": NaN}', b'{"uuid": "\\ud800"}',
                         b"[" * 2000 + b"]" * 2000, b'{"offset": 1e400}', b"\xef\xbb\xbf{}"])),
)
UUIDS = weighted((6, st.uuids(version=4).map(str)), (4, st.one_of(
    st.uuids().map(str),  # any version: only 4 and 8 are forms the facade mints
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: u.urn),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: f" {u}"),
    TEXT, JSON_VALUES,
)))
MESSAGES = weighted(
    (6, st.text(min_size=1, max_size=30)),
    (4, st.one_of(TEXT, st.sampled_from(["", "\x00", "x" * MAX_MSG, "x" * (MAX_MSG + 1), "é" * MAX_MSG]),
                  JSON_VALUES)),
)
PAGE_NUMBERS = st.one_of(st.none(), st.integers(-3, 12), st.integers(-(2**70), 2**70),
                         st.integers(MAX_PAGE - 2, MAX_PAGE + 2), JSON_VALUES)


@dataclass
class RpcStack:
    """Clients of the real logging and messages apps, and what logging has acknowledged."""

    logging: Client
    messages: Client
    logging_server: TestServer
    acknowledged: dict[str, str] = field(default_factory=dict)

    async def post(self, client: Client, method: str, body: bytes, content_type: str | None
                   ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``/rpc/<method>`` (the name percent-encoded); return status and JSON reply."""
        root = client.make_url("/")
        url = URL.build(scheme=root.scheme, host=root.host or "", port=root.port, path=f"/rpc/{method}")
        headers = {} if content_type is None else {"Content-Type": content_type}
        skip = ["Content-Type"] if content_type is None else []
        async with client.session.post(url, data=body, headers=headers, skip_auto_headers=skip) as resp:
            raw = await resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type")
        assert status < 500, raw[:500]
        assert not leaked_internals(own_words(raw), method, body), raw[:500]
        assert ctype == "application/json", raw[:500]
        reply = json.loads(raw)
        check_wire_shape(status, reply)
        return status, reply


def check_wire_shape(status: int, reply: Any) -> None:
    """200 is exactly ``{"result": ...}``; anything else ``{"error": {"type", "message", "args"}}``,
    plus the ``path`` a declared error is re-raised by."""
    assert isinstance(reply, dict)
    if status == 200:
        assert set(reply) == {"result"}
        return
    assert set(reply) == {"error"}
    error = reply["error"]
    assert isinstance(error, dict)
    assert set(error) - {"path"} == {"type", "message", "args"}
    assert isinstance(error["type"], str)
    assert error["type"].isidentifier()
    if "path" in error:
        assert error["path"].endswith(f".{error['type']}")
    assert isinstance(error["message"], str)
    assert isinstance(error["args"], list)


@pytest.fixture
async def rpc(logging_server: TestServer, messages_server: TestServer,
              aiohttp_client: AiohttpClient) -> RpcStack:
    """Clients of the real logging and messages RPC apps."""
    return RpcStack(await aiohttp_client(logging_server), await aiohttp_client(messages_server),
                    logging_server)


def expected_log(stack: RpcStack, kwargs: Any) -> tuple[int, str | dict[str, bool]]:
    """The status and the error type or result the model predicts for ``log(**kwargs)``."""
    if not isinstance(kwargs, dict) or set(kwargs) != {"uuid", "msg"}:
        return 400, "InvalidArgument"
    uid, msg = kwargs["uuid"], kwargs["msg"]
    if not isinstance(uid, str) or not isinstance(msg, str):
        return 400, "InvalidArgument"
    try:
        parsed = uuid.UUID(uid)
    except ValueError:
        minted = False
    else:  # the facade's forms: canonical text of a version 4 (random) or 8 (key-derived) UUID
        minted = str(parsed) == uid and parsed.variant == uuid.RFC_4122 and parsed.version in (4, 8)
    if not minted or not 1 <= len(msg) <= MAX_MSG or msg.isspace():
        return 400, "InvalidArgument"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in msg):  # a lone surrogate is not JSON text
        return 400, "InvalidArgument"
    known = stack.acknowledged.get(uid)
    if known is None:
        return 200, {"stored": True}
    if known != msg:
        return 409, "Conflict"
    return 200, {"stored": False, "duplicate": True}


def as_int(value: Any) -> int | None:
    """``value`` as the RPC server reads it, if that is an integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value in JSON_INT_RANGE:
        return value
    return None


# --- Properties ------------------------------------------------------------------------------------


@FUZZ
@given(service=st.sampled_from(["logging", "messages"]), method=METHOD_NAMES, body=BODIES,
       content_type=CONTENT_TYPES)
async def test_any_call_is_answered_on_the_wire_contract(
    rpc: RpcStack, service: str, method: str, body: bytes, content_type: str | None
) -> None:
    """Any method, body and Content-Type: no 5xx, the result or error shape, no write but a valid log."""
    before = stored(rpc.logging_server)
    client = rpc.logging if service == "logging" else rpc.messages
    status, reply = await rpc.post(client, method, body, content_type)
    event(f"{service} -> {status}")
    after = stored(rpc.logging_server)
    if service == "logging" and method == "count" and status == 200:
        assert reply["result"] == len(before)
    if service == "logging" and method == "log" and status == 200:
        kwargs = json.loads(body)
        assert (status, reply["result"]) == expected_log(rpc, kwargs)
        if reply["result"] == {"stored": True}:
            assert after == [*before, kwargs["msg"]]
            rpc.acknowledged[kwargs["uuid"]] = kwargs["msg"]
            return
    assert after == before


@FUZZ
@given(kwargs=weighted(
    (8, st.fixed_dictionaries({"uuid": UUIDS, "msg": MESSAGES})),
    (1, st.fixed_dictionaries({}, optional={"uuid": UUIDS, "msg": MESSAGES, "extra": JSON_VALUES})),
    (1, JSON_VALUES),
), reuse=st.booleans())
async def test_log_calls_follow_the_store_model(rpc: RpcStack, kwargs: Any, reuse: bool) -> None:
    """log() stores a canonical UUID's 1..10000-char msg once; a repeat is a duplicate, a clash 409."""
    if reuse and rpc.acknowledged and isinstance(kwargs, dict) and "uuid" in kwargs:
        kwargs["uuid"] = next(iter(rpc.acknowledged))
    before = stored(rpc.logging_server)
    status, reply = await rpc.post(rpc.logging, "log", encode(kwargs, True), "application/json")
    event(f"log -> {status}")
    want_status, want = expected_log(rpc, kwargs)
    assert status == want_status, reply
    if status == 200:
        assert reply["result"] == want
    else:
        assert reply["error"]["type"] == want
    if want == {"stored": True}:
        assert stored(rpc.logging_server) == [*before, kwargs["msg"]]
        rpc.acknowledged[kwargs["uuid"]] = kwargs["msg"]
    else:
        assert stored(rpc.logging_server) == before


@FUZZ
@given(offset=PAGE_NUMBERS, limit=PAGE_NUMBERS, present=st.sets(st.sampled_from(["offset", "limit"])),
       seed=st.lists(st.text(min_size=1, max_size=5), max_size=3))
async def test_messages_calls_answer_the_right_page(rpc: RpcStack, offset: Any, limit: Any,
                                                    present: set[str], seed: list[str]) -> None:
    """messages(): an int offset >= 0 and a 0..10000 limit (absent: 10000) give that slice, with
    next_offset while messages remain; anything else 400."""
    for msg in seed:
        await rpc.post(rpc.logging, "log", encode({"uuid": str(uuid.uuid4()), "msg": msg}, True),
                       "application/json")
    kwargs = {name: value for name, value in (("offset", offset), ("limit", limit)) if name in present}
    status, reply = await rpc.post(rpc.logging, "messages", encode(kwargs, True), "application/json")
    event(f"messages -> {status}")
    start = as_int(kwargs.get("offset", 0))
    size = as_int(kwargs.get("limit", MAX_PAGE))
    if start is not None and start >= 0 and size is not None and 0 <= size <= MAX_PAGE:
        assert status == 200, reply
        everything = stored(rpc.logging_server)
        logs = everything[start:start + size]
        more = {"next_offset": start + len(logs)} if start + len(logs) < len(everything) else {}
        assert reply["result"] == {"logs": logs, **more}
    else:
        assert status == 400
        assert reply["error"]["type"] == "InvalidArgument"


@FUZZ
@given(kwargs=weighted((1, st.just({})), (2, st.dictionaries(KWARG_NAMES, JSON_VALUES, max_size=3)),
                       (1, JSON_VALUES)))
async def test_messages_service_takes_no_arguments(rpc: RpcStack, kwargs: Any) -> None:
    """message() answers its static text for {} and InvalidArgument for any other arguments."""
    status, reply = await rpc.post(rpc.messages, "message", encode(kwargs, True), "application/json")
    event(f"message -> {status}")
    if kwargs == {}:
        assert (status, reply) == (200, {"result": "not implemented yet"})
    else:
        assert (status, reply["error"]["type"]) == (400, "InvalidArgument")


# --- Security basics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body"), [
    (None, b"{}"), ("text/plain", b"{}"), ("application/x-www-form-urlencoded", b"a=1"),
    ("multipart/form-data; boundary=x", b"--x--"), ("application/jsonx", b"{}"),
])
async def test_non_json_is_refused_with_415(rpc: RpcStack, content_type: str | None, body: bytes) -> None:
    """An RPC call must declare JSON: anything else (or nothing) is a 415 error body, not a call."""
    status, reply = await rpc.post(rpc.logging, "count", body, content_type)
    assert status == 415
    assert reply["error"]["type"] == "InvalidArgument"


@pytest.mark.parametrize("method", ["nope", "__init__", "store", "_is_canonical_uuid", "LOG"])
async def test_unknown_methods_are_404(rpc: RpcStack, method: str) -> None:
    """Only @rpc methods are callable: attributes, dunders and helpers answer 404 MethodNotFound."""
    status, reply = await rpc.post(rpc.logging, method, b"{}", "application/json")
    assert (status, reply["error"]["type"]) == (404, "MethodNotFound")


async def test_wrong_http_method_and_path_are_json_errors(rpc: RpcStack) -> None:
    """GET on an RPC path is a 405 error body; an unknown path a 404 error body."""
    for method, path, status in (("GET", "/rpc/count", 405), ("POST", "/nope", 404), ("POST", "/rpc/", 404)):
        resp = await rpc.logging.request(method, path, data=b"{}", headers=JSON_HEADERS)
        assert resp.status == status
        check_wire_shape(resp.status, await resp.json())


async def test_body_over_the_limit_is_413(rpc: RpcStack, logging_server: TestServer) -> None:
    """A body over the logging app's limit is a 413 error body and stores nothing."""
    limit = FacadeSettings().max_body_bytes + 6 * MAX_MSG
    body = encode({"uuid": str(uuid.uuid4()), "msg": "x" * limit}, True)
    status, reply = await rpc.post(rpc.logging, "log", body, "application/json")
    assert (status, reply["error"]["type"]) == (413, "RequestEntityTooLarge")
    assert stored(logging_server) == []


async def test_unexpected_failure_is_a_bare_500(rpc: RpcStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A method that raises an undeclared exception answers InternalError with no detail or traceback."""
    def explode(self: LoggingService) -> int:
        raise ZeroDivisionError("secret detail at /srv/app/store.py")

    monkeypatch.setattr(LoggingService, "count", explode)
    resp = await rpc.logging.post("/rpc/count", data=b"{}", headers=JSON_HEADERS)
    assert resp.status == 500
    assert await resp.json() == {"error": {"type": "InternalError", "message": "internal error",
                                           "args": ["internal error"]}}


@pytest.mark.parametrize("headers", [{"X-Big": "v" * 9000}, {f"X-Many-{i}": "v" for i in range(200)}],
                         ids=["one long header", "200 headers"])
async def test_oversized_headers_are_refused_without_a_5xx(rpc: RpcStack, headers: dict[str, str]) -> None:
    """Over-long or too many headers get a 4xx with no traceback, and the service keeps serving."""
    resp = await rpc.logging.post("/rpc/count", data=b"{}", headers={**JSON_HEADERS, **headers})
    assert 400 <= resp.status < 500
    assert "Traceback" not in await resp.text()
    assert (await rpc.logging.get("/health")).status == 200


async def test_corrupt_gzip_body_is_a_400(rpc: RpcStack) -> None:
    """A body declared gzip that is not gzip is the caller's fault: 400, not 500."""
    resp = await rpc.logging.post("/rpc/count", data=b"{}",
                                  headers={**JSON_HEADERS, "Content-Encoding": "gzip"})
    assert resp.status == 400
