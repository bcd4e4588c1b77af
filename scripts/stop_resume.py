"""Recovery is not a fault: logging stopped (SIGSTOP) under an open-loop load, then resumed (SIGCONT).

``python -m scripts.stop_resume`` starts the three services with the shipped
settings and sends POSTs at a fixed rate (400 a second, whatever the answers:
an open loop, as real clients arrive), stops logging for each of ``--stops``
seconds and resumes it. For each stop it prints whether a breaker opened
after the resume (it must not: a drained backlog is recovery, not a fault),
the share of POSTs started 1.5 s or more after the resume that were
acknowledged (at least 95 %), and the exactly-once count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

from scripts.cluster import Cluster
from scripts.loss_table import read_all

HEADER = ("| logging stopped | POSTs | acknowledged (all) | acknowledged from 1.5 s after resume | "
          "breaker opened after resume | lost | duplicated |\n|---|---|---|---|---|---|---|")
SETTLE = 1.5  # seconds after the resume from which POSTs must be acknowledged


@dataclass
class Outcome:
    """What one stop-and-resume did."""

    stop: float
    #: (seconds after the resume the POST started, status, text), in start order.
    posts: list[tuple[float, int, str]] = field(default_factory=list)
    opened_after_resume: int = 0
    lost: int = 0
    duplicated: int = 0

    def acknowledged(self, since: float = -float("inf")) -> float:
        statuses = [status for started, status, _ in self.posts if started >= since]
        return statuses.count(200) / len(statuses) if statuses else 0.0

    def row(self) -> str:
        return (f"| {self.stop:g} s | {len(self.posts):,} | {self.acknowledged():.2%} | "
                f"{self.acknowledged(SETTLE):.2%} | {self.opened_after_resume} | {self.lost} | "
                f"{self.duplicated} |")


async def stop_and_resume(cluster: Cluster, stop: float, rate: float = 400.0, before: float = 2.0,
                          after: float = 4.0) -> Outcome:
    """POST at ``rate`` a second; ``before`` s in, stop logging for ``stop`` s; go on ``after`` s
    past the resume. Every POST started is awaited before the verdict."""
    outcome = Outcome(stop)
    loop = asyncio.get_running_loop()
    logging_pid = cluster.procs["logging"].pid
    seen = len(cluster.log_lines("facade"))
    resumed_at = float("inf")  # loop time of the resume
    resumed_wall = 0.0

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        started = loop.time()
        text = f"stop-{stop:g}-{n}"
        try:
            async with session.post(cluster.facade_url + "/facade", json={"msg": text}) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        outcome.posts.append((started - resumed_at if resumed_at < float("inf") else -1e9, status, text))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks: list[asyncio.Task[None]] = []
        first = loop.time()
        ends = first + before + stop + after
        stopped = False
        n = 0
        while (now := loop.time()) < ends:
            if not stopped and now >= first + before:
                os.kill(logging_pid, signal.SIGSTOP)
                stopped = True
            if stopped and resumed_at == float("inf") and now >= first + before + stop:
                os.kill(logging_pid, signal.SIGCONT)
                resumed_at, resumed_wall = loop.time(), time.time()
            tasks.append(asyncio.create_task(one(session, n)))
            n += 1
            await asyncio.sleep(max(0.0, first + n / rate - loop.time()))
        await asyncio.gather(*tasks)
    outcome.posts.sort()
    outcome.opened_after_resume = sum(
        1 for line in cluster.log_lines("facade")[seen:]
        if line.get("new_state") == "open"
        and datetime.fromisoformat(str(line["timestamp"])).timestamp() >= resumed_wall)
    stored = await read_all(cluster.facade_url)
    outcome.lost = sum(1 for _, status, text in outcome.posts if status == 200 and stored[text] == 0)
    outcome.duplicated = sum(1 for count in stored.values() if count > 1)
    return outcome


async def measure(stops: list[float], log_dir: Path) -> list[str]:
    rows = []
    with Cluster(log_dir) as cluster:
        cluster.start_all()
        for stop in stops:
            rows.append((await stop_and_resume(cluster, stop)).row())
            print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=float, nargs="+", default=[5.0, 10.0, 30.0],
                        help="how long logging stays stopped, in seconds (5 10 30)")
    args = parser.parse_args()
    if not all(stop > 0 for stop in args.stops):
        parser.error("--stops must be positive")
    with tempfile.TemporaryDirectory(prefix="stop-resume-") as log_dir:
        rows = asyncio.run(measure(args.stops, Path(log_dir)))
    print("\n".join([HEADER, *rows]))


if __name__ == "__main__":
    main()
