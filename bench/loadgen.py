"""A small closed-loop HTTP load generator, for machines without wrk.

``python -m bench.loadgen --url URL [--method POST --body JSON] --connections N --duration S``
runs ``N`` workers on one keep-alive connection each, every worker sending its
next request as soon as the previous reply is read, for ``S`` seconds, on
uvloop in its own process (so it never shares an event loop with what it
measures). It prints the same summary line as ``wrk.lua``::

    BENCH {"requests": ..., "duration_us": ..., "http_errors": ..., "socket_errors": ...,
           "p50_us": ..., "p99_us": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

# A failed connection is retried after this pause, so a dead server does not make the loop spin.
ERROR_PAUSE = 0.01


@dataclass
class Tally:
    """What the workers saw: one latency (seconds) per completed response, and the failures."""

    latencies: list[float] = field(default_factory=list)
    http_errors: int = 0
    socket_errors: int = 0


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


async def worker(session: aiohttp.ClientSession, method: str, url: str, body: bytes | None,
                 deadline: float, tally: Tally) -> None:
    """Send requests back to back until ``deadline``, recording each outcome in ``tally``."""
    headers = {"Content-Type": "application/json"} if body is not None else None
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            async with session.request(method, url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            tally.socket_errors += 1
            await asyncio.sleep(ERROR_PAUSE)
            continue
        tally.latencies.append(time.perf_counter() - started)
        if status >= 400:
            tally.http_errors += 1


async def generate(url: str, method: str, body: bytes | None, connections: int,
                   duration: float) -> dict[str, int]:
    """Run the load and return the summary (microseconds for times)."""
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(worker(session, method, url, body, deadline, tally)
                               for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies = sorted(tally.latencies)
    return {
        "requests": len(latencies),
        "duration_us": round(elapsed * 1e6),
        "http_errors": tally.http_errors,
        "socket_errors": tally.socket_errors,
        "p50_us": round(percentile(latencies, 0.50) * 1e6),
        "p99_us": round(percentile(latencies, 0.99) * 1e6),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the load, print the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                     description="closed-loop HTTP load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="", help="JSON request body (sent as application/json)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    body = args.body.encode() if args.body else None
    summary = uvloop.run(generate(args.url, args.method.upper(), body, args.connections,
                                  args.duration))
    sys.stdout.write("BENCH " + orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
