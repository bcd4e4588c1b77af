"""The facade's public API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The document is built from the running settings and the validation limits,
so the limits it states are the limits the facade enforces.

``tests/openapi_check.py`` checks real replies against it.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from aiohttp import web

from resilience import Settings
from resilience.contract import MESSAGE_UUID, NOT_BLANK
from resilience.correlation import HEADER as CORRELATION_HEADER
from resilience.correlation import VALID_ID
from resilience.paging import MAX_PAGE
from resilience.web import json_response

from .keys import SETTINGS
from .validation import IDEMPOTENCY_KEY, MAX_OFFSET

JSON = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
# The same expressions the facade checks with, anchored as JSON Schema wants them.
IDEMPOTENCY_KEY_PATTERN = f"^{IDEMPOTENCY_KEY.pattern}$"
CORRELATION_ID_PATTERN = f"^{VALID_ID.pattern}$"
UUID_PATTERN = f"^{MESSAGE_UUID.pattern}$"


def _ref(kind: str, name: str) -> JSON:
    return {"$ref": f"#/components/{kind}/{name}"}


def _failure(description: str, *, headers: JSON | None = None) -> JSON:
    """A documented error reply: the failure body plus the correlation header."""
    return {
        "description": description,
        "headers": {CORRELATION_HEADER: _ref("headers", "CorrelationId"), **(headers or {})},
        "content": {"application/json": {"schema": _ref("schemas", "Failure")}},
    }


def _success(description: str, schema: str) -> JSON:
    return {
        "description": description,
        "headers": {CORRELATION_HEADER: _ref("headers", "CorrelationId")},
        "content": {"application/json": {"schema": _ref("schemas", schema)}},
    }


def _head_of(get: JSON, shared: JSON) -> JSON:
    """The HEAD operation aiohttp adds beside every GET: the same status and headers, no body.

    ``shared`` holds the component responses the GET's ``$ref``s point at.
    """
    responses = {}
    for status, reply in get["responses"].items():
        if "$ref" in reply:
            reply = shared[reply["$ref"].rsplit("/", 1)[1]]
        responses[status] = {"description": f"As GET, without a body. {reply['description']}",
                             "headers": reply.get("headers", {})}
    return {
        "summary": f"{get['summary']} (headers only)",
        "operationId": f"{get['operationId']}Head",
        "tags": get["tags"],
        "parameters": get.get("parameters", []),
        "responses": responses,
    }


def _schemas(settings: Settings) -> JSON:
    failure_message = "What went wrong, in plain words (never a traceback)."
    return {
        "PostMessageRequest": {
            "type": "object",
            "required": ["msg"],
            "properties": {
                "msg": {"type": "string", "minLength": 1, "maxLength": settings.max_msg_chars,
                        "pattern": NOT_BLANK.pattern,
                        "description": "The message: 1 to "
                                       f"{settings.max_msg_chars} characters (code points), "
                                       "not all of them whitespace."},
            },
            "additionalProperties": True,
            "description": "Other fields are ignored.",
        },
        "PostMessageResponse": {
            "type": "object",
            "required": ["status", "uuid"],
            "properties": {
                "status": {"const": "success"},
                "uuid": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN,
                         "description": "A random UUID (version 4), or with an Idempotency-Key "
                                        "the UUID derived from the key under a server-side "
                                        "secret (version 8)."},
            },
            "additionalProperties": False,
        },
        "LogsResponse": {
            "type": "object",
            "required": ["logs", "message"],
            "properties": {
                "logs": {"type": "array", "items": {"type": "string"},
                         "description": "Stored messages in arrival order, from offset: at most "
                                        f"limit of them and {settings.max_page_bytes} bytes of "
                                        "JSON (a single longer message still comes alone)."},
                "next_offset": {"type": "integer", "minimum": 0,
                                "description": "Present only when messages follow this page: "
                                               "the offset to ask for next."},
                "message": {"type": "string",
                            "description": 'The messages service\'s text ("not implemented yet"), '
                                           'or "unavailable" when it is down.'},
                "unavailable": {"type": "array", "items": {"enum": ["messages"]},
                                "description": "Present only when a service could not answer."},
            },
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "required": ["status", "service"],
            "properties": {"status": {"const": "ok"}, "service": {"const": "facade"}},
            "additionalProperties": False,
        },
        "Failure": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"const": "failure"},
                           "message": {"type": "string", "description": failure_message}},
            "additionalProperties": False,
        },
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"const": OPENAPI_VERSION}},
        },
    }


def _responses(settings: Settings) -> JSON:
    retry_after = {"Retry-After": _ref("headers", "RetryAfter")}
    return {
        "BadRequest": _failure("The body is empty, not JSON or not what its Content-Encoding "
                               "says, the Idempotency-Key is malformed, or offset/limit is not "
                               "a whole number in range."),
        "RequestTimeout": _failure(f"The body did not arrive within {settings.body_read_timeout:g} s "
                                   "of the headers; the connection is closed."),
        "NotFound": _failure("No endpoint at this path (any path not listed here)."),
        "MethodNotAllowed": _failure(
            "The path exists but not with this method (any method not listed for a path).",
            headers={"Allow": _ref("headers", "Allow")}),
        "PayloadTooLarge": _failure(f"The body is over {settings.max_body_bytes} bytes; the "
                                    "connection is closed."),
        "UnsupportedMediaType": _failure("A Content-Type other than application/json (or +json) "
                                         "was declared."),
        "UnprocessableContent": _failure(
            'The JSON is not an object with a "msg" string of 1 to '
            f"{settings.max_msg_chars} characters, not all whitespace, or the Idempotency-Key "
            "was already used with a different message (keys are global, across clients)."),
        "BadGateway": _failure("The logging service failed, or refused the facade's call (a "
                               "misconfiguration), in a way a retry will not fix."),
        "ServiceUnavailable": _failure(
            "The logging service could not be reached (after retries) or its circuit breaker "
            f"is open, or the facade is at its limit of {settings.max_in_flight} requests in "
            "flight; try again after Retry-After seconds.", headers=retry_after),
        "InternalError": _failure('An unexpected failure: "internal error" and nothing more. '
                                  "Never expected; a bug if seen."),
    }


def _headers() -> JSON:
    return {
        "CorrelationId": {
            "description": "The request's correlation ID: the client's own if it matched "
                           f"{CORRELATION_ID_PATTERN}, else a minted one. It appears on every "
                           "log line written for the request, in every service.",
            "required": True,
            "schema": {"type": "string", "pattern": CORRELATION_ID_PATTERN},
        },
        "RetryAfter": {
            "description": "Whole seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        },
        "Allow": {
            "description": "The methods the path accepts, comma-separated.",
            "required": True,
            "schema": {"type": "string"},
        },
    }


def _parameters(settings: Settings) -> JSON:
    return {
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Makes a retried POST safe: the same key with the same message "
                           "answers the same UUID and stores the message once; the same key "
                           "with another message is refused (422). Checked after the body.",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        },
        "CorrelationId": {
            "name": CORRELATION_HEADER,
            "in": "header",
            "required": False,
            "description": "A correlation ID to use for this request's logs. Kept if it matches "
                           f"{CORRELATION_ID_PATTERN}; anything else is replaced, never refused.",
            "schema": {"type": "string"},
        },
        "Offset": {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "How many stored messages to skip (ASCII digits only).",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "At most this many messages (ASCII digits only); a page also stops "
                           f"at {settings.max_page_bytes} bytes of messages.",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE, "default": MAX_PAGE},
        },
    }


def build_openapi(settings: Settings) -> JSON:
    """The OpenAPI 3.1 description of the facade's public API under ``settings``."""
    try:
        version = importlib.metadata.version("resilient-microservices")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        version = "0.0.0"
    correlation = _ref("parameters", "CorrelationId")
    shared = _responses(settings)
    get_messages: JSON = {
        "summary": "Read the stored messages and the messages service's text",
        "operationId": "getMessages",
        "tags": ["messages"],
        "description": "Asks logging and messages at once. If messages is down the answer is "
                       'still 200, with "message": "unavailable" and "unavailable": ["messages"]; '
                       "if logging is down it is 503. A store larger than one page is read by "
                       "following next_offset until a page comes without it.",
        "parameters": [_ref("parameters", "Offset"), _ref("parameters", "Limit"), correlation],
        "responses": {
            "200": _success("The page of messages, in arrival order (the whole store, when it "
                            "fits in one page).", "LogsResponse"),
            "400": _ref("responses", "BadRequest"),
            "502": _ref("responses", "BadGateway"),
            "503": _ref("responses", "ServiceUnavailable"),
            "default": _ref("responses", "InternalError"),
        },
    }
    get_health: JSON = {
        "summary": "Whether the facade process is up (it does not probe the other services)",
        "operationId": "getHealth",
        "tags": ["operations"],
        "parameters": [correlation],
        "responses": {"200": _success("The facade is up.", "Health"),
                      "default": _ref("responses", "InternalError")},
    }
    get_metrics: JSON = {
        "summary": "Prometheus metrics: requests, breakers, retries, shed requests",
        "operationId": "getMetrics",
        "tags": ["operations"],
        "parameters": [correlation],
        "responses": {"200": {
            "description": "The Prometheus text exposition format.",
            "headers": {CORRELATION_HEADER: _ref("headers", "CorrelationId")},
            "content": {"text/plain": {"schema": {"type": "string"}}}},
            "default": _ref("responses", "InternalError")},
    }
    get_openapi: JSON = {
        "summary": "This document",
        "operationId": "getOpenApi",
        "tags": ["operations"],
        "parameters": [correlation],
        "responses": {"200": _success("The OpenAPI 3.1 description of this API.", "OpenApiDocument"),
                      "default": _ref("responses", "InternalError")},
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Facade",
            "version": version,
            "summary": "The public REST service: stores messages once each and reads them back.",
            "description": (
                "Every reply is JSON. Errors are "
                '`{"status": "failure", "message": "..."}` with a 4xx or 5xx status. Any path not '
                "listed answers 404 (`#/components/responses/NotFound`); a listed path with a "
                "method not listed answers 405 with `Allow` "
                "(`#/components/responses/MethodNotAllowed`). Requests the HTTP parser itself "
                "refuses (an unknown method token, a header line over 8190 bytes, more than 128 "
                "headers) get a plain-text 400 before reaching the API. Every reply the API makes "
                f"carries `{CORRELATION_HEADER}`. Limits: body {settings.max_body_bytes} bytes, "
                f"arriving within {settings.body_read_timeout:g} s, "
                f"`msg` {settings.max_msg_chars} characters, `limit` {MAX_PAGE}, "
                f"a page {settings.max_page_bytes} bytes, `offset` {MAX_OFFSET}, "
                f"{settings.max_in_flight} requests in flight."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": f"http://{settings.host}:{settings.facade_port}",
                     "description": "The default local address"}],
        "tags": [{"name": "messages"}, {"name": "operations"}],
        "paths": {
            "/facade": {
                "post": {
                    "summary": "Store a message once and answer its UUID",
                    "operationId": "postMessage",
                    "tags": ["messages"],
                    "description": "The body is read as JSON when Content-Type is absent, "
                                   "application/json or any +json type; any other declared type "
                                   "is refused (415). The UUID is minted once and every retry "
                                   "to the logging service resends it, so a message is stored "
                                   "once.",
                    "parameters": [_ref("parameters", "IdempotencyKey"), correlation],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": _ref("schemas", "PostMessageRequest")}},
                    },
                    "responses": {
                        "200": _success("Stored (or, with a reused Idempotency-Key and the same "
                                        "message, already stored).", "PostMessageResponse"),
                        "400": _ref("responses", "BadRequest"),
                        "408": _ref("responses", "RequestTimeout"),
                        "413": _ref("responses", "PayloadTooLarge"),
                        "415": _ref("responses", "UnsupportedMediaType"),
                        "422": _ref("responses", "UnprocessableContent"),
                        "502": _ref("responses", "BadGateway"),
                        "503": _ref("responses", "ServiceUnavailable"),
                        "default": _ref("responses", "InternalError"),
                    },
                },
                "get": get_messages,
                "head": _head_of(get_messages, shared),
            },
            "/health": {"get": get_health, "head": _head_of(get_health, shared)},
            "/openapi.json": {"get": get_openapi, "head": _head_of(get_openapi, shared)},
            "/metrics": {"get": get_metrics, "head": _head_of(get_metrics, shared)},
        },
        "components": {
            "schemas": _schemas(settings),
            "responses": shared,
            "headers": _headers(),
            "parameters": _parameters(settings),
        },
    }


async def serve_openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document for the facade's own settings."""
    return json_response(build_openapi(request.app[SETTINGS]))
