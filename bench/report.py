"""The figures as Markdown: each target's verdict, the tables a run prints, and docs/benchmark.md.

Tables are tabulate's ``pipe`` format (GitHub's, with column alignment).
``document`` keeps the page's own description, everything above ``## Results``,
and replaces the results below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tabulate import tabulate

from .results import EVENTS_SYSTEM, REPLICA_COUNTS, SMALL_STORE, Report, bare_beside, redis_system

# The targets, and the conditions they are defined at.
POST_RATIO_MIN = 0.45
GET_RATIO_MIN = 0.30
POST_P99_MAX_MS = 25.0
BYTES_PER_MESSAGE_MAX = 300.0
WRAPPER_OVERHEAD_MAX = 0.10
REDIS_POST_RATIO_MIN = 0.30
EVENTS_POST_RATIO_MIN = 0.25
TARGET_CONNECTIONS = 32
TARGET_CORES = 2

PROCESSES = ("facade", "logging", "messages")
NAMES = {"bare": "bare handler (1 process)", "facade": "facade -> logging + messages"}
RESULTS_HEADING = "## Results"


@dataclass(frozen=True)
class Check:
    """One figure against its target; ``passed`` is None when the figure was not measured."""

    figure: str
    measured: str
    target: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "NOT RUN"}[self.passed]


def checks(report: Report) -> list[Check]:
    """Every target, in the order of the project's list, judged on this run's figures."""
    post_ratio, get_ratio = report.ratio("facade", "POST"), report.ratio("facade", "GET")
    p99 = report.load[("facade", "POST")].p99_ms
    per_message = report.store.bytes_per_message
    overhead = report.wrapper.overhead_share
    listed = [
        Check("POST /facade rate / bare POST rate", f"{post_ratio:.2f}", f">= {POST_RATIO_MIN:.2f}",
              post_ratio >= POST_RATIO_MIN),
        Check(f"GET /facade rate / bare GET rate ({SMALL_STORE} stored)", f"{get_ratio:.2f}",
              f">= {GET_RATIO_MIN:.2f}", get_ratio >= GET_RATIO_MIN),
        Check("POST /facade p99 latency", f"{p99:.1f} ms", f"<= {POST_P99_MAX_MS:.0f} ms",
              p99 <= POST_P99_MAX_MS),
        Check("logging service memory per stored message", f"{per_message:.0f} B",
              f"<= {BYTES_PER_MESSAGE_MAX:.0f} B", per_message <= BYTES_PER_MESSAGE_MAX),
        Check("resilience wrapper overhead per call", f"{overhead:.1%}",
              f"<= {WRAPPER_OVERHEAD_MAX:.0%}", overhead <= WRAPPER_OVERHEAD_MAX),
    ]
    redis_figure = "POST /facade on Redis, 1 replica / bare POST rate"
    redis_target = f">= {REDIS_POST_RATIO_MIN:.2f}"
    if report.redis.skipped:
        listed.append(Check(redis_figure, "-", redis_target, None))
    else:
        redis_ratio = report.ratio(redis_system(1), "POST")
        listed.append(Check(redis_figure, f"{redis_ratio:.2f}", redis_target,
                            redis_ratio >= REDIS_POST_RATIO_MIN))
    events_figure = "POST /facade on Redis with events (3 NATS servers, 2 messages) / bare POST rate"
    events_target = f">= {EVENTS_POST_RATIO_MIN:.2f}"
    if report.redis.skipped or report.redis.events_skipped:
        listed.append(Check(events_figure, "-", events_target, None))
    else:
        events_ratio = report.ratio(EVENTS_SYSTEM, "POST")
        listed.append(Check(events_figure, f"{events_ratio:.2f}", events_target,
                            events_ratio >= EVENTS_POST_RATIO_MIN))
    return listed


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A pipe table of already formatted cells; ``align`` has one ``l`` or ``r`` per column."""
    return tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True,
                    colalign=["right" if a == "r" else "left" for a in align])


def targets_table(report: Report) -> str:
    rows = [[c.figure, c.measured, c.target, f"**{c.verdict}**"] for c in checks(report)]
    return _table(["figure", "measured", "target", "result"], rows, "lrrl")


