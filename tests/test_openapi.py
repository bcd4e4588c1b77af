"""GET /openapi.json: the document is valid, complete, and the facade's real replies conform to it.

The document is checked with openapi-spec-validator, the replies with
openapi-core and jsonschema (``tests/openapi_oracle.py``); schemathesis runs
against the live facade in ``tests/test_fuzz_openapi.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from facade.keys import SETTINGS
from facade.openapi import PLACEHOLDER, build_openapi, document_values, template
from facade.settings import FacadeSettings
from resilience.rpc.server import error_body
from resilience.runtime.web import json_response
from tests.conftest import MakeFacade
from tests.openapi_oracle import Contract, contract, reply_errors

Client = TestClient[web.Request, web.Application]
AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]
JSON_HEADERS = {"Content-Type": "application/json"}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
async def facade(make_facade: MakeFacade) -> Client:
    """A facade wired to the real logging and messages test servers."""
    return await make_facade()


@pytest.fixture
async def document(facade: Client) -> dict[str, Any]:
    """The document as the facade serves it."""
    resp = await facade.get("/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = json.loads(await resp.read())
    return doc


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


async def test_served_document_is_strict_json_for_openapi_3_1(facade: Client) -> None:
    """GET /openapi.json answers 200 application/json that strict JSON parsing accepts, OpenAPI 3.1."""
    resp = await facade.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    doc = json.loads(await resp.read(), parse_constant=refuse)
    assert doc["openapi"] == "3.1.0"
    assert {"title", "version"} <= set(doc["info"])
    assert doc == build_openapi(facade.app[SETTINGS])


async def test_document_lists_exactly_the_routes_the_router_has(
    facade: Client, document: dict[str, Any]
) -> None:
    """Every (method, path) in app.router is documented, and nothing else is."""
    routed = {(route.method.upper(), route.resource.canonical)
              for route in facade.app.router.routes() if route.resource is not None}
    assert routed == _operations(document)


def test_operation_ids_are_unique() -> None:
    """Every operation has its own operationId, as OpenAPI requires."""
    doc = build_openapi(FacadeSettings())
    ids = [operation["operationId"] for item in doc["paths"].values()
           for method, operation in item.items() if method in HTTP_METHODS]
    assert len(ids) == len(set(ids)) == len(_operations(doc))


def test_document_states_the_configured_limits() -> None:
    """Body and message limits come from the settings the facade runs with."""
    doc = build_openapi(FacadeSettings(max_msg_chars=50, max_body_bytes=1000, body_read_timeout=2.5,
                                 max_page_bytes=4096, max_in_flight=7))
    msg = doc["components"]["schemas"]["PostMessageRequest"]["properties"]["msg"]
    assert (msg["minLength"], msg["maxLength"]) == (1, 50)
    responses = doc["components"]["responses"]
    assert "1000 bytes" in responses["PayloadTooLarge"]["description"]
    assert "2.5 s" in responses["RequestTimeout"]["description"]
    assert "limit of 7 requests in flight" in responses["ServiceUnavailable"]["description"]
    assert "4096 bytes" in doc["components"]["schemas"]["LogsResponse"]["properties"]["logs"]["description"]
    params = doc["components"]["parameters"]
    assert (params["Limit"]["schema"]["minimum"], params["Limit"]["schema"]["maximum"]) == (0, 10_000)
    assert params["Offset"]["schema"]["maximum"] == 1_000_000_000


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or the component its ``$ref`` names."""
    if "$ref" not in node:
        return node
    kind, _, name = node["$ref"].removeprefix("#/components/").partition("/")
    found: dict[str, Any] = document["components"][kind][name]
    return found


