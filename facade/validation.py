"""What the facade accepts from clients, and the clear 4xx for everything else."""

from __future__ import annotations

import re
from typing import Any

from logging_service.contract import text_problem
from logging_service.paging import MAX_PAGE
from resilience import BadRequest

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
MAX_OFFSET = 1_000_000_000


def message_from(body: Any, max_chars: int) -> str:
    """The ``msg`` of a POST /facade body, or ``BadRequest`` (422) saying what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest(422, 'body must be a JSON object like {"msg": "text"}')
    if "msg" not in body:
        raise BadRequest(422, 'body has no "msg" field')
    msg = body["msg"]
    if not isinstance(msg, str):
        raise BadRequest(422, f'"msg" must be a string, not {_json_type(msg)}')
    problem = text_problem(msg, max_chars)
    if problem is not None:
        raise BadRequest(422, f'"msg" {problem}')
    return msg


def idempotency_key_from(value: str | None) -> str | None:
    """The Idempotency-Key header, if sane (1 to 128 printable ASCII characters)."""
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise BadRequest(400, "Idempotency-Key must be 1 to 128 printable ASCII characters")
    return value


def page_from(query: Any) -> tuple[int, int]:
    """``offset`` (default 0) and ``limit`` (default and at most ``MAX_PAGE``) of GET /facade."""
    offset = _int_param(query, "offset", MAX_OFFSET)
    limit = _int_param(query, "limit", MAX_PAGE)
    return offset or 0, MAX_PAGE if limit is None else limit


def _int_param(query: Any, name: str, maximum: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= maximum):
        raise BadRequest(400, f"{name} must be a whole number from 0 to {maximum}")
    return int(raw)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)
