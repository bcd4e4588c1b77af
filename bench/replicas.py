"""``python -m bench.replicas``: POST /facade rate on Redis with 1, 2 and 3 logging replicas, in one run.

The bare handler, the facade over in-memory logging (the default system),
then the facade over 1, 2 and 3 logging replicas sharing one redis-server
(the shipped ``redis.conf``: AOF, ``appendfsync always``), each driven with
the same POST load as ``python -m bench`` (wrk, or the bundled aiohttp load
generator). Each system starts afresh on free ports, on an emptied Redis.
Prints one Markdown table; ratios to the bare handler carry across machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from resilience.testing.cluster import Cluster, wait_until_healthy
from resilience.testing.redis_server import RedisServer

from .load import ROOT, TOOLS, drive, pick_tool
from .results import LoadResult
from .run import HOST, BareServer

REPLICA_COUNTS = (1, 2, 3)
Say = Callable[[str], None]


def measure(log_dir: Path, tool: str, duration: int, warmup: int, connections: int,
            say: Say) -> dict[str, LoadResult]:
    """Each system's POST load result, by its row label; no process outlives this call."""
    def post(name: str, url: str) -> None:
        say(f"POST {name}: {warmup} s warm-up, {duration} s at {connections} connections")
        drive(tool, url + "/facade", "POST", connections=connections, duration=warmup)
        results[name] = drive(tool, url + "/facade", "POST", connections=connections, duration=duration)

    results: dict[str, LoadResult] = {}
    with RedisServer(log_dir / "redis", config=ROOT / "redis.conf", host=HOST) as redis, \
            BareServer(log_dir, host=HOST) as bare:
        redis.start()
        bare.start()
        wait_until_healthy(bare.url)
        post("bare handler", bare.url)
        systems: list[tuple[str, Mapping[str, str], int]] = [("facade, logging in memory", {}, 1)]
        systems += [(f"facade, {n} replica{'s' if n > 1 else ''} on Redis", {"LOGGING_STORE": redis.url}, n)
                    for n in REPLICA_COUNTS]
        for name, env, replicas in systems:
            redis.flush()
            with Cluster(log_dir / name.replace(" ", "_").replace(",", ""), env=env, host=HOST,
                         logging_replicas=replicas) as cluster:
                cluster.start_all()
                post(name, cluster.facade_url)
    return results


def table(results: Mapping[str, LoadResult]) -> str:
    """The results as a Markdown table, with each rate's ratio to the bare handler's."""
    bare = results["bare handler"].rps
    rows = ["| POST /facade | req/s | / bare | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    rows += [f"| {name} | {r.rps:,.0f} | {r.rps / bare:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |"
             for name, r in results.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per load run (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per system (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--tool", choices=TOOLS, default="auto", help="wrk if on PATH (auto), or aiohttp")
    args = parser.parse_args(argv)
    if min(args.duration, args.warmup, args.connections) < 1:
        parser.error("--duration, --warmup and --connections must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        results = measure(Path(tmp), pick_tool(args.tool), args.duration, args.warmup, args.connections,
                          lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True))
    print(table(results))


if __name__ == "__main__":
    main()