def test_errors_headers_and_parameters_are_documented() -> None:
    """All the error statuses, Retry-After, Allow, Idempotency-Key and X-Correlation-ID are described."""
    doc = build_openapi(FacadeSettings())
    post = doc["paths"]["/facade"]["post"]
    assert {"200", "400", "408", "413", "415", "422", "502", "503"} <= set(post["responses"])
    responses = doc["components"]["responses"]
    for name in ("NotFound", "MethodNotAllowed", "ServiceUnavailable"):
        assert responses[name]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Failure"}
    assert "Retry-After" in _resolve(doc, post["responses"]["503"])["headers"]
    assert "Allow" in responses["MethodNotAllowed"]["headers"]
    names = {_resolve(doc, p)["name"] for p in post["parameters"]}
    assert names == {"Idempotency-Key", "X-Correlation-ID", "traceparent", "tracestate"}


@pytest.mark.parametrize("settings", [FacadeSettings(), FacadeSettings(max_msg_chars=50, max_body_bytes=1000,
                                                           body_read_timeout=2.5, max_in_flight=7)],
                         ids=["shipped", "configured"])
def test_document_is_valid_openapi_3_1(settings: FacadeSettings) -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.1, under shipped and changed settings."""
    validate(build_openapi(settings))


def test_spec_validator_refuses_a_broken_document() -> None:
    """The validator is no rubber stamp: a parameter in a place OpenAPI 3.1 has no such thing is refused."""
    doc = build_openapi(FacadeSettings())
    doc["components"]["parameters"]["Offset"]["in"] = "body"
    with pytest.raises(OpenAPIValidationError):
        validate(doc)


def _placeholders(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _placeholders(key)
            yield from _placeholders(value)
    elif isinstance(node, list):
        for value in node:
            yield from _placeholders(value)
    elif isinstance(node, str):
        yield from PLACEHOLDER.findall(node)


def test_every_placeholder_is_filled_and_every_value_used() -> None:
    """The file's placeholders are exactly the values the code fills in: none left, none unused."""
    used = set(_placeholders(template()))
    assert used == set(document_values(FacadeSettings()))
    assert not set(_placeholders(build_openapi(FacadeSettings())))


def test_filled_numbers_keep_their_type() -> None:
    """A value that is a placeholder alone becomes the number itself; inside prose, its text."""
    doc = build_openapi(replace(FacadeSettings(), max_msg_chars=77))
    msg = doc["components"]["schemas"]["PostMessageRequest"]["properties"]["msg"]
    assert msg["maxLength"] == 77
    assert "1 to 77 characters" in msg["description"]


@pytest.mark.parametrize(("method", "path", "status", "headers", "body", "complaint"), [
    ("GET", "/health", 200, {}, b'{"status": "ok", "service": "facade"}', "X-Correlation-ID"),
    ("POST", "/facade", 200, {"X-Correlation-ID": "c"}, b'{"status": "success", "uuid": "FF"}',
     "does not match"),
    ("GET", "/facade", 200, {"X-Correlation-ID": "c"}, b'{"logs": [1], "message": "m"}',
     "is not of type 'string'"),
    ("POST", "/facade", 503, {"X-Correlation-ID": "c"}, b'{"status": "failure", "message": "m"}',
     "Retry-After"),
    ("GET", "/nope", 404, {"X-Correlation-ID": "c"}, b'{"status": "failure"}', "'message' is a required"),
    ("DELETE", "/facade", 405, {"X-Correlation-ID": "c"}, b'{"status": "failure", "message": "m"}',
     "header Allow is missing"),
    ("GET", "/nope", 405, {"X-Correlation-ID": "c"}, b'{"status": "failure", "message": "m"}',
     "not the 404"),
    ("GET", "/facade", 200, {"X-Correlation-ID": "c", "Content-Type": "text/plain"}, b"{}",
     "text/plain"),
])
def test_oracle_flags_what_breaks_the_document(method: str, path: str, status: int,
                                               headers: dict[str, str], body: bytes,
                                               complaint: str) -> None:
    """The reply oracle reports a missing header, a bad body, a wrong Content-Type or status."""
    errors = reply_errors(contract(), method, path, status,
                          {"Content-Type": "application/json", **headers}, body)
    assert any(complaint in e for e in errors), errors


