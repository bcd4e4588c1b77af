"""The Jepsen-style verdict: every POST judged against the final store, and the rule a run must pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .load import GetStats, PostOp

#: At most this many examples of each anomaly go into the report.
EXAMPLES = 5


@dataclass(frozen=True)
class Tally:
    """The Jepsen-style verdict on every POST, given what the store holds at the end."""

    attempted: int
    acknowledged: int
    lost: int
    duplicated: int
    unexpected: int
    indeterminate: int
    failed_and_absent: int
    #: Acknowledged before the last logging restart and gone with its memory (``--kill-logging``).
    lost_with_logging_restart: int
    #: POSTs held to the strict rule: all of them, or those sent after the last logging restart.
    checked: int
    #: Of those, how many were acknowledged: the messages the strict rule actually vouches for.
    checked_acknowledged: int
    #: Acknowledged UUIDs the logging service never logged as storing that message.
    uuid_mismatches: int
    examples: dict[str, list[str]]

    @property
    def failed(self) -> int:
        """POSTs not acknowledged, stored or not."""
        return self.attempted - self.acknowledged


def tally(ops: Sequence[PostOp], stored: Sequence[str], *, strict_since: float | None = None,
          stored_uuids: Mapping[str, set[str]] | None = None) -> Tally:
    """Judge every POST in ``ops`` against the final contents of the store, ``stored``.

    With ``strict_since`` (the time the last logging restart completed), only
    POSTs first sent at or after it must survive; an acknowledged message sent
    before it and absent now is counted as ``lost_with_logging_restart``.
    ``stored_uuids`` maps a UUID to the messages the logging service logged as
    stored under it; without it, UUIDs are not checked.
    """
    counts = Counter(stored)
    sent = {op.text for op in ops}
    examples: dict[str, list[str]] = {}

    def example(kind: str, text: str) -> None:
        found = examples.setdefault(kind, [])
        if len(found) < EXAMPLES:
            found.append(text)

    duplicated = [text for text, n in counts.items() if n > 1]
    unexpected = [text for text in counts if text not in sent]
    for text in duplicated:
        example("duplicated", text)
    for text in unexpected:
        example("unexpected", text)
    lost = lost_restart = indeterminate = failed_absent = checked = checked_acks = mismatches = 0
    for op in ops:
        strict = strict_since is None or op.started >= strict_since
        checked += strict
        checked_acks += strict and op.acknowledged
        present = counts.get(op.text, 0) > 0
        if op.acknowledged:
            if not present and strict:
                lost += 1
                example("lost", op.text)
            elif not present:
                lost_restart += 1
            if stored_uuids is not None and op.text not in stored_uuids.get(op.uuid or "", set()):
                mismatches += 1
                example("uuid_mismatch", f"{op.uuid} {op.text}")
        elif present:
            indeterminate += 1
        else:
            failed_absent += 1
    return Tally(
        attempted=len(ops), acknowledged=sum(op.acknowledged for op in ops), lost=lost,
        duplicated=len(duplicated), unexpected=len(unexpected), indeterminate=indeterminate,
        failed_and_absent=failed_absent, lost_with_logging_restart=lost_restart, checked=checked,
        checked_acknowledged=checked_acks,
        uuid_mismatches=mismatches, examples=examples,
    )


def problems(t: Tally, gets: GetStats, via_facade: str) -> list[str]:
    """Why a run with this tally, these GETs and this paged read back (``via_facade``) fails
    (empty when it passes)."""
    found = []
    if t.lost:
        found.append(f"{t.lost} acknowledged messages are not stored")
    if t.duplicated:
        found.append(f"{t.duplicated} messages are stored more than once")
    if t.unexpected:
        found.append(f"{t.unexpected} stored messages were never sent")
    if t.uuid_mismatches:
        found.append(f"{t.uuid_mismatches} acknowledged UUIDs were never logged as storing their message")
    if gets.unexpected_texts:
        found.append(f"GET pages showed {gets.unexpected_texts} texts no client had sent")
    if via_facade != "identical":
        found.append(f"the paged read through the facade is {via_facade} "
                     "from the logging service's own read")
    if t.checked_acknowledged == 0:
        found.append("no message held to the strict rule was acknowledged: the run checked nothing")
    return found
