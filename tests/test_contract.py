"""The facade-logging contract: the UUID forms minted and accepted, and what a blank message is."""

from __future__ import annotations

import sys
import uuid

import pytest

from facade.ids import KeyUuids, new_uuid
from logging_service.contract import NOT_BLANK, is_message_uuid, text_problem


def test_blank_is_exactly_pythons_whitespace() -> None:
    """The spelled-out class (shared with the OpenAPI document) agrees with str.isspace everywhere."""
    disagree = [hex(point) for point in range(sys.maxunicode + 1)
                if (NOT_BLANK.search(chr(point)) is None) != chr(point).isspace()]
    assert disagree == []


@pytest.mark.parametrize(("text", "problem"), [
    ("", "must not be empty"), (" \u3000\t", "must not be blank"), ("xyz", None),
    ("xyzw", "is longer than 3 characters"), (" a ", None),
])
def test_text_problem_names_what_is_wrong(text: str, problem: str | None) -> None:
    """Empty, over-long and blank texts each have their problem; anything else has none."""
    assert text_problem(text, 3) == problem


def test_random_uuids_are_version_4_and_never_repeat() -> None:
    """A minted random UUID is a canonical version-4 RFC UUID, accepted as a message UUID; 10,000
    of them are all different."""
    minted = [new_uuid() for _ in range(10_000)]
    for value in minted[:100]:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, value)
        assert is_message_uuid(value)
    assert len(set(minted)) == len(minted)


def test_both_minted_forms_are_accepted_and_nothing_else() -> None:
    """A random (v4) and a key-derived (v8) UUID pass; other versions and spellings do not."""
    key_uuid = KeyUuids()("k")
    assert uuid.UUID(key_uuid).version == 8
    assert uuid.UUID(key_uuid).variant == uuid.RFC_4122
    assert is_message_uuid(key_uuid)
    for other in (str(uuid.uuid1()), str(uuid.uuid5(uuid.NAMESPACE_DNS, "k")), new_uuid().upper(),
                  uuid.uuid4().hex, f"{{{new_uuid()}}}"):
        assert not is_message_uuid(other)
