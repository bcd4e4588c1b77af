"""The loss table: what a lossy, silent or slow link between facade and logging costs, on the real processes.

``python -m scripts.loss_table`` starts the three services with the shipped
settings, puts a fault proxy in front of logging, and runs 16 clients at full
speed for ``--seconds`` per fault, each after as long without one (its
rate is given as a share of that no-fault run's): replies dropped (the
connection closes after logging stored the message), replies swallowed
(logging stored it; the connection stays open and silent) and logging
slower than the per-attempt timeout. For each it prints the share of POSTs
acknowledged, the 99th-percentile POST latency, how often a breaker opened,
and the exactly-once count (every acknowledged message stored once, nothing
twice). Where a breaker opened, it says after how long, and how soon after
the fault ended a POST was acknowledged again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import quantiles

import aiohttp

from resilience.testing.faults import FaultProxy
from scripts.cluster import Cluster

HEADER = ("| fault | POSTs | rate | of the no-fault rate just before | acknowledged | 503 | p99 | "
          "breaker opened | lost | duplicated |\n|---|---|---|---|---|---|---|---|---|---|")
SLOW_DELAY = 1.5  # seconds: later than the shipped RPC_TIMEOUT (1 s)


@dataclass(frozen=True)
class Fault:
    """One row: what the proxy does while the clients run."""

    label: str
    apply: Callable[[FaultProxy], None]
    group: str


def _drop(share: float) -> Fault:
    return Fault(f"replies dropped {share:.0%}", lambda p: setattr(p, "drop_rate", share), "drop")


def _swallow(share: float) -> Fault:
    return Fault(f"replies swallowed {share:.0%}", lambda p: setattr(p, "swallow_rate", share), "swallow")


FAULTS = (
    *(_drop(share) for share in (0.1, 0.2, 0.3)),
    *(_swallow(share) for share in (0.01, 0.05, 0.1, 0.2)),
    Fault(f"logging {SLOW_DELAY} s slow", lambda p: setattr(p, "delay", SLOW_DELAY), "slow"),
)


def heal(proxy: FaultProxy) -> None:
    proxy.drop_rate = proxy.swallow_rate = proxy.delay = 0.0


@dataclass
class Run:
    """What the clients saw during one row."""

    outcomes: Counter[str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    refused_latencies: list[float] = field(default_factory=list)  # of the 503s
    seconds: float = 0.0

    @property
    def posts(self) -> int:
        return sum(self.outcomes.values())

    @property
    def rate(self) -> float:
        return self.posts / self.seconds

    def p99(self, refused: bool = False) -> float:
        latencies = self.refused_latencies if refused else self.latencies
        return quantiles(latencies, n=100)[98] if len(latencies) > 1 else 0.0


async def run_clients(facade_url: str, seconds: float, clients: int) -> Run:
    """``clients`` clients POSTing unique messages for ``seconds``."""
    run = Run()
    loop = asyncio.get_running_loop()
    started = loop.time()
    ends = started + seconds

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while loop.time() < ends:
            text = f"loss-{loop.time():.6f}-{n}-{i}"
            i += 1
            sent = loop.time()
            async with session.post(facade_url + "/facade", json={"msg": text}) as resp:
                await resp.read()
            run.latencies.append(loop.time() - sent)
            if resp.status == 503:
                run.refused_latencies.append(loop.time() - sent)
            run.outcomes[str(resp.status)] += 1
            if resp.status == 200:
                run.acknowledged.append(text)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session, n) for n in range(clients)))
    run.seconds = loop.time() - started
    return run


async def read_all(facade_url: str) -> Counter[str]:
    """Every stored message, page by page (following ``next_offset``), and how often each is stored."""
    stored: Counter[str] = Counter()
    offset: int | None = 0
    async with aiohttp.ClientSession() as session:
        while offset is not None:
            async with session.get(facade_url + "/facade", params={"offset": str(offset)}) as resp:
                page = await resp.json()
            stored.update(page["logs"])
            offset = page.get("next_offset")
    return stored


async def until_acknowledged(facade_url: str, timeout: float = 30.0) -> float | None:
    """Seconds until a POST is acknowledged again, trying every 20 ms (None: not within ``timeout``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as session:
        while loop.time() - started < timeout:
            async with session.post(facade_url + "/facade", json={"msg": f"back-{loop.time():.6f}"}) as resp:
                if resp.status == 200:
                    return loop.time() - started
            await asyncio.sleep(0.02)
    return None


def seconds_since(line: dict[str, object], started: float) -> float:
    """When a log line was written, in seconds after the wall-clock time ``started``."""
    return datetime.fromisoformat(str(line["timestamp"])).timestamp() - started


async def measure(faults: list[Fault], seconds: float, clients: int, seed: int, log_dir: Path,
                  warmup: float = 5.0) -> list[str]:
    rows = []
    with Cluster(log_dir) as cluster:
        async with FaultProxy(cluster.url("logging"), seed=seed) as proxy:
            cluster.logging_url = proxy.url
            cluster.start("logging")
            cluster.start("messages")
            cluster.start("facade", wait=False)
            await asyncio.to_thread(cluster.wait_until_serving, "facade")
            await run_clients(cluster.facade_url, warmup, clients)  # not measured
            for fault in faults:
                # The machine's speed drifts over minutes: each fault is rated against a
                # no-fault run of the same length taken just before it.
                base = await run_clients(cluster.facade_url, seconds, clients)
                seen = len(cluster.log_lines("facade"))
                fault.apply(proxy)
                started = time.time()
                run = await run_clients(cluster.facade_url, seconds, clients)
                heal(proxy)
                back = await until_acknowledged(cluster.facade_url)
                lines = cluster.log_lines("facade")[seen:]
                openings = [line for line in lines if line.get("new_state") == "open"]
                note = ""
                if openings:
                    note = (f" (after {seconds_since(openings[0], started):.1f} s; 503s in p99 "
                            f"{run.p99(refused=True) * 1000:,.0f} ms")
                    note += (f"; acknowledging again {back:.1f} s after the fault ended)" if back is not None
                             else "; not acknowledging 30 s after the fault ended)")
                stored = await read_all(cluster.facade_url)
                lost = sum(1 for text in run.acknowledged if stored[text] == 0)
                duplicated = sum(1 for count in stored.values() if count > 1)
                acked, refused = (run.outcomes[status] / run.posts for status in ("200", "503"))
                rows.append(f"| {fault.label} | {run.posts:,} | {run.rate:,.0f}/s | "
                            f"{run.rate / base.rate:.0%} of {base.rate:,.0f}/s | {acked:.2%} | "
                            f"{refused:.2%} | {run.p99() * 1000:,.0f} ms | {len(openings)}{note} | {lost} | "
                            f"{duplicated} |")
                print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per fault (20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--seed", type=int, default=1, help="the fault proxy's random seed (1)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured load before the rows (5)")
    parser.add_argument("--only", choices=("drop", "swallow", "slow"), help="only these faults")
    args = parser.parse_args()
    if not (args.seconds > 0 and args.clients > 0):
        parser.error("--seconds and --clients must be positive")
    faults = [f for f in FAULTS if args.only is None or f.group == args.only]
    with tempfile.TemporaryDirectory(prefix="loss-table-") as log_dir:
        rows = asyncio.run(measure(faults, args.seconds, args.clients, args.seed, Path(log_dir),
                                   args.warmup))
    print("\n".join([HEADER, *rows]))


if __name__ == "__main__":
    main()
