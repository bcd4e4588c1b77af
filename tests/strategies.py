"""Hypothesis strategies for fuzzing the services over HTTP, and the campaign's settings.

Bodies (valid, invalid and odd JSON, sizes around the limits, deep nesting,
bad UTF-8), headers, content types, queries, paths and methods, combined
into whole ``FuzzRequest``s; the RPC fuzz reuses the building blocks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from facade.openapi import CORRELATION_ID_PATTERN
from facade.settings import FacadeSettings
from resilience.observability.correlation import CORRELATION_HEADER

# Examples per property; raise it for a longer campaign (FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_*.py).
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
MAX_MSG = FacadeSettings().max_msg_chars
MAX_BODY = FacadeSettings().max_body_bytes
# Methods the HTTP parser knows; any other token is refused by the parser (a plain-text 400).
PARSER_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND",
                  "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT")
# Over this many bytes in one header line, the HTTP parser refuses the request (400).
PARSER_LINE_LIMIT = 8190
# Headers that change message framing or encoding are not fuzzed here: a corrupt
# Content-Encoding is a known failure, pinned by tests/test_security.py.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "content-encoding", "host",
                             "connection", "keep-alive", "expect", "upgrade", "te", "trailer"})


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
                                                                   CORRELATION_HEADER.lower()}),
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
                            (CORRELATION_HEADER, self.correlation_id)):
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
