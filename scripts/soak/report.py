"""The soak's report: everything one run found, as plain data and as a human-readable summary."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

from .load import GetStats
from .timeline import outage_spans
from .verdict import Tally

#: The facade settings the report shows (they shape what the faults do).
SETTINGS_SHOWN = ("rpc_timeout", "retry_attempts", "retry_deadline", "breaker_failure_rate",
                  "breaker_min_calls", "breaker_open_duration")


@dataclass
class Report:
    """Everything one soak run found; ``passed`` when ``problems`` is empty."""

    seed: int
    duration: float
    concurrency: int
    kill_logging: bool
    #: Whether the run was on the cluster (redis-server, logging replicas) rather than in memory.
    cluster: bool
    elapsed: float
    #: The facade's retry and breaker settings during the run.
    settings: dict[str, float]
    tally: Tally
    gets: GetStats
    #: The final client outcome of every POST, by kind.
    outcomes: dict[str, int]
    faults: dict[str, Any]
    evidence: dict[str, Any]
    readback: dict[str, Any]
    #: Exit status and seconds taken by each service on the final SIGTERM.
    shutdown: dict[str, dict[str, float]]
    log_dir: str
    #: When the load started (UTC, as in the services' logs); timeline times count from there.
    load_started_utc: str
    timeline: list[tuple[float, str]]
    #: The timeline picture's path, or why it was skipped.
    picture: str
    problems: list[str]
    #: On the cluster, what each messages instance kept: how many, and lost, duplicated, unexpected.
    messages: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the run found nothing wrong."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        data = asdict(self)
        data["tally"]["failed"] = self.tally.failed
        data["passed"] = self.passed
        return data

    def render(self) -> str:
        """A human-readable summary."""
        t, g, e = self.tally, self.gets, self.evidence
        lines = [
            f"soak: {self.duration:g} s of load, {self.concurrency} clients, seed {self.seed}"
            f"{', logging kills on' if self.kill_logging else ''}"
            f"{', cluster on Redis and NATS' if self.cluster else ''} ({self.elapsed:.1f} s in all)",
            "facade: " + ", ".join(f"{k.upper()}={v:g}" for k, v in self.settings.items()),
            *self._fault_lines(),
            "",
            f"POST attempted           {t.attempted:>8}",
            f"  acknowledged (200)     {t.acknowledged:>8}",
            f"  lost                   {t.lost:>8}",
            f"  duplicated             {t.duplicated:>8}",
            f"  unexpected             {t.unexpected:>8}",
            f"  indeterminate          {t.indeterminate:>8}   (not acknowledged, stored anyway)",
            f"  failed and absent      {t.failed_and_absent:>8}",
        ]
        if self.kill_logging:
            lines += [
                f"  lost with logging restart {t.lost_with_logging_restart:>5}   (acknowledged before the "
                "last logging restart: in-memory store, lost by design)",
                f"  held to the strict rule {t.checked:>7}   (sent after the last logging restart; "
                f"{t.checked_acknowledged} acknowledged)",
            ]
        if t.store_killed:
            lines.append(f"  acknowledged before the last redis-server SIGKILL {t.before_store_kill} "
                         f"({t.before_store_kill_stored} of them stored)")
        if t.after_last_restart is not None:
            lines.append(f"  sent after the last restart and acknowledged {t.after_last_restart}")
        lines += [
            f"  uuid mismatches        {t.uuid_mismatches:>8}",
            "  client outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            f"GET attempted            {g.attempted:>8}   (ok {g.ok}, degraded without messages "
            f"{g.degraded}, failed {g.failed}, unexpected texts {g.unexpected_texts})",
            f"stored at the end        {self.readback['stored']:>8}   (paged read through the facade "
            f"{self.readback['via_facade']})",
            *(f"{name} kept {v['kept']:>14}   (lost {v['lost']}, duplicated {v['duplicated']}, "
              f"unexpected {v['unexpected']})" for name, v in self.messages.items()),
            "",
            f"evidence: facade retried logging calls {e['facade_retries']}x, breaker opened "
            f"{e['breaker_opened']}, logging ignored {e['duplicates_ignored']} duplicate deliveries"
            + (f", found Redis unreachable {e['store_unreachable_logged']}x" if self.cluster else ""),
            f"          error-level log lines {e['error_lines']}, tracebacks {e['tracebacks']}",
            "shutdown: " + ", ".join(f"{name} exit {s['exit']:g} in {s['seconds']:.1f} s"
                                     for name, s in self.shutdown.items()),
            f"logs: {self.log_dir}",
            f"timeline picture: {self.picture}",
        ]
        for kind, found in self.tally.examples.items():
            lines.append(f"examples of {kind}: {', '.join(found)}")
        lines.append("")
        if self.passed:
            lines.append("PASS: nothing lost, duplicated or unexpected"
                         + (", in logging or in messages" if self.messages else ""))
        else:
            lines += ["FAIL:", *(f"  - {problem}" for problem in self.problems)]
        return "\n".join(lines)

    def _fault_lines(self) -> list[str]:
        """What faults were injected, how many of each, and (with ``cluster``) when each kill came."""
        f, kills = self.faults, self.faults["kills"]
        if not self.cluster:
            return [
                "faults: network phases " + ", ".join(f"{k} x{v}" for k, v in sorted(f["phases"].items())),
                f"        proxy forwarded {f['proxy_forwarded']}, dropped replies {f['proxy_dropped']}, "
                f"503s injected {f['proxy_errored']}, upstream unreachable {f['proxy_upstream_failures']}",
                f"        messages SIGKILLed {kills.get('messages', 0)}x, "
                f"logging SIGKILLed {kills.get('logging', 0)}x",
            ]
        replicas = {name: n for name, n in kills.items() if name.startswith("logging")}
        nats = sum(n for name, n in kills.items() if name.startswith("nats"))
        messages = sum(n for name, n in kills.items() if name.startswith("messages"))
        end = self.timeline[-1][0] if self.timeline else 0.0
        downs = sorted((start, stop, name) for name, spans in outage_spans(self.timeline, end).items()
                       for start, stop, _ in spans)
        return [
            f"faults: logging replicas SIGKILLed {sum(replicas.values())}x in {f['replica_rounds']} rounds "
            f"({f['pair_rounds']} of two at once; {', '.join(f'{k} {v}x' for k, v in replicas.items())}), "
            f"redis-server SIGKILLed {kills.get('redis-server', 0)}x, the event stream's leader "
            f"SIGKILLed {nats}x, messages instances SIGKILLed {messages}x; no network faults "
            "(the facade calls the replicas directly)",
            *textwrap.wrap("        down (s since the load started): "
                           + ", ".join(f"{name} {start:.1f}-{stop:.1f}" for start, stop, name in downs),
                           width=110, subsequent_indent=" " * 10),
        ]
