"""Pages of stored messages: their two budgets, the JSON logging builds, the facade's splice.

A page holds the messages from ``offset`` on, in arrival order, while both
budgets allow: at most ``limit`` messages (``MAX_PAGE`` at most, and when no
limit is asked for) and at most ``MAX_PAGE_BYTES`` of JSON-encoded messages
(a single message larger than that still makes a page of one, so reading
always moves on). When messages remain after it, the page says where the next
one starts::

    {"logs": ["msg1", "msg2"], "next_offset": 2}
    {"logs": ["msg3"]}                                   # the last page

logging encodes the page once; the facade adds its own fields to those bytes
(``splice``) without decoding them, so a GET costs about two copies of one
page in the facade, whatever the size of the store.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from resilience import InvalidArgument

#: The most messages one page holds (and the largest ``limit`` a client may ask for).
MAX_PAGE = 10_000
_LOGS_START = b'{"logs":['


class MalformedPage(ValueError):
    """Bytes that are not a page as ``encode_page`` builds it."""


def check_page(offset: int, limit: int) -> None:
    """``InvalidArgument`` unless ``offset`` is 0 or more and ``limit`` 0 to ``MAX_PAGE``."""
    if offset < 0:
        raise InvalidArgument("offset must be 0 or more")
    if not 0 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be between 0 and {MAX_PAGE}")


def encode_page(messages: Sequence[str], offset: int, limit: int, max_bytes: int,
                total: int) -> dict[str, Any]:
    """The page of ``messages[offset:]`` within ``limit`` and ``max_bytes``, ready for orjson.

    ``messages`` may be just the slice from ``offset`` (at most ``limit`` long);
    ``total`` is how many messages are stored. ``logs`` is an ``orjson.Fragment``:
    encoded here, once, and copied as bytes by every later ``orjson.dumps``.

    A message encodes to at least its code points plus two quotes and a comma,
    so the longest prefix that may fit is found without encoding anything (at
    once when the whole window may); it is encoded in one call, and only when
    escapes or multi-byte characters make it overflow is it cut message by message.
    """
    window = messages[:limit]
    candidates = window
    if _least_size(sum(map(len, window)), len(window)) > max_bytes:
        sizes = list(itertools.accumulate(map(len, window)))
        fits = bisect.bisect_right(range(len(window)), max_bytes,
                                   key=lambda i: _least_size(sizes[i], i + 1))
        candidates = window[:max(fits, 1)]  # a message over budget still makes a page of one
    logs = orjson.dumps(candidates)
    if len(logs) > max_bytes and len(candidates) > 1:
        logs, count = _cut(candidates, max_bytes)
    else:
        count = len(candidates)
    page: dict[str, Any] = {"logs": orjson.Fragment(logs)}
    if offset + count < total:
        page["next_offset"] = offset + count
    return page


def _least_size(code_points: int, count: int) -> int:
    """The fewest bytes ``count`` messages of ``code_points`` in all can encode to: the
    brackets, and two quotes and a comma each (one comma fewer)."""
    return code_points + 3 * count + 1


def _cut(messages: Sequence[str], max_bytes: int) -> tuple[bytes, int]:
    """The JSON array of as many of ``messages`` as fit ``max_bytes`` (at least one), and how many."""
    pieces: list[bytes] = []
    size = 1  # the brackets, less the comma the first piece does not need
    for text in messages:
        piece = orjson.dumps(text)
        size += len(piece) + 1
        if size > max_bytes and pieces:
            break
        pieces.append(piece)
    return b"[" + b",".join(pieces) + b"]", len(pieces)


def splice(page: bytes | memoryview, fields: Mapping[str, Any]) -> bytes:
    """``page`` (the JSON object of ``encode_page``) with ``fields`` added, never decoding it.

    Raises ``MalformedPage`` if ``page`` does not look like one.
    """
    if not (bytes(page[:len(_LOGS_START)]) == _LOGS_START and page[-1:] == b"}"):
        raise MalformedPage("a page must be a JSON object that starts with its logs")
    if not fields:
        return bytes(page)
    return b"".join((page[:-1], b",", orjson.dumps(fields)[1:]))