def _load_rows(report: Report, names: dict[str, str]) -> list[list[str]]:
    """One row per verb and system: rate, latency, errors and the ratio to the bare handler."""
    rows = []
    for verb in ("POST", "GET"):
        for system, name in names.items():
            result = report.load[(system, verb)]
            rows.append([f"{verb} /facade", name, f"{result.rps:,.0f}", f"{result.p50_ms:.2f}",
                         f"{result.p99_ms:.2f}", f"{result.errors:,}",
                         f"**{report.ratio(system, verb):.2f}**"])
    return rows


LOAD_HEADER = ["request", "served by", "requests/s", "p50 ms", "p99 ms", "errors", "ratio to bare"]


def throughput_table(report: Report) -> str:
    return _table(LOAD_HEADER, _load_rows(report, NAMES), "llrrrrr")


def sequential_table(report: Report) -> str:
    """One client, each POST sent when the one before was answered: a single request's latency."""
    names = {"bare": "bare handler (1 process)", "facade": "facade -> logging + messages"}
    rows = [[names[system], f"{median:.2f}", f"{p99:.2f}"]
            for system, (median, p99) in report.sequential_ms.items()]
    return _table(["served by", "median ms", "p99 ms"], rows, "lrr")


def redis_table(report: Report) -> str:
    names = {}
    for n in REPLICA_COUNTS:
        replicas = f"{n} replica{'s' if n > 1 else ''}"
        names[redis_system(n)] = f"facade, {replicas} on Redis"
        names[bare_beside(redis_system(n))] = f"bare handler, in turn with {replicas}"
    if (EVENTS_SYSTEM, "POST") in report.load:
        names[EVENTS_SYSTEM] = "facade, 1 replica on Redis, events on"
        names[bare_beside(EVENTS_SYSTEM)] = "bare handler, in turn with events on"
    return _table(LOAD_HEADER, _load_rows(report, names), "llrrrrr")


def events_cpu_table(report: Report) -> str:
    """CPU per request of every process of the cluster, with events on and without."""
    cpu = report.redis.cpu_us
    systems = [redis_system(1), EVENTS_SYSTEM]
    names = sorted({name for key, used in cpu.items() for name in used})
    rows = []
    for verb in ("POST", "GET"):
        for system in systems:
            used = cpu.get((system, verb), {})
            rows.append([f"{verb}, {'events on' if system == EVENTS_SYSTEM else 'no events'}",
                         *(f"{used[name]:.0f}" if name in used else "-" for name in names),
                         f"{sum(used.values()):.0f}"])
    return _table(["request", *names, "all"], rows, "l" + "r" * (len(names) + 1))


def cpu_table(report: Report) -> str:
    rows = []
    for verb in ("POST", "GET"):
        bare = report.cpu_total_us("bare", verb)
        facade = report.cpu_us[("facade", verb)]
        total = report.cpu_total_us("facade", verb)
        rows.append([f"{verb} /facade", f"{bare:.0f}",
                     *(f"{facade.get(name, 0.0):.0f}" for name in PROCESSES), f"{total:.0f}",
                     f"{total / bare:.1f}x" if bare > 0 else "-"])
    return _table(["request", "bare handler", *PROCESSES, "three services", "three services / bare"],
                  rows, "l" + "r" * (len(PROCESSES) + 3))


def store_table(report: Report) -> str:
    store = report.store
    rows = [[f"{size:,}", f"{store.get_median_ms[size]:.1f}", f"{store.rss[size] / 2**20:.1f}",
             f"{(store.rss[size] - store.baseline_rss) / size:.0f}"] for size in sorted(store.rss)]
    return _table(["messages stored", "GET /facade median ms", "logging RSS MiB", "RSS growth B/message"],
                  rows, "rrrr")


def wrapper_table(report: Report) -> str:
    w = report.wrapper
    cpu_extra = w.wrapped_cpu_us - w.raw_cpu_us
    rows = [
        ["raw aiohttp POST /rpc/log (dumps, post, read, loads)", f"{w.raw_us:.0f}", f"{w.raw_cpu_us:.0f}"],
        ["the same through RpcProxy + downstream_policies", f"{w.wrapped_us:.0f}",
         f"{w.wrapped_cpu_us:.0f}"],
        ["difference: the wrapper's cost per call", f"**{w.overhead_us:.0f} ({w.overhead_share:.1%})**",
         f"{cpu_extra:.0f} ({cpu_extra / w.raw_cpu_us:.0%})"],
        ["CallPolicy.call around an attempt that does nothing, in a tight loop",
         f"{w.policy_only_us:.0f}", ""],
        ["request metrics (count + latency histogram) per request, in a tight loop",
         f"{w.metrics_only_us:.1f}", ""],
    ]
    return _table(["call, sequential, in one process", "wall µs", "client CPU µs"], rows, "lrr")


