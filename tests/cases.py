"""Bad inputs to POST /facade, shared by the in-process and the end-to-end tests.

Each case: (id, body, expected status, words the error message contains).
"""

from __future__ import annotations

BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", b'{"msg": ', 400, "not valid JSON"),
    ("empty body", b"", 400, "empty"),
    ("whitespace body", b"  \n", 400, "empty"),
    ("invalid UTF-8", b'{"msg": "\xff\xfe"}', 400, "not valid JSON: byte 10 is not UTF-8 text"),
    ("lone surrogate", b'{"msg": "\\ud800"}', 400, "not valid JSON: the error is at line 1, column"),
    ("array body", b'["msg1"]', 422, "JSON object"),
    ("string body", b'"msg1"', 422, "JSON object"),
    ("number body", b"42", 422, "JSON object"),
    ("null body", b"null", 422, "JSON object"),
    ("missing msg", b'{"message": "x"}', 422, 'no "msg"'),
    ("msg number", b'{"msg": 1}', 422, "not a number"),
    ("msg null", b'{"msg": null}', 422, "not null"),
    ("msg list", b'{"msg": ["a"]}', 422, "not an array"),
    ("msg bool", b'{"msg": true}', 422, "not a boolean"),
    ("msg object", b'{"msg": {"a": 1}}', 422, "not an object"),
    ("msg empty", b'{"msg": ""}', 422, "must not be empty"),
    ("msg blank", b'{"msg": " \\t\\n\\u3000 "}', 422, '"msg" must not be blank'),
    ("msg too long", b'{"msg": "' + b"x" * 10_001 + b'"}', 422, "longer than 10000"),
]
