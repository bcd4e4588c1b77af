"""Property-based fuzz of the facade, through the real RPC layer, plus its security basics.

The facade under test is wired to the real logging and messages RPC apps on
real sockets (the ``make_facade`` fixture), so every fuzzed request goes
through validation, the retry and breaker policy, the RPC client and server
and the logging store. Hypothesis runs each property's examples against one
set of apps; the properties hold whatever earlier examples stored.

Oracles: the OpenAPI document the facade serves (every reply must be
documented, with a valid JSON body), and the logging store (a reply other
than 200 stored nothing; a 200 POST stored exactly its ``msg``, once).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy
from yarl import URL

import facade.app
import logging_service.app
import messages.app
from facade.openapi import CORRELATION_ID_PATTERN, IDEMPOTENCY_KEY_PATTERN, build_openapi
from facade.service import FacadeService
from resilience import Settings
from resilience.contract import KeyUuids
from resilience.correlation import HEADER
from resilience.paging import MAX_PAGE
from tests.conftest import stored
from tests.openapi_check import reply_errors

Client = TestClient[web.Request, web.Application]
MakeFacade = Callable[..., Awaitable[Client]]

# Examples per property; raise it for a longer campaign (FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_*.py).
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
MAX_MSG = Settings().max_msg_chars
MAX_BODY = Settings().max_body_bytes
DOCUMENT = build_openapi(Settings())

# What a reply body must never show a client: traces, source paths, object reprs.
INTERNALS = ("Traceback", 'File "', ".py\"", "site-packages", "object at 0x", "<class ", "<function ")
# Methods the HTTP parser knows; any other token is refused by the parser (a plain-text 400).
PARSER_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND",
                  "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT")
# Over this many bytes in one header line, the HTTP parser refuses the request (400).
PARSER_LINE_LIMIT = 8190
# Headers that change message framing or encoding are not fuzzed here: a corrupt
# Content-Encoding is a known failure, pinned by test_corrupt_gzip_body_is_a_400.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "content-encoding", "host",
                             "connection", "keep-alive", "expect", "upgrade", "te", "trailer"})


# --- Strategies -------------------------------------------------------------------------------------

T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Draw from one of ``choices``, picked in proportion to its weight."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(lambda strategy: strategy)


TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                min_size=1, max_size=20)
# Text including NUL and other controls, and lone surrogates (escaped in JSON, or raw as CESU bytes).
TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=30)
# A message the facade accepts: 1 or more characters, not all whitespace.
MESSAGE_TEXT = st.text(min_size=1, max_size=20).filter(lambda text: not text.isspace())
# What an HTTP client can put in a header value: no CR, LF or other C0 controls.
HEADER_TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs"]) | st.just("\t"), max_size=40)

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12)


def encode(value: Any, ascii_only: bool) -> bytes:
    """``value`` as JSON bytes; lone surrogates come out as ``\\udXXX`` escapes or as invalid UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


ODD_BODIES = st.sampled_from([
    b"", b" ", b"\t\r\n", b"null", b"{}", b"[]", b'""', b"0", b"-0", b"1e400", b"NaN",
    b'\xef\xbb\xbf{"msg": "bom"}', b'{"msg": "x"} trailing', b'{"msg": "x"}\x00', b"{'msg': 'x'}",
    b'{"msg": NaN}', b'{"msg": Infinity}', b'{"msg": 1e400}', b'{"msg": "a", "msg": "b"}',
    b'/* c */ {"msg": "x"}', b'{"msg": "\\u0000"}', b'{"msg": "\\ud800"}', b'{"msg": "\\udc00\\ud800"}',
    b'{"msg": "\\ud83d\\ude00"}', b'{"msg": "x"', b'{"msg": "\\"}', b'{"msg": "\\q"}', b'{msg: "x"}',
    b'{"msg": "\xed\xa0\x80"}', b'{"msg": "\xc0\xaf"}', b'{"msg": "\xf4\x90\x80\x80"}',
    b'{"msg": "x", "__proto__": {"admin": true}}', b'{"": "x"}', b'{"MSG": "x"}', b'{"msg ": "x"}',
])


@st.composite
def long_messages(draw: st.DrawFn) -> bytes:
    """A msg right around the length limit, in one- to four-byte characters."""
    char = draw(st.sampled_from(["x", "é", "€", "😀", "\x00"]))
    return encode({"msg": char * draw(st.integers(MAX_MSG - 3, MAX_MSG + 3))}, draw(st.booleans()))


@st.composite
def huge_bodies(draw: st.DrawFn) -> bytes:
    """A body right around the byte limit."""
    size = draw(st.integers(MAX_BODY - 16, MAX_BODY + 16))
    return b'{"msg": "' + b"y" * (size - 11) + b'"}'


