"""``python -m bench``: run the benchmark, print the tables, with ``--write`` rewrite docs/benchmark.md."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

#: What the benchmark needs beyond the services; the test extra installs them.
TEST_EXTRA = ("psutil", "tabulate")

try:
    from .load import ROOT, TOOLS, LoadError, describe_tool, pick_tool
    from .report import checks, document, tables
    from .results import Machine, Plan
    from .run import run
except ModuleNotFoundError as missing:
    if missing.name not in TEST_EXTRA:
        raise
    # One line instead of a traceback: the run install (`pip install -e .`) leaves these out.
    raise SystemExit(f"python -m bench needs {missing.name}: install the test extra, "
                     "pip install -e '.[test]'") from None

DOCUMENT = ROOT / "docs" / "benchmark.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, latency, memory and wrapper cost of the three services against "
                    "a bare aiohttp handler, in memory and on Redis, on 127.0.0.1.")
    parser.add_argument("--duration", type=int, default=None,
                        help="seconds per load run (default 15, 3 with --quick)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: short load runs, store up to 10,000 messages")
    parser.add_argument("--tool", choices=TOOLS, default="auto",
                        help="load generator: wrk if on PATH (auto), or the bundled aiohttp one")
    parser.add_argument("--write", action="store_true",
                        help="rewrite the results in docs/benchmark.md (its description is kept)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep the services' logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.connections < 1 or (args.duration is not None and args.duration < 1):
        parser.error("--connections and --duration must be at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def say(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run, print, and with ``--write`` write the document; exit 130 when interrupted."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every process is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        tool = pick_tool(args.tool)
        plan = Plan.build(tool=tool, quick=args.quick, duration=args.duration,
                          connections=args.connections)
        machine = Machine.describe(describe_tool(tool))
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            log_dir = args.log_dir or Path(tmp)
            log_dir.mkdir(parents=True, exist_ok=True)
            report = run(plan, machine, log_dir, say)
    except KeyboardInterrupt:
        say("interrupted; every process was stopped")
        raise SystemExit(130) from None
    except LoadError as exc:
        say(f"load tool failed: {exc}")
        raise SystemExit(1) from None
    print(tables(report))
    if args.write:
        DOCUMENT.write_text(document(report, DOCUMENT.read_text()))
        say(f"wrote {DOCUMENT.relative_to(ROOT)}")
    missed = [check.figure for check in checks(report) if check.passed is False]
    if missed:
        say(f"{len(missed)} target(s) missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
