"""A picture of one soak run: POST outcomes per second, each breaker's state, the faults shaded.

The data comes from what the soak already has: every POST's outcome and the
moment its client was told (``PostOp.ended``), the soak's own fault timeline
(``ChaosState.timeline``), and the facade's JSON log lines ``"circuit breaker
state changed"``, whose UTC timestamps are placed against
``load_started_utc``. ``timeline_of`` turns these into plain data;
``draw_png`` renders it with matplotlib, which is optional (the ``plots``
extra): without it the soak still gives its verdict and says the picture was
skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from resilience.policies.breaker import CLOSED, HALF_OPEN, OPEN

from .load import PostOp
from .readback import breaker_label

#: How each POST outcome is drawn: acknowledged, refused with 503, or failed otherwise.
OUTCOME_COLOURS = {"acknowledged": "#2e7d32", "503": "#ef6c00", "failed": "#c62828"}
STATE_COLOURS = {CLOSED: "#a5d6a7", HALF_OPEN: "#fff176", OPEN: "#e57373"}
PHASE_COLOURS = {"refuse": "#90caf9", "slow": "#ce93d8", "errors": "#ffcc80", "drops": "#80cbc4",
                 "mixed": "#bcaaa4"}
#: The timeline notes that start and end a process's time down: ``<name> SIGKILL``, ``<name> restarted...``.
KILLED, RESTARTED = " SIGKILL", " restarted"
BREAKER_EVENT = "circuit breaker state changed"

Span = tuple[float, float, str]


@dataclass
class Timeline:
    """One run as spans and per-second counts, in seconds since the load started."""

    end: float
    #: POSTs whose client was told in each whole second, by outcome (``OUTCOME_COLOURS``' keys).
    per_second: dict[str, list[int]] = field(default_factory=dict)
    #: Each breaker's states: ``(start, end, state)``, from closed at 0 to ``end``.
    breakers: dict[str, list[Span]] = field(default_factory=dict)
    #: The network fault phases (``clean`` is the absence of one).
    faults: list[Span] = field(default_factory=list)
    #: Each killed service's time down: ``(start, end, "down")``.
    outages: dict[str, list[Span]] = field(default_factory=dict)


def outcome_kind(outcome: str) -> str:
    """The bucket of a final POST outcome: ``acknowledged``, ``503`` or ``failed``."""
    return "acknowledged" if outcome == "ok" else "503" if outcome == "http-503" else "failed"


def timeline_of(ops: Iterable[PostOp], started: float, notes: Sequence[tuple[float, str]],
                facade_lines: Iterable[Mapping[str, object]], load_started_utc: str,
                end: float, aliases: Mapping[str, str] | None = None) -> Timeline:
    """The picture's data. ``started`` is the load's start on the clock of ``PostOp.ended``
    (monotonic); ``notes`` are the soak's timeline; ``end`` is where the picture stops;
    ``aliases`` name the replicas in breaker names (``readback.breaker_label``)."""
    seconds = max(1, math.ceil(end))
    per_second = {kind: [0] * seconds for kind in OUTCOME_COLOURS}
    for op in ops:
        moment = op.ended - started
        if op.outcome != "pending" and 0 <= moment < seconds:
            per_second[outcome_kind(op.outcome)][int(moment)] += 1
    return Timeline(end=end, per_second=per_second,
                    breakers=breaker_spans(facade_lines, load_started_utc, end, aliases or {}),
                    faults=fault_spans(notes, end), outages=outage_spans(notes, end))


def breaker_spans(lines: Iterable[Mapping[str, object]], load_started_utc: str,
                  end: float, aliases: Mapping[str, str]) -> dict[str, list[Span]]:
    """Each breaker's states from its logged changes; every breaker starts closed."""
    origin = datetime.fromisoformat(load_started_utc)
    changes: dict[str, list[tuple[float, str]]] = {}
    for line in lines:
        if line.get("event") == BREAKER_EVENT:
            moment = (datetime.fromisoformat(str(line["timestamp"])) - origin).total_seconds()
            name = breaker_label(str(line.get("breaker")), aliases)
            changes.setdefault(name, []).append((moment, str(line.get("new_state"))))
    spans: dict[str, list[Span]] = {}
    for name, steps in sorted(changes.items()):
        marks = [(0.0, CLOSED), *sorted(steps)]
        spans[name] = [(max(0.0, at), min(until, end), state)
                       for (at, state), (until, _) in zip(marks, [*marks[1:], (end, "")], strict=True)
                       if until > 0 and at < end]
    return spans