@st.composite
def deep_bodies(draw: st.DrawFn) -> bytes:
    """Arrays or objects nested up to well past the JSON parser's depth limit."""
    depth = draw(st.integers(1, 3000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    core = opener * depth + b"1" + closer * depth
    return b'{"msg": ' + core + b"}" if draw(st.booleans()) else core


@st.composite
def invalid_utf8_messages(draw: st.DrawFn) -> bytes:
    """A msg string holding raw bytes that may not be UTF-8."""
    raw = draw(st.binary(min_size=1, max_size=20)).replace(b'"', b"").replace(b"\\", b"")
    return b'{"msg": "' + raw + b'"}'


VALID_BODIES = st.one_of(
    st.builds(encode, st.fixed_dictionaries({"msg": TEXT}, optional={"extra": JSON_VALUES}), st.booleans()),
    st.builds(encode, st.fixed_dictionaries({"msg": st.text(min_size=1, max_size=40)}), st.just(False)),
    long_messages(),
)
INVALID_BODIES = st.one_of(
    st.binary(max_size=64),
    st.builds(encode, JSON_VALUES, st.booleans()),
    st.builds(encode, st.fixed_dictionaries({"msg": JSON_VALUES}), st.booleans()),
    ODD_BODIES, huge_bodies(), deep_bodies(), invalid_utf8_messages(),
)
# About half the bodies hold a msg string; whether it is acceptable is for the facade to say.
BODIES = weighted((1, VALID_BODIES), (1, INVALID_BODIES))
CONTENT_TYPES = weighted(
    (8, st.sampled_from([None, "application/json", "application/json; charset=utf-8"])),
    (2, st.sampled_from([
        "application/json;charset=latin-1",
        "APPLICATION/JSON", "application/problem+json", "application/vnd.api+json; v=1", "text/plain",
        "text/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "*/*",
        "application/octet-stream", "", ";", "application/jsonx", "json", "application/json, text/html",
        "application/json; charset=\u00ff", "application/json; boundary=\"unterminated",
    ])),
    (1, HEADER_TEXT),
)
GOOD_KEYS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
BAD_KEYS = st.sampled_from(["k" * 129, "", " ", "a b", "é", "key\tkey", "\u00a0k"]) | HEADER_TEXT
IDEMPOTENCY_KEYS = weighted((4, st.none()), (4, GOOD_KEYS), (2, BAD_KEYS))
CORRELATION_IDS = st.one_of(
    st.none(), st.from_regex(CORRELATION_ID_PATTERN, fullmatch=True), HEADER_TEXT,
    st.sampled_from(["x" * 129, "<script>", "a\tb", "../../etc/passwd"]),
)
# Small offsets and limits, so pages cut into what is stored; then everything else.
QUERY_VALUES = weighted(
    (5, st.integers(0, 6).map(str)),
    (2, st.integers(-5, 12_000).map(str) | st.integers(0, 10**12).map(str)),
    (2, st.sampled_from(["", " 1", "1 ", "+1", "-0", "1.0", "1e3", "0x10", "\u0661", "\u00b2", "9" * 50,
                         "00000000001", "NaN"])),
    (1, HEADER_TEXT),
)
QUERIES = weighted(
    (9, st.lists(st.tuples(st.sampled_from(["offset", "limit"]) | TOKEN, QUERY_VALUES), max_size=4)),
    (1, HEADER_TEXT),
)
PATHS = weighted(
    (4, st.sampled_from(["/facade", "/health", "/openapi.json"])),
    (2, st.sampled_from(["/", "/facade/", "/FACADE", "/rpc/log", "/facade/../health", "/%66acade",
                         "/facade%00", "/health;x", "/openapi.json/", "/facade?"])),
    (2, st.text(st.characters(exclude_categories=["Cs"]), max_size=30).map(lambda p: "/" + p)),
    (2, st.text("abcXYZ019-._~!$&'()*+,;=:@/%", max_size=30).map(lambda p: "/" + p)),
)
METHODS = weighted((6, st.sampled_from(["GET", "POST", "HEAD"])), (3, st.sampled_from(PARSER_METHODS)),
                   (1, TOKEN.map(str.upper)))
EXTRA_HEADERS = st.dictionaries(
    TOKEN.filter(lambda name: name.lower() not in FRAMING_HEADERS | {"content-type", "idempotency-key",
                                                                   HEADER.lower()}),
    weighted((9, HEADER_TEXT), (1, st.integers(8100, 8300).map(lambda n: "v" * n))),
    max_size=3,
)


@dataclass
class FuzzRequest:
    """One request as the fuzz sends it."""

    method: str
    path: str
    query: list[tuple[str, str]] | str
    body: bytes | None
    content_type: str | None
    idempotency_key: str | None
    correlation_id: str | None
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        """The headers to send, Content-Type included when set."""
        headers = dict(self.extra)
        for name, value in (("Content-Type", self.content_type), ("Idempotency-Key", self.idempotency_key),
                            (HEADER, self.correlation_id)):
            if value is not None:
                headers[name] = value
        return headers

    def parser_may_refuse(self) -> bool:
        """Whether the HTTP parser itself may answer a plain-text 400 before the app runs."""
        too_long = any(len(k) + len(v.encode()) + 2 > PARSER_LINE_LIMIT for k, v in self.headers().items())
        return self.method not in PARSER_METHODS or too_long


def requests(methods: st.SearchStrategy[str] = METHODS,
             paths: st.SearchStrategy[str] = PATHS) -> st.SearchStrategy[FuzzRequest]:
    """Requests with any method, path, query, body and headers."""
    return st.builds(FuzzRequest, method=methods, path=paths, query=QUERIES,
                     body=weighted((1, st.none()), (9, BODIES)), content_type=CONTENT_TYPES,
                     idempotency_key=IDEMPOTENCY_KEYS, correlation_id=CORRELATION_IDS,
                     extra=EXTRA_HEADERS)


# --- The apps and the oracle -----------------------------------------------------------------------


@dataclass
class Reply:
    """What came back."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL


@dataclass
class Stack:
    """The facade client, the logging server behind it, and what the facade has acknowledged."""

    facade: Client
    logging: TestServer
    acknowledged: dict[str, str] = field(default_factory=dict)

    async def send(self, req: FuzzRequest) -> Reply:
        """Send ``req`` exactly as built (paths and queries percent-encoded, headers verbatim).

        A HEAD the HTTP parser refuses is skipped: aiohttp's server answers it
        with a body, which no HTTP client can read after a HEAD.
        """
        assume(not (req.method == "HEAD" and req.parser_may_refuse()))
        root = self.facade.make_url("/")
        url = URL.build(scheme=root.scheme, host=root.host or "", port=root.port,
                        path=req.path).with_query(req.query)
        skip = [] if req.content_type is not None else ["Content-Type"]
        async with self.facade.session.request(req.method, url, data=req.body, headers=req.headers(),
                                               skip_auto_headers=skip) as resp:
            return Reply(resp.status, resp.headers, await resp.read(), resp.url)


@pytest.fixture
async def stack(make_facade: MakeFacade, logging_server: TestServer) -> Stack:
    """A facade wired to the real logging and messages apps."""
    return Stack(await make_facade(), logging_server)


def leaked_internals(body: bytes, echoed: str = "") -> list[str]:
    """The markers of Python internals in ``body`` (ignoring text the client sent and got echoed)."""
    text = body.decode("utf-8", "replace")
    if echoed:
        text = text.replace(echoed, "")
    return [marker for marker in INTERNALS if marker in text]


def check_reply(stack: Stack, req: FuzzRequest, reply: Reply, before: list[str]) -> None:
    """Every property a reply to any request must have."""
    event(f"{req.method if req.method in ('GET', 'POST', 'HEAD') else 'other method'} -> {reply.status}")
    assert reply.status < 500, reply.body[:500]
    assert not leaked_internals(reply.body, reply.url.path), reply.body[:500]
    if reply.status == 400 and reply.headers.get("Content-Type", "").startswith("text/plain"):
        # Refused by the HTTP parser before the app saw it; only for requests it may refuse.
        assert req.parser_may_refuse(), reply.body[:500]
        assert stored(stack.logging) == before
        return
    assert reply_errors(DOCUMENT, req.method, reply.url.path, reply.status, reply.headers, reply.body) == []
    check_correlation_id(req.correlation_id, reply.headers[HEADER])
    after = stored(stack.logging)
    if req.method == "POST" and reply.url.path == "/facade" and reply.status == 200:
        check_stored_once(stack, req, json.loads(reply.body)["uuid"], before, after)
    else:
        assert after == before, (reply.status, reply.body[:200])
    if req.method == "GET" and reply.url.path == "/facade" and reply.status == 200:
        offset = int(reply.url.query.get("offset", "0"))
        end = offset + int(reply.url.query.get("limit", MAX_PAGE))
        page = json.loads(reply.body)
        assert page["logs"] == after[offset:end]
        assert page.get("next_offset") == (offset + len(page["logs"])
                                           if offset + len(page["logs"]) < len(after) else None)


def check_correlation_id(sent: str | None, echoed: str) -> None:
    """A sane client ID comes back as sent (trimmed as HTTP trims it); anything else is replaced."""
    trimmed = None if sent is None else sent.strip(" \t")
    if trimmed and re.fullmatch(CORRELATION_ID_PATTERN[1:-1], trimmed):
        assert echoed == trimmed
    else:
        assert re.fullmatch("[0-9a-f]{32}", echoed)


def check_stored_once(stack: Stack, req: FuzzRequest, message_id: str, before: list[str],
                      after: list[str]) -> None:
    """A 200 POST stored the body's msg exactly once under the UUID it answered."""
    msg = json.loads(req.body or b"")["msg"]
    if req.idempotency_key is not None:
        assert message_id == KeyUuids()(req.idempotency_key.strip(" \t"))
    if message_id in stack.acknowledged:
        assert stack.acknowledged[message_id] == msg
        assert after == before
    else:
        assert after == [*before, msg]
        stack.acknowledged[message_id] = msg


# --- Properties ------------------------------------------------------------------------------------


@FUZZ
@given(req=requests())
async def test_any_request_gets_a_documented_reply(stack: Stack, req: FuzzRequest) -> None:
    """Any method, path, query, body and headers: no 5xx, no internals, a documented reply, no stray write."""
    before = stored(stack.logging)
    check_reply(stack, req, await stack.send(req), before)


@FUZZ
@given(req=requests(methods=st.just("POST"), paths=st.just("/facade")))
async def test_any_post_stores_its_message_once_or_nothing(stack: Stack, req: FuzzRequest) -> None:
    """Any POST /facade: a 200 stored exactly its msg once; anything else stored nothing."""
    before = stored(stack.logging)
    check_reply(stack, req, await stack.send(req), before)


@FUZZ
@given(req=requests(methods=st.sampled_from(["GET", "HEAD"]), paths=st.just("/facade")),
       seed=st.lists(MESSAGE_TEXT, max_size=4))
async def test_any_get_answers_the_right_page(stack: Stack, req: FuzzRequest, seed: list[str]) -> None:
    """Any GET /facade query: a 200 holds exactly the requested slice of the store; a 400 says why."""
    for msg in seed:
        assert (await stack.facade.post("/facade", json={"msg": msg})).status == 200
    before = stored(stack.logging)
    check_reply(stack, req, await stack.send(req), before)


@FUZZ
@given(key=weighted((2, GOOD_KEYS), (1, BAD_KEYS)), first=MESSAGE_TEXT, second=MESSAGE_TEXT)
async def test_idempotency_key_model(stack: Stack, key: str, first: str, second: str) -> None:
    """Same key and msg: same UUID, stored once; same key, other msg: 422; a malformed key: 400, no write."""
    headers = {"Idempotency-Key": key}
    before = stored(stack.logging)
    one = await stack.facade.post("/facade", json={"msg": first}, headers=headers)
    trimmed = key.strip(" \t")
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN[1:-1], trimmed):
        assert one.status == 400
        assert stored(stack.logging) == before
        return
    message_id = KeyUuids()(trimmed)
    if stack.acknowledged.get(message_id, first) != first:
        assert one.status == 422
        assert stored(stack.logging) == before
        return
    assert one.status == 200
    assert (await one.json())["uuid"] == message_id
    again = await stack.facade.post("/facade", json={"msg": first}, headers=headers)
    assert (await again.json())["uuid"] == message_id
    other = await stack.facade.post("/facade", json={"msg": second}, headers=headers)
    assert other.status == (200 if second == first else 422)
    expected = before if message_id in stack.acknowledged else [*before, first]
    assert stored(stack.logging) == expected
    stack.acknowledged[message_id] = first


# --- Security basics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("main", [facade.app.main, logging_service.app.main, messages.app.main],
                         ids=["facade", "logging", "messages"])
def test_services_listen_on_loopback_by_default(monkeypatch: pytest.MonkeyPatch,
                                                main: Callable[[], None]) -> None:
    """With no HOST in the environment, every service process binds 127.0.0.1 only."""
    for name in ("HOST", "FACADE_PORT", "LOGGING_PORT", "MESSAGES_PORT", "LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("resilience.runner.configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr("resilience.runner.serve", lambda app, **kwargs: calls.append(kwargs))
    main()
    assert Settings().host == "127.0.0.1"
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
    {HEADER: "c" * 9000},
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
    return web.json_response({"error": {"type": "Busy", "message": "busy", "args": ["busy"]}},
                             status=503, headers={"Retry-After": "inf"})


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
