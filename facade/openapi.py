"""The facade's public API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The description is data: ``openapi.yaml`` beside this module, read once. The
few things it states that the code decides (the limits from the settings the
facade runs with, the patterns and names the validation checks with) are
``${name}`` placeholders, filled in from those very settings and constants
when the document is served, so the document cannot state one limit while
the facade enforces another.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import re
from typing import Any

import yaml
from aiohttp import web

from logging_service.contract import MESSAGE_UUID, NOT_BLANK
from logging_service.paging import MAX_PAGE
from resilience import CORRELATION_HEADER, TRACEPARENT, TRACESTATE, VALID_CORRELATION_ID, json_response

from .keys import SETTINGS
from .settings import FacadeSettings
from .validation import IDEMPOTENCY_KEY, MAX_OFFSET

JSON = dict[str, Any]
Value = str | int | float

#: The description, in this package.
DOCUMENT_FILE = "openapi.yaml"
#: ``${name}``: a value filled in when the document is served.
PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")
# The same expressions the facade checks with, anchored as JSON Schema wants them.
IDEMPOTENCY_KEY_PATTERN = f"^{IDEMPOTENCY_KEY.pattern}$"
CORRELATION_ID_PATTERN = f"^{VALID_CORRELATION_ID.pattern}$"
UUID_PATTERN = f"^{MESSAGE_UUID.pattern}$"


@functools.cache
def template() -> JSON:
    """The description as written, placeholders and all (parsed once per process)."""
    text = importlib.resources.files(__package__).joinpath(DOCUMENT_FILE).read_text("utf-8")
    document: JSON = yaml.safe_load(text)
    return document


def document_values(settings: FacadeSettings) -> dict[str, Value]:
    """What each placeholder stands for under ``settings``: every value from where it is enforced."""
    try:
        version = importlib.metadata.version("resilient-microservices")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        version = "0.0.0"
    return {
        "version": version,
        "server_url": f"http://{settings.host}:{settings.facade_port}",
        "correlation_header": CORRELATION_HEADER,
        "traceparent_header": TRACEPARENT,
        "tracestate_header": TRACESTATE,
        "correlation_id_pattern": CORRELATION_ID_PATTERN,
        "idempotency_key_pattern": IDEMPOTENCY_KEY_PATTERN,
        "uuid_pattern": UUID_PATTERN,
        "not_blank_pattern": NOT_BLANK.pattern,
        "max_msg_chars": settings.max_msg_chars,
        "max_body_bytes": settings.max_body_bytes,
        "body_read_timeout": settings.body_read_timeout,
        "max_page_bytes": settings.max_page_bytes,
        "max_in_flight": settings.max_in_flight,
        "max_loop_lag": settings.max_loop_lag,
        "max_page": MAX_PAGE,
        "max_offset": MAX_OFFSET,
    }


def fill(node: Any, values: dict[str, Value]) -> Any:
    """``node`` with every placeholder (in keys and values) replaced; an unknown name raises KeyError.

    A string that is a placeholder and nothing else becomes the value itself,
    so ``maxLength: ${max_msg_chars}`` stays a number.
    """
    if isinstance(node, dict):
        return {fill(key, values): fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [fill(item, values) for item in node]
    if not isinstance(node, str):
        return node
    whole = PLACEHOLDER.fullmatch(node)
    if whole is not None:
        return values[whole[1]]
    return PLACEHOLDER.sub(lambda match: _as_text(values[match[1]]), node)


def _as_text(value: Value) -> str:
    """A value as the prose of a description shows it (``2.5``, ``5``, not ``5.0``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_openapi(settings: FacadeSettings) -> JSON:
    """The OpenAPI 3.1 description of the facade's public API under ``settings``."""
    document: JSON = fill(template(), document_values(settings))
    return document


async def serve_openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document for the facade's own settings."""
    return json_response(build_openapi(request.app[SETTINGS]))