def fault_spans(notes: Sequence[tuple[float, str]], end: float) -> list[Span]:
    """The network phases other than ``clean``, each until the next note about the network."""
    marks = [(at, text.removeprefix("network ")) for at, text in notes if text.startswith("network ")]
    stops = [at for at, text in notes if text.startswith("load stopped")]
    last = min([end, *stops])
    return [(at, until, phase)
            for (at, phase), (until, _) in zip(marks, [*marks[1:], (last, "")][:len(marks)], strict=True)
            if phase != "clean" and until > at]


def outage_spans(notes: Sequence[tuple[float, str]], end: float) -> dict[str, list[Span]]:
    """Each killed process's down time, by name: from its SIGKILL note to its restart note (or ``end``)."""
    spans: dict[str, list[Span]] = {}
    down_since: dict[str, float] = {}
    for at, text in notes:
        if text.endswith(KILLED):
            down_since[text.removesuffix(KILLED)] = at
        for name in [name for name in down_since if text.startswith(name + RESTARTED)]:
            spans.setdefault(name, []).append((down_since.pop(name), at, "down"))
    for name, since in down_since.items():
        spans.setdefault(name, []).append((since, end, "down"))
    return dict(sorted(spans.items()))


def draw_png(timeline: Timeline, path: Path, title: str) -> bool:
    """Render ``timeline`` to a PNG at ``path``; False (nothing written) without matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        return False
    rows = [*timeline.breakers, *(f"{name} process" for name in timeline.outages)]
    figure = Figure(figsize=(11, 3.2 + 0.35 * len(rows)), layout="constrained")
    counts, states = figure.subplots(2, 1, sharex=True,
                                     gridspec_kw={"height_ratios": [3, 0.6 + 0.35 * len(rows)]})
    for start, stop, phase in timeline.faults:
        for axes in (counts, states):
            axes.axvspan(start, stop, color=PHASE_COLOURS.get(phase, "#dddddd"), alpha=0.35, lw=0)
    seconds = range(len(next(iter(timeline.per_second.values()), [])))
    for kind, values in timeline.per_second.items():
        counts.step(seconds, values, where="post", color=OUTCOME_COLOURS[kind], lw=1.4,
                    label=f"{kind} ({sum(values)})")
    counts.set_yscale("symlog", linthresh=10)
    counts.set_ylabel("POSTs answered per second")
    counts.set_title(title, fontsize=10)
    phases = sorted({phase for _, _, phase in timeline.faults})
    counts.legend(handles=[*counts.get_lines(),
                           *(Patch(color=PHASE_COLOURS.get(p, "#dddddd"), alpha=0.5, label=f"network {p}")
                             for p in phases)],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    bars = [*timeline.breakers.values(), *timeline.outages.values()]
    for row, spans in enumerate(bars):
        states.broken_barh([(start, stop - start) for start, stop, _ in spans], (row - 0.4, 0.8),
                           facecolors=[STATE_COLOURS.get(state, "#616161") for _, _, state in spans])
    states.set_yticks(range(len(rows)), rows, fontsize=8)
    states.set_ylim(len(rows) - 0.5, -0.5)
    states.set_xlim(0, timeline.end)
    states.set_xlabel("seconds since the load started")
    states.legend(handles=[*(Patch(color=colour, label=f"breaker {state}")
                             for state, colour in STATE_COLOURS.items()),
                           Patch(color="#616161", label="process down")],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.savefig(path, dpi=90)
    return True
