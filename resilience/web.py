"""HTTP plumbing the three services share: JSON bodies in and out, and running an app."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_TYPES = ("application/json",)


class BadRequest(Exception):
    """The request cannot be used; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def retry_after_header(hint: float | None) -> dict[str, str]:
    """A ``Retry-After`` header in whole seconds: ``hint`` rounded up, at least 1 (1 without a hint)."""
    return {"Retry-After": str(max(1, math.ceil(hint or 1)))}


async def read_json(request: web.Request, *, require_content_type: bool) -> Any:
    """Parse the request body as JSON, or raise ``BadRequest`` saying what is wrong with it.

    Without ``require_content_type``, a body sent with no Content-Type is still
    read as JSON (as curl sends it with ``-d`` and no ``-H``); a declared type
    other than JSON is refused either way. A body over the app's
    ``client_max_size`` raises aiohttp's 413.
    """
    ctype = request.headers.get("Content-Type")
    if (ctype is not None or require_content_type) and not _is_json(request.content_type):
        raise BadRequest(
            415, "Content-Type must be application/json (with curl: -H 'Content-Type: application/json')"
        )
    try:
        body = await request.read()
    except web.RequestPayloadError as exc:  # e.g. a body declared gzip that is not
        raise BadRequest(400, f"request body cannot be read: {exc}") from None
    if not body.strip():
        raise BadRequest(400, "request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"request body is not valid JSON: {exc}") from None


def _is_json(content_type: str) -> bool:
    return content_type in JSON_TYPES or content_type.endswith("+json")
