"""The loss table: what a lossy link between facade and logging costs, on the real processes.

``python -m scripts.loss_table`` starts the three services with the shipped
settings, puts a fault proxy in front of logging that drops a share of the
replies *after* logging stored the message, and runs 16 clients at full
speed for ``--seconds`` per loss level. For each level it prints the share of
POSTs acknowledged and answered 503, whether a breaker opened, and the
exactly-once count (every acknowledged message stored once, nothing twice).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp

from resilience.testing.cluster import Cluster
from resilience.testing.faults import FaultProxy

LEVELS = (0.0, 0.1, 0.2, 0.3)
HEADER = ("| replies dropped | POSTs | acknowledged | 503 | breaker opened | lost | duplicated |\n"
          "|---|---|---|---|---|---|---|")


async def run_level(facade_url: str, seconds: float, clients: int) -> tuple[Counter[str], list[str]]:
    """``clients`` clients POSTing unique messages for ``seconds``; their outcomes and acknowledged texts."""
    outcomes: Counter[str] = Counter()
    acknowledged: list[str] = []
    loop = asyncio.get_running_loop()
    ends = loop.time() + seconds

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while loop.time() < ends:
            text = f"loss-{loop.time():.6f}-{n}-{i}"
            i += 1
            async with session.post(facade_url + "/facade", json={"msg": text}) as resp:
                await resp.read()
            outcomes[str(resp.status)] += 1
            if resp.status == 200:
                acknowledged.append(text)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session, n) for n in range(clients)))
    return outcomes, acknowledged


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


async def measure(seconds: float, clients: int, log_dir: Path) -> list[str]:
    rows = []
    with Cluster(log_dir) as cluster:
        async with FaultProxy(cluster.url("logging"), seed=1) as proxy:
            cluster.logging_url = proxy.url
            cluster.start("logging")
            cluster.start("messages")
            cluster.start("facade", wait=False)
            await asyncio.to_thread(cluster.wait_until_serving, "facade")
            for level in LEVELS:
                proxy.drop_rate = level
                seen = len(cluster.log_lines("facade"))
                outcomes, acknowledged = await run_level(cluster.facade_url, seconds, clients)
                proxy.drop_rate = 0.0
                opened = sum(1 for line in cluster.log_lines("facade")[seen:]
                             if line.get("new_state") == "open")
                stored = await read_all(cluster.facade_url)
                posts = sum(outcomes.values())
                lost = sum(1 for text in acknowledged if stored[text] == 0)
                duplicated = sum(1 for count in stored.values() if count > 1)
                rows.append(f"| {level:.0%} | {posts:,} | {outcomes['200'] / posts:.2%} | "
                            f"{outcomes['503'] / posts:.2%} | {'yes' if opened else 'no'} | "
                            f"{lost} | {duplicated} |")
                print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per loss level (20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    args = parser.parse_args()
    if not (args.seconds > 0 and args.clients > 0):
        parser.error("--seconds and --clients must be positive")
    with tempfile.TemporaryDirectory(prefix="loss-table-") as log_dir:
        rows = asyncio.run(measure(args.seconds, args.clients, Path(log_dir)))
    print("\n".join([HEADER, *rows]))


if __name__ == "__main__":
    main()
