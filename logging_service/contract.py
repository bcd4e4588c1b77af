"""logging's message contract: the UUID forms it stores and the text it accepts.

The facade checks with these before it calls (as a client checks an API's
rules), and logging checks again, so a caller that reaches logging directly
can store nothing the public API would refuse.

logging stores a message under a UUID of one of two forms, both minted by
the facade (``facade/ids.py``): a random one (version 4) for a POST without
an ``Idempotency-Key``, and one derived from the key (version 8, RFC 9562's
form for UUIDs built by one's own rule) for a POST with one.
"""

from __future__ import annotations

import re

#: Bytes a ``log`` call's body holds beyond the body the facade accepted (within the same
#: ``MAX_BODY_BYTES``): the ``"uuid"`` field and its value, with room to spare.
ENVELOPE_BYTES = 64
#: Lower-case, hyphenated, version 4 or 8, RFC variant: the only form the logging service stores.
MESSAGE_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[48][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
#: A character that is not whitespace (the set of Python's ``str.isspace``, spelled out so the
#: OpenAPI document states the same rule): a message without one is blank.
NOT_BLANK = re.compile(r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def is_message_uuid(value: str) -> bool:
    """Whether ``value`` is in a form the facade sends."""
    return MESSAGE_UUID.fullmatch(value) is not None


def text_problem(text: str, max_chars: int) -> str | None:
    """What is wrong with ``text`` as a message (to follow its name), or None if nothing.

    A message has 1 to ``max_chars`` characters (code points), not all of them
    whitespace: a blank message says nothing a reader could see.
    """
    if not text:
        return "must not be empty"
    if len(text) > max_chars:
        return f"is longer than {max_chars} characters"
    if NOT_BLANK.search(text) is None:
        return "must not be blank"
    return None