@dataclass
class Call:
    """One request to the facade and the status it must get."""

    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


CALLS = [
    Call("POST", "/facade", 200, b'{"msg": "hello"}', JSON_HEADERS),
    Call("POST", "/facade", 200, b'{"msg": "once"}', {**JSON_HEADERS, "Idempotency-Key": "k-1"}),
    Call("GET", "/facade", 200),
    Call("GET", "/facade?offset=0&limit=1", 200),
    Call("HEAD", "/facade", 200),
    Call("GET", "/health", 200),
    Call("GET", "/openapi.json", 200),
    Call("GET", "/metrics", 200),
    Call("HEAD", "/metrics", 200),
    Call("GET", "/health", 200, headers={
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=1"}),
    Call("GET", "/health", 200, headers={"traceparent": "not one"}),
    Call("POST", "/facade", 400, b'{"msg": ', JSON_HEADERS),
    Call("POST", "/facade", 400, b'{"msg": "x"}', {"Idempotency-Key": "has space"}),
    Call("GET", "/facade?limit=-1", 400),
    Call("GET", "/nope", 404),
    Call("DELETE", "/facade", 405),
    Call("POST", "/facade", 413, b'{"msg": "' + b"x" * 70_000 + b'"}', JSON_HEADERS),
    Call("POST", "/facade", 415, b'{"msg": "x"}', {"Content-Type": "text/plain"}),
    Call("POST", "/facade", 422, b'{"msg": ""}', JSON_HEADERS),
    Call("POST", "/facade", 422, b'{"msg": " \\t "}', JSON_HEADERS),
    Call("GET", "/facade?offset=0&limit=0", 200),  # an empty page with next_offset
    Call("POST", "/facade", 422, b'{"msg": "' + b"x" * 10_001 + b'"}', JSON_HEADERS),
]


@pytest.mark.parametrize("call", CALLS, ids=[f"{c.method} {c.path[:20]} {c.status}" for c in CALLS])
async def test_real_replies_conform_to_the_document(
    facade: Client, document: dict[str, Any], call: Call
) -> None:
    """Each reply has the expected status, documented headers and a body valid against its schema."""
    served = Contract.of(document)
    resp = await facade.request(call.method, call.path, data=call.body, headers=call.headers,
                                skip_auto_headers=["Content-Type"])
    assert resp.status == call.status
    errors = reply_errors(served, call.method, resp.url.path, resp.status, resp.headers,
                          await resp.read())
    assert errors == []


async def _failing_logging(request: web.Request) -> web.Response:
    """A logging service that fails every call with an undeclared error."""
    return json_response(error_body("InternalError", "internal error"), status=500)


async def test_downstream_failure_replies_conform_to_the_document(
    make_facade: MakeFacade, aiohttp_server: AiohttpServer, unused_tcp_port: int
) -> None:
    """502 (logging failed), 503 with Retry-After (logging down) and 200-degraded GET match the document."""
    broken = web.Application()
    broken.router.add_post("/rpc/{method}", _failing_logging)
    broken_server = await aiohttp_server(broken)
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    doc = contract()

    async def check(client: Client, method: str, status: int) -> dict[str, Any]:
        resp = await client.request(method, "/facade", json={"msg": "x"} if method == "POST" else None)
        assert resp.status == status
        assert reply_errors(doc, method, "/facade", status, resp.headers, await resp.read()) == []
        body: dict[str, Any] = await resp.json()
        return body

    await check(await make_facade(logging_url=str(broken_server.make_url("")).rstrip("/")), "POST", 502)
    down = await make_facade(logging_url=closed, retry_attempts=1)
    await check(down, "POST", 503)
    await check(down, "GET", 503)
    degraded = await check(await make_facade(messages_url=closed), "GET", 200)
    assert degraded["unavailable"] == ["messages"]
