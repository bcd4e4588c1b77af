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
    #: Acknowledged UUIDs the logging service never logged as storing that message (on Redis: that
    #: its dedup index does not map to that message).
    uuid_mismatches: int
    examples: dict[str, list[str]]
    #: Whether redis-server was SIGKILLed; POSTs acknowledged before its last SIGKILL (the
    #: strict rule holds them all the same), and how many of them are stored.
    store_killed: bool = False
    before_store_kill: int = 0
    before_store_kill_stored: int = 0
    #: POSTs sent after the last restart of a process on the write path and acknowledged (None:
    #: not counted): that the system recovered from the last fault.
    after_last_restart: int | None = None

    @property
    def failed(self) -> int:
        """POSTs not acknowledged, stored or not."""
        return self.attempted - self.acknowledged


def tally(ops: Sequence[PostOp], stored: Sequence[str], *, strict_since: float | None = None,
          stored_uuids: Mapping[str, set[str]] | None = None, store_killed_at: float | None = None,
          restarted_at: float | None = None) -> Tally:
    """Judge every POST in ``ops`` against the final contents of the store, ``stored``.

    With ``strict_since`` (the time the last logging restart completed), only
    POSTs first sent at or after it must survive; an acknowledged message sent
    before it and absent now is counted as ``lost_with_logging_restart``.
    ``stored_uuids`` maps a UUID to the messages the logging service logged as
    stored under it; without it, UUIDs are not checked. ``store_killed_at`` is
    when redis-server was last SIGKILLed: a POST whose client was told before
    then was acknowledged by the Redis that was killed. ``restarted_at`` is when
    the last restarted process on the write path served again.
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
    before_kill = before_kill_stored = after_restart = 0
    for op in ops:
        strict = strict_since is None or op.started >= strict_since
        checked += strict
        checked_acks += strict and op.acknowledged
        present = counts.get(op.text, 0) > 0
        if op.acknowledged:
            after_restart += restarted_at is not None and op.started >= restarted_at
            if store_killed_at is not None and op.ended < store_killed_at:
                before_kill += 1
                before_kill_stored += present
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
        uuid_mismatches=mismatches, examples=examples, store_killed=store_killed_at is not None,
        before_store_kill=before_kill, before_store_kill_stored=before_kill_stored,
        after_last_restart=None if restarted_at is None else after_restart,
    )


def messages_verdict(ops: Sequence[PostOp], kept: Sequence[str]) -> dict[str, int]:
    """What one messages instance keeps, judged as the store is: every acknowledged message once."""
    t = tally(ops, kept)
    return {"kept": len(kept), "lost": t.lost, "duplicated": t.duplicated, "unexpected": t.unexpected}


def problems(t: Tally, gets: GetStats, via_facade: str, missing_faults: Sequence[str] = (),
             messages: Mapping[str, Mapping[str, int]] | None = None) -> list[str]:
    """Why a run with this tally, these GETs, this paged read back (``via_facade``), these faults
    it was to survive but never saw (``missing_faults``) and what each messages instance kept
    (``messages``, on the cluster) fails (empty when it passes)."""
    found = [f"{fault} never happened: the run cannot vouch for surviving it" for fault in missing_faults]
    for name, verdict in (messages or {}).items():
        for kind, what in (("lost", "acknowledged messages are not kept"),
                           ("duplicated", "messages are kept more than once"),
                           ("unexpected", "kept messages were never sent")):
            if verdict[kind]:
                found.append(f"{name}: {verdict[kind]} {what}")
    if t.lost:
        found.append(f"{t.lost} acknowledged messages are not stored")
    if t.duplicated:
        found.append(f"{t.duplicated} messages are stored more than once")
    if t.unexpected:
        found.append(f"{t.unexpected} stored messages were never sent")
    if t.uuid_mismatches:
        found.append(f"{t.uuid_mismatches} acknowledged UUIDs are not recorded as storing their message")
    if gets.unexpected_texts:
        found.append(f"GET pages showed {gets.unexpected_texts} texts no client had sent")
    if via_facade != "identical":
        found.append(f"the paged read through the facade is {via_facade} "
                     "from the logging service's own read")
    if t.checked_acknowledged == 0:
        found.append("no message held to the strict rule was acknowledged: the run checked nothing")
    if t.store_killed and t.before_store_kill == 0:
        found.append("no message was acknowledged before the last redis-server SIGKILL: the run "
                     "checked nothing across a Redis restart")
    if t.after_last_restart == 0:
        found.append("no POST sent after the last restart was acknowledged: the run did not show "
                     "that the system recovered")
    return found
