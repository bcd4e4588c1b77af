"""The load: wrk when it is on PATH, else the closed-loop aiohttp generator this module also is.

``drive`` runs either as its own process (so the load never shares an event
loop with what it measures); both print one summary line, which
``parse_summary`` turns into a ``LoadResult``::

    BENCH {"requests": ..., "duration_us": ..., "http_errors": ..., "socket_errors": ...,
           "p50_us": ..., "p99_us": ...}

The generator, ``python -m bench.load --url URL [--method POST --body JSON]
--connections N --duration S``, runs ``N`` workers on uvloop, one keep-alive
connection each, every worker sending its next request as soon as the
previous reply is read, as wrk does.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import uvloop

from .results import LoadResult

ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = Path(__file__).with_name("wrk.lua")
POST_BODY = orjson.dumps({"msg": "message 12345"}).decode()
TOOLS = ("auto", "wrk", "aiohttp")
# A reply slower than this counts as a timeout error rather than a latency sample.
REQUEST_TIMEOUT = 10
SUMMARY_PREFIX = "BENCH "
# A failed connection is retried after this pause, so a dead server does not make a worker spin.
ERROR_PAUSE = 0.01


class LoadError(RuntimeError):
    """The load tool failed or printed no summary."""


def pick_tool(requested: str) -> str:
    """``wrk`` or ``aiohttp``: ``auto`` takes wrk when it is on PATH."""
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "aiohttp"
    if requested == "wrk" and not shutil.which("wrk"):
        raise LoadError("wrk is not on PATH (on Debian: apt-get install wrk), or use --tool aiohttp")
    return requested


def describe_tool(tool: str) -> str:
    """``wrk 4.1.0 (1 thread)`` or the bundled generator."""
    if tool == "wrk":
        probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        words = (probe.stdout + probe.stderr).split()
        return f"wrk {words[1].rpartition('/')[2] if len(words) > 1 else 'unknown'} (1 thread)"
    return "bench.load (aiohttp + uvloop, 1 process)"


def drive(tool: str, url: str, verb: str, *, connections: int, duration: int) -> LoadResult:
    """Load ``url`` with ``verb`` (POST sends a short message) for ``duration`` seconds."""
    body = POST_BODY if verb == "POST" else ""
    if tool == "wrk":
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={REQUEST_TIMEOUT}s",
                   "-s", str(LUA_SCRIPT), url, "--", verb, body]
    else:
        command = [sys.executable, "-m", "bench.load", "--url", url, "--method", verb,
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
            return LoadResult(requests=int(data["requests"]), seconds=data["duration_us"] / 1e6,
                              http_errors=int(data["http_errors"]),
                              socket_errors=int(data["socket_errors"]),
                              p50_ms=data["p50_us"] / 1e3, p99_ms=data["p99_us"] / 1e3)
    raise LoadError(f"no summary line in the load tool's output: {output.strip()[-500:]!r}")


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(1, math.ceil(share * len(sorted_values))) - 1]


async def generate(url: str, method: str, body: bytes | None, connections: int,
                   duration: float) -> dict[str, int]:
    """Run the closed-loop load and return the summary (microseconds for times)."""
    latencies: list[float] = []
    errors = {"http_errors": 0, "socket_errors": 0}
    headers = {"Content-Type": "application/json"} if body is not None else None

    async def worker(session: aiohttp.ClientSession, deadline: float) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.request(method, url, data=body, headers=headers) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                errors["socket_errors"] += 1
                await asyncio.sleep(ERROR_PAUSE)
                continue
            latencies.append(time.perf_counter() - started)
            errors["http_errors"] += resp.status >= 400

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, started + duration) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "duration_us": round(elapsed * 1e6), **errors,
            "p50_us": round(percentile(latencies, 0.50) * 1e6),
            "p99_us": round(percentile(latencies, 0.99) * 1e6)}


def main(argv: list[str] | None = None) -> None:
    """Run the bundled generator and print its summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.load",
                                     description="closed-loop HTTP load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="", help="JSON request body (sent as application/json)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    summary = uvloop.run(generate(args.url, args.method.upper(), args.body.encode() or None,
                                  args.connections, args.duration))
    sys.stdout.write(SUMMARY_PREFIX + orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
