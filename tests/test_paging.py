"""Pages of messages: the byte budget counts encoded bytes, and the facade's splice never decodes."""

from __future__ import annotations

import orjson
import pytest

from logging_service.paging import MalformedPage, encode_page, splice


def encoded(page: dict[str, object]) -> bytes:
    return orjson.dumps(page)


def test_the_budget_counts_json_bytes_not_characters() -> None:
    """A message's cost is its encoded size: é is two bytes, a control character six."""
    texts = ["é" * 4, "\x01" * 2, "z"]  # "éééé" is 10 bytes, "\u0001\u0001" 14
    assert encoded(encode_page(texts, 0, 10, 2 + 10 + 1 + 14, 3)) == (
        b'{"logs":["\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9","\\u0001\\u0001"],"next_offset":2}')


def test_a_page_within_budget_that_reaches_the_end_has_no_next_offset() -> None:
    """The last page says nothing more: {"logs": [...]} is the assignment's shape."""
    assert encoded(encode_page(["a", "b"], 0, 10, 1_000, 2)) == b'{"logs":["a","b"]}'


def test_limit_zero_is_an_empty_page_pointing_where_it_stood() -> None:
    """limit=0 reads nothing; next_offset is the offset asked for, since messages remain."""
    assert encoded(encode_page(["a"], 3, 0, 1_000, 4)) == b'{"logs":[],"next_offset":3}'


def test_splice_adds_fields_to_the_bytes_as_they_are() -> None:
    """The facade's fields are appended after logging's, whose bytes are kept exactly."""
    page = memoryview(b'{"logs":["a"],"next_offset":1}')
    assert splice(page, {"message": "hi"}) == b'{"logs":["a"],"next_offset":1,"message":"hi"}'
    assert splice(page, {}) == bytes(page)


@pytest.mark.parametrize("page", [b'["a"]', b'{"result":{"logs":[]}}', b'{"logs":["a"]', b""])
def test_splice_refuses_what_is_not_a_page(page: bytes) -> None:
    """Bytes of another shape are not spliced into broken JSON: MalformedPage instead."""
    with pytest.raises(MalformedPage):
        splice(page, {"message": "hi"})
