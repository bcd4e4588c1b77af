"""Where the services spend CPU under load: py-spy on every service while the benchmark load runs.

::

    python -m bench.profile                      # POST, 20 s, 32 connections
    python -m bench.profile --verb GET --out DIR
    python -m bench.profile --events             # with three NATS servers and two messages instances

Starts the three services, warms them up, then records each with
``py-spy record --format raw`` (collapsed stacks, one file per service,
which speedscope and flamegraph.pl open as they are) while the same load as
the benchmark runs, and prints for each service: how busy it was, its CPU
by component (the file of the innermost Python frame; ``event loop`` when
uvloop's C code is running), the time inside notable activities (log lines,
retry loop, breaker, ...) and the costliest functions, self and inclusive.
With ``--events`` the facade also publishes every message to a stream on
three NATS servers, which two messages instances consume (the benchmark's
"with events" cluster, on the in-memory store).
Needs py-spy (``pip install py-spy``) and permission to trace the services.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from resilience.testing.nats_server import NatsCluster
from scripts.cluster import Cluster

from .load import TOOLS, LoadError, drive, pick_tool
from .results import SMALL_STORE
from .run import seed

WARMUP = 2
TOP = 15
# Innermost frames that mean "in the event loop's C code" (uvloop: polling, I/O, callbacks).
LOOP_FRAMES = ("run_app (aiohttp/web.py", "run_forever (", "run_until_complete (")
ACTIVITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("log lines (structlog: processors, JSON, write)", ("structlog/",)),
    ("stdlib logging", ("logging/__init__.py",)),
    ("RPC client attempt (resilience/rpc/transport.py, aiohttp client)", ("resilience/rpc/transport.py",)),
    ("retry loop (tenacity)", ("tenacity/",)),
    ("circuit breaker (resilience/policies/breaker.py, pybreaker)",
     ("resilience/policies/breaker.py", "pybreaker/")),
    ("events (resilience/rpc/events.py, nats-py)", ("resilience/rpc/events.py", "nats/")),
    ("RPC dispatch (resilience/rpc/service.py)", ("resilience/rpc/service.py",)),
    ("correlation ID mint/check", ("accept_or_mint",)),
    ("uuid module", ("uuid.py",)),
    ("JSON body read (resilience/runtime/web.py read_json)", ("read_json",)),
    ("response building (json_response)", ("json_response",)),
)


@dataclass
class Summary:
    """Counts of samples by innermost frame, by frame anywhere in the stack, and by activity."""

    samples: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    components: Counter[str] = field(default_factory=Counter)
    activities: Counter[str] = field(default_factory=Counter)


def _function(frame: str) -> str:
    """``name (file:line)`` without the line: one entry per function."""
    name, _, location = frame.rpartition(" (")
    return f"{name} ({location.rpartition(':')[0] or location.rstrip(')')})"


def _component(frame: str) -> str:
    """The library or package of a frame: the first part of its file path."""
    if frame.startswith(LOOP_FRAMES):
        return "event loop (uvloop, C)"
    location = frame.rpartition(" (")[2].rpartition(":")[0]
    head = location.split("/", 1)[0]
    return head.removesuffix(".py").strip("<>").removeprefix("frozen ")


def summarize(collapsed: str) -> Summary:
    """Summarize py-spy's raw output: ``frame;frame;...;innermost count`` per line."""
    summary = Summary()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        summary.samples += count
        summary.self_time[_function(frames[-1])] += count
        summary.components[_component(frames[-1])] += count
        for function in {_function(frame) for frame in frames}:
            summary.inclusive[function] += count
        for label, markers in ACTIVITIES:
            if any(marker in frame for frame in frames for marker in markers):
                summary.activities[label] += count
    return summary


def _rows(counter: Counter[str], total: int, limit: int, skip_above: float = 1.01) -> list[str]:
    rows = []
    for name, count in counter.most_common():
        share = count / total
        if share >= skip_above:
            continue
        rows.append(f"  {share:6.1%}  {name}")
        if len(rows) == limit:
            break
    return rows


def render(name: str, summary: Summary, seconds: float, rate: int) -> str:
    """A plain-text report of one service's profile."""
    total = max(summary.samples, 1)
    busy = summary.samples / (seconds * rate)
    lines = [f"== {name}: {summary.samples} samples, busy {busy:.0%} of one core",
             "CPU by component (innermost frame):", *_rows(summary.components, total, TOP),
             "Time inside (inclusive):", *_rows(summary.activities, total, len(ACTIVITIES)),
             "Costliest functions, self:", *_rows(summary.self_time, total, TOP),
             # Frames on (nearly) every stack are the runner's outer frames: not informative.
             "Costliest functions, inclusive:", *_rows(summary.inclusive, total, TOP + 10, 0.97)]
    return "\n".join(lines)


def py_spy() -> str:
    """py-spy on PATH or next to this interpreter."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def record(spy: str, verb: str, duration: int, connections: int, rate: int, tool: str,
           out: Path, events: bool = False) -> None:
    """Run the load with every service under ``spy`` (py-spy); write ``<service>.txt`` and print
    summaries."""
    with ExitStack() as stack:
        env, instances = {}, 1
        if events:
            nats = stack.enter_context(NatsCluster(out / "nats"))
            nats.start_all()
            env, instances = {"NATS_URLS": nats.urls}, 2
        cluster = stack.enter_context(Cluster(out / "logs", env=env, messages_instances=instances))
        cluster.start_all()
        url = f"{cluster.facade_url}/facade"
        if verb == "GET":
            uvloop.run(seed(cluster.facade_url, SMALL_STORE))
        drive(tool, url, verb, connections=connections, duration=WARMUP)
        spies = {name: subprocess.Popen(
            [spy, "record", "--pid", str(proc.pid), "--duration", str(duration), "--rate", str(rate),
             "--format", "raw", "-o", str(out / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, proc in cluster.procs.items()}
        try:
            result = drive(tool, url, verb, connections=connections, duration=duration + 2)
            for proc in spies.values():
                proc.wait(30)
        finally:
            for proc in spies.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    print(f"{verb} /facade under py-spy: {result.rps:,.0f} requests/s, p50 {result.p50_ms:.2f} ms, "
          f"p99 {result.p99_ms:.2f} ms (the profiler slows the services down)\n")
    for name in spies:
        path = out / f"{name}.txt"
        if path.exists():
            print(render(name, summarize(path.read_text()), duration, rate) + "\n")
    print(f"collapsed stacks and logs kept in {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--verb", choices=("POST", "GET"), default="POST")
    parser.add_argument("--duration", type=int, default=20, help="seconds recorded (default 20)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=200, help="samples per second (default 200)")
    parser.add_argument("--tool", choices=TOOLS, default="auto")
    parser.add_argument("--events", action="store_true",
                        help="publish every message to a three-server NATS stream (needs nats-server)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to keep the stacks and logs (default: a new temporary directory)")
    args = parser.parse_args(argv)
    spy = py_spy()  # before any directory is made: without py-spy, nothing is left behind
    try:
        tool = pick_tool(args.tool)
    except LoadError as exc:
        raise SystemExit(str(exc)) from None
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        record(spy, args.verb, args.duration, args.connections, args.rate, tool, out, args.events)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
