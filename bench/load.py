"""Drive one endpoint with the same load whatever it is: wrk if installed, else ``bench.loadgen``.

Both run as their own process and print one ``BENCH {...}`` summary line,
which ``parse_summary`` turns into a ``LoadResult``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from .results import LoadResult

ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = Path(__file__).with_name("wrk.lua")
POST_BODY = orjson.dumps({"msg": "message 12345"}).decode()
TOOLS = ("auto", "wrk", "aiohttp")
# A reply slower than this counts as a timeout error rather than a latency sample.
REQUEST_TIMEOUT = 10
SUMMARY_PREFIX = "BENCH "


class LoadError(RuntimeError):
    """The load tool failed or printed no summary."""


def pick_tool(requested: str) -> str:
    """``wrk`` or ``aiohttp``: ``auto`` takes wrk when it is on PATH."""
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "aiohttp"
    if requested == "wrk" and not shutil.which("wrk"):
        raise LoadError("wrk is not on PATH (on Debian: apt-get install wrk), or use --tool aiohttp")
    return requested


def describe_tool(tool: str, threads: int) -> str:
    """``wrk 4.1.0 (1 thread)`` or ``bench.loadgen (aiohttp, 1 process)``."""
    if tool == "wrk":
        probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        words = (probe.stdout + probe.stderr).split()
        release = words[1].rpartition("/")[2] if len(words) > 1 else "unknown"
        return f"wrk {release} ({threads} thread{'s' if threads > 1 else ''})"
    return "bench.loadgen (aiohttp + uvloop, 1 process)"


def drive(tool: str, url: str, verb: str, *, connections: int, duration: int,
          threads: int = 1) -> LoadResult:
    """Load ``url`` with ``verb`` (POST sends a short message) for ``duration`` seconds."""
    body = POST_BODY if verb == "POST" else ""
    if tool == "wrk":
        command = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration}s",
                   f"--timeout={REQUEST_TIMEOUT}s", "-s", str(LUA_SCRIPT), url, "--", verb, body]
    else:
        command = [sys.executable, "-m", "bench.loadgen", "--url", url, "--method", verb,
                   "--body", body, "--connections", str(connections), "--duration", str(duration)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=duration + 60)
    if done.returncode != 0:
        raise LoadError(f"{command[0]} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_summary(done.stdout)


def parse_summary(output: str) -> LoadResult:
    """The ``LoadResult`` in a load tool's ``BENCH {...}`` line."""
    for line in output.splitlines():
        if line.startswith(SUMMARY_PREFIX):
            data = orjson.loads(line.removeprefix(SUMMARY_PREFIX))
            return LoadResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                http_errors=int(data["http_errors"]),
                socket_errors=int(data["socket_errors"]),
                p50_ms=data["p50_us"] / 1e3,
                p99_ms=data["p99_us"] / 1e3,
            )
    raise LoadError(f"no summary line in the load tool's output: {output.strip()[-500:]!r}")
