"""The figures as Markdown: the tables printed after a run, and the whole docs/benchmark.md."""

from __future__ import annotations

from dataclasses import dataclass

from .plan import SMALL_STORE
from .results import Report

# The targets, and the conditions they are defined at (group commit and shared reads on).
POST_RATIO_MIN = 0.45
GET_RATIO_MIN = 0.30
POST_P99_MAX_MS = 25.0
BYTES_PER_MESSAGE_MAX = 300.0
WRAPPER_OVERHEAD_MAX = 0.10
TARGET_CONNECTIONS = 32
TARGET_CORES = 2

PROCESSES = ("facade", "logging", "messages")
NAMES = {"bare": "bare handler (1 process)", "facade": "facade -> logging + messages"}


@dataclass(frozen=True)
class Check:
    """One figure against its target."""

    figure: str
    measured: str
    target: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def checks(report: Report) -> list[Check]:
    """Every target, in the order of the project's list."""
    post_ratio, get_ratio = report.ratio("POST"), report.ratio("GET")
    p99 = report.load[("facade", "POST")].p99_ms
    per_message = report.store.bytes_per_message
    overhead = report.wrapper.overhead_share
    return [
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


def _table(header: list[str], rows: list[list[str]], right: set[int] | frozenset[int] = frozenset()) -> str:
    align = ["---:" if index in right else "---" for index in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def targets_table(report: Report) -> str:
    rows = [[c.figure, c.measured, c.target, f"**{c.verdict}**"] for c in checks(report)]
    return _table(["figure", "measured", "target", "result"], rows, {1, 2})


def throughput_table(report: Report) -> str:
    rows = []
    for verb in ("POST", "GET"):
        for name in ("bare", "facade"):
            result = report.load[(name, verb)]
            ratio = 1.0 if name == "bare" else report.ratio(verb)
            rows.append([f"{verb} /facade", NAMES[name], f"{result.rps:,.0f}", f"{result.p50_ms:.2f}",
                         f"{result.p99_ms:.2f}", f"{result.errors:,}", f"**{ratio:.2f}**"])
    return _table(["request", "served by", "requests/s", "p50 ms", "p99 ms", "errors", "ratio to bare"],
                  rows, {2, 3, 4, 5, 6})


def cpu_table(report: Report) -> str:
    rows = []
    for verb in ("POST", "GET"):
        bare = report.cpu_total_us("bare", verb)
        facade = report.cpu_us[("facade", verb)]
        total = report.cpu_total_us("facade", verb)
        cells = [f"{facade.get(name, 0.0):.0f}" for name in PROCESSES]
        rows.append([f"{verb} /facade", f"{bare:.0f}", *cells, f"{total:.0f}",
                     f"{total / bare:.1f}x" if bare > 0 else "-"])
    return _table(["request", "bare handler", *PROCESSES, "three services", "three services / bare"],
                  rows, set(range(1, len(PROCESSES) + 4)))


def store_table(report: Report) -> str:
    store = report.store
    rows = [[f"{size:,}", f"{store.get_median_ms[size]:.1f}", f"{store.rss[size] / 2**20:.1f}",
             f"{(store.rss[size] - store.baseline_rss) / size:.0f}"] for size in sorted(store.rss)]
    return _table(["messages stored", "GET /facade median ms", "logging RSS MiB", "RSS growth B/message"],
                  rows, {0, 1, 2, 3})


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
    return _table(["call, sequential, in one process", "wall µs", "client CPU µs"], rows, {1, 2})


def machine_table(report: Report) -> str:
    m, plan = report.machine, report.plan
    rows = [
        ["CPU", m.cpu], ["cores", str(m.cores)], ["Python", m.python], ["libraries", m.libraries],
        ["load tool", m.load_tool],
        ["load", f"{plan.connections} connections, {plan.duration} s per run after a "
                 f"{plan.warmup} s warm-up"],
        ["date", m.date],
    ]
    return _table(["machine", "value"], rows)


def caveats(report: Report) -> list[str]:
    """Why this run's figures may not be comparable with the targets."""
    notes = []
    if report.plan.quick:
        notes.append("Quick run: short load runs and a smaller store; figures are indicative only.")
    if report.plan.connections != TARGET_CONNECTIONS or report.machine.cores != TARGET_CORES:
        notes.append(f"Targets are defined at {TARGET_CONNECTIONS} connections on {TARGET_CORES} "
                     f"cores; this run used {report.plan.connections} connections on "
                     f"{report.machine.cores} cores.")
    for (name, verb), result in sorted(report.load.items()):
        if result.errors:
            notes.append(f"{verb} {name}: {result.errors:,} requests failed "
                         f"({result.http_errors:,} HTTP errors, {result.socket_errors:,} socket errors).")
    return notes


def tables(report: Report) -> str:
    """The results as Markdown sections (what a run prints)."""
    largest = report.store.largest
    parts = [
        "### Targets\n\n" + targets_table(report),
        "### Throughput\n\n" + throughput_table(report),
        "### CPU per request (µs of user + system time, per process, during the same runs)\n\n"
        + cpu_table(report),
        f"### Logging service store (memory per message over {largest:,} messages)\n\n"
        + store_table(report),
        f"### Resilience wrapper (medians of {report.wrapper.calls:,} interleaved calls each)\n\n"
        + wrapper_table(report),
        "### Machine\n\n" + machine_table(report),
    ]
    notes = caveats(report)
    if notes:
        parts.append("\n".join(f"> {note}" for note in notes))
    return "\n\n".join(parts) + "\n"


DOCUMENT_HEAD = """\
# Benchmark

What the resilient path costs. The same load drives a bare aiohttp handler
(one hop, one process: the floor) and the real facade, which calls the
logging and messages services over RPC with retry, circuit breaker, timeout,
correlation IDs and JSON logs. The headline figures are the **ratios** of
the facade's rates to the bare handler's: they carry across machines far
better than absolute rates do.

Run it from the repository root (wrk is used when it is on `PATH`,
`apt-get install wrk` on Debian; otherwise the bundled aiohttp load
generator, in its own process):

```
python -m bench                 # about 2 minutes; prints these tables
python -m bench --quick         # a smoke run, well under a minute
python -m bench --write         # also rewrites this page
python -m bench --help          # --duration, --connections, --tool, --threads, --log-dir
```

What is measured:

- **Throughput**: POST /facade (`{"msg": "message 12345"}`) and GET /facade,
  closed loop, the same connections and duration for both servers; GET with
  {small} messages stored in each. The bare handler answers the same JSON shapes.
- **CPU per request**: user + system CPU time of each serving process
  (`/proc/<pid>/stat`) during the same runs, divided by the requests served.
  It shifts far less than the rates when other work shares the machine.
- **Store**: a freshly started logging service is filled through its
  `/rpc/log` endpoint with short messages (`message 12345`) under fresh
  UUIDs. Memory per message is the growth of the process's `VmRSS`
  (`/proc/<pid>/status`) divided by the messages stored; GET /facade latency is
  the median of several sequential requests at each size (each reads the first
  page: at most 10,000 messages).
- **Wrapper**: in one process, sequential calls to `/rpc/log`, raw aiohttp
  against `RpcProxy` with `downstream_policies` (as the facade builds it),
  interleaved call by call; medians of wall time (the target) and of the
  caller's CPU time; plus the policy alone around an attempt that does nothing.

To see where the services spend that CPU, `python -m bench.profile [--verb GET]`
records each service with py-spy (`pip install py-spy`) under the same load
and prints its costliest components, activities and functions.

Every process runs on 127.0.0.1 on free ports and is stopped at the end,
even on error or Ctrl-C. Absolute figures move with the machine and whatever
else runs on it; rerun before comparing.

## Results
"""


def document(report: Report) -> str:
    """The whole docs/benchmark.md."""
    head = DOCUMENT_HEAD.replace("{small}", str(SMALL_STORE))
    return head + "\n" + tables(report)