def machine_table(report: Report) -> str:
    m, plan = report.machine, report.plan
    rows = [
        ["CPU", m.cpu], ["cores", str(m.cores)], ["Python", m.python], ["libraries", m.libraries],
        ["load tool", m.load_tool],
        ["load", f"{plan.connections} connections, {plan.rounds} slices of {plan.slice_seconds} s "
                 f"per run, in turn with the bare handler's, after a {plan.warmup} s warm-up"],
        ["date", m.date],
    ]
    return _table(["machine", "value"], rows, "ll")


def redis_section(report: Report) -> str:
    """The Redis phase's table and memory per message, or why it did not run."""
    redis = report.redis
    if redis.skipped:
        return f"### On Redis\n\nSkipped: {redis.skipped}."
    memory = ", ".join(f"{n} replica{'s' if n > 1 else ''} {redis.bytes_per_message[n]:.0f} B "
                       f"(over {redis.stored[n]:,})" for n in REPLICA_COUNTS)
    section = (f"### On Redis (redis-server {redis.version}, the shipped redis.conf: AOF, "
               f"appendfsync always; each ratio to the bare handler's runs taken in turn with it)"
               f"\n\n{redis_table(report)}\n\n"
               f"Redis memory per stored message (`INFO memory` `used_memory` given back by emptying "
               f"Redis once the cluster had stopped, over every message it stored): {memory}.")
    if redis.events_skipped:
        return f"{section}\n\nEvents run skipped: {redis.events_skipped}."
    post = {system: sum(redis.cpu_us.get((system, "POST"), {}).values())
            for system in (redis_system(1), EVENTS_SYSTEM)}
    return (f"{section}\n\n#### CPU per request on Redis, 1 replica, without and with events "
            f"(µs of user + system time, per process)\n\n{events_cpu_table(report)}\n\n"
            f"An event costs {post[EVENTS_SYSTEM] - post[redis_system(1)]:.0f} µs of CPU per POST "
            f"over the whole cluster (the facade's publish, the three NATS servers, the two "
            f"messages instances; the processes of the run without events are facade, logging, "
            f"messages).")


def caveats(report: Report) -> list[str]:
    """Why this run's figures may not be comparable with the targets."""
    notes = []
    if report.plan.quick:
        notes.append("Quick run: short load runs and a smaller store; figures are indicative only.")
    if report.plan.connections != TARGET_CONNECTIONS or report.machine.cores != TARGET_CORES:
        notes.append(f"Targets are defined at {TARGET_CONNECTIONS} connections on {TARGET_CORES} "
                     f"cores; this run used {report.plan.connections} connections on "
                     f"{report.machine.cores} cores.")
    for (system, verb), result in sorted(report.load.items()):
        if result.errors:
            notes.append(f"{verb} {system}: {result.errors:,} requests failed "
                         f"({result.http_errors:,} HTTP errors, {result.socket_errors:,} socket errors).")
    return notes


def tables(report: Report) -> str:
    """The results as Markdown sections (what a run prints)."""
    parts = [
        "### Targets\n\n" + targets_table(report),
        "### Throughput\n\n" + throughput_table(report),
        f"### Single request ({report.plan.sequential_per_round * report.plan.rounds:,} sequential "
        "POSTs from one client, "
        f"in {report.plan.rounds} rounds taken in turn, each after a tenth as many of warm-up)"
        "\n\n" + sequential_table(report),
        "### CPU per request (µs of user + system time, per process, during the same runs)\n\n"
        + cpu_table(report),
        f"### Logging service store (memory per message over {report.store.largest:,} messages)\n\n"
        + store_table(report),
        f"### Resilience wrapper (medians of {report.wrapper.calls:,} interleaved calls each)\n\n"
        + wrapper_table(report),
        redis_section(report),
        "### Machine\n\n" + machine_table(report),
    ]
    notes = caveats(report)
    if notes:
        parts.append("\n".join(f"> {note}" for note in notes))
    return "\n\n".join(parts) + "\n"


def document(report: Report, current: str) -> str:
    """docs/benchmark.md: ``current``'s description (above ``## Results``), then this run's tables."""
    description = current.partition(RESULTS_HEADING)[0]
    return f"{description}{RESULTS_HEADING}\n\n{tables(report)}"
