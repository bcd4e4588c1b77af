"""What stalled request bodies cost the facade: RSS before, during and after N of them.

::

    python -m scripts.stalled_bodies                  # 5,000 connections, about 20 s
    python -m scripts.stalled_bodies --connections 500

Starts the three real services on free ports, then opens N connections to
the facade that each announce ``Content-Length: 60000`` and send 59,999
bytes (the attack of issue "Hardening the edges"). It samples the facade's
resident memory all along, times a normal POST while the connections are
open, waits until the facade has cut every one (408 within
``BODY_READ_TIMEOUT``) and reports the figures docs/reliability.md quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from facade.settings import FacadeSettings
from scripts.cluster import Cluster

MIB = 1024 * 1024
ANNOUNCED = 60_000
SAMPLE_EVERY = 0.02


@dataclass
class Outcome:
    """What one stalled connection got back."""

    status: int | None = None
    answered_after: float | None = None  # seconds from its last byte sent to the reply
    cut_after: float | None = None  # ... and to the server's close


@dataclass
class Figures:
    connections: int
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    normal_post_ms: float = 0.0
    normal_post_status: int = 0
    outcomes: list[Outcome] = field(default_factory=list)


class RssSampler(threading.Thread):
    """Samples a process's RSS in the background and keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, psutil.Process(self.pid).memory_info().rss)
            time.sleep(SAMPLE_EVERY)


async def stall(host: str, port: int, sent: asyncio.Event, outcome: Outcome) -> None:
    """Announce ANNOUNCED bytes, send one fewer, then wait for the server's answer and close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"POST /facade HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {ANNOUNCED}\r\n\r\n".encode())
        writer.write(b'{"msg": "' + b"x" * (ANNOUNCED - 10))
        await writer.drain()
        sent.set()
        last_byte = time.monotonic()
        status_line = await reader.readline()
        if status_line:
            outcome.status = int(status_line.split()[1])
            outcome.answered_after = time.monotonic() - last_byte
        while await reader.read(65536):
            pass
        outcome.cut_after = time.monotonic() - last_byte
    except ConnectionError:
        outcome.cut_after = time.monotonic() - last_byte
    finally:
        writer.close()


async def attack(cluster: Cluster, count: int) -> Figures:
    figures = Figures(count)
    pid = cluster.procs["facade"].pid
    host, port = cluster.host, cluster.ports["facade"]
    async with aiohttp.ClientSession() as session:
        for i in range(20):  # warm the facade up: its steady state, not its import cost
            async with session.post(f"{cluster.facade_url}/facade", json={"msg": f"warm {i}"}):
                pass
        figures.rss_before = psutil.Process(pid).memory_info().rss
        sampler = RssSampler(pid)
        sampler.start()
        figures.outcomes = [Outcome() for _ in range(count)]
        sent = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(stall(host, port, sent[i], figures.outcomes[i]))
                 for i in range(count)]
        await asyncio.gather(*(event.wait() for event in sent))
        started = time.perf_counter()
        async with session.post(f"{cluster.facade_url}/facade", json={"msg": "normal"}) as resp:
            figures.normal_post_status = resp.status
        figures.normal_post_ms = (time.perf_counter() - started) * 1000
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.0)  # let the facade free what the closed connections held
        sampler.stopped.set()
        sampler.join()
        figures.rss_peak = sampler.peak
        figures.rss_after = psutil.Process(pid).memory_info().rss
    return figures


def report(figures: Figures, settings: FacadeSettings) -> str:
    statuses: dict[str, int] = {}
    for outcome in figures.outcomes:
        key = "cut without a reply" if outcome.status is None else f"HTTP {outcome.status}"
        statuses[key] = statuses.get(key, 0) + 1
    answers = sorted(o.answered_after for o in figures.outcomes if o.answered_after is not None)
    cuts = sorted(o.cut_after for o in figures.outcomes if o.cut_after is not None)
    lines = [
        f"{figures.connections:,} connections, each announcing {ANNOUNCED:,} bytes and sending "
        f"{ANNOUNCED - 1:,}; BODY_READ_TIMEOUT={settings.body_read_timeout:g} s",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| facade RSS before | {figures.rss_before / MIB:.0f} MiB |",
        f"| facade RSS, peak while they were open | {figures.rss_peak / MIB:.0f} MiB |",
        f"| facade RSS after they were cut | {figures.rss_after / MIB:.0f} MiB |",
        f"| a normal POST while they were open | HTTP {figures.normal_post_status}, "
        f"{figures.normal_post_ms:.0f} ms |",
        f"| replies | {', '.join(f'{n:,} {k}' for k, n in sorted(statuses.items()))} |",
        f"| {spread('answered', answers)} |",
        f"| {spread('closed by the facade', cuts)} |",
    ]
    return "\n".join(lines)


def spread(what: str, seconds: list[float]) -> str:
    """A table row's text: the median and the largest of ``seconds`` (sorted), or never."""
    if not seconds:
        return f"{what} | never"
    return f"{what}, after the last byte sent (median / max) | " \
           f"{seconds[len(seconds) // 2]:.1f} / {seconds[-1]:.1f} s"


def raise_file_limit(count: int) -> None:
    """Room for ``count`` sockets in this process and in the facade (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise SystemExit(f"the file limit ({hard}) is too low for {count} connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5_000,
                        help="stalled connections to open (1 to 20000; default 5000)")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 20_000:
        parser.error("--connections must be between 1 and 20000")
    raise_file_limit(args.connections)
    with tempfile.TemporaryDirectory() as logs, Cluster(Path(logs)) as cluster:
        cluster.start_all()
        figures = asyncio.run(attack(cluster, args.connections))
    print(report(figures, FacadeSettings.from_env()))


if __name__ == "__main__":
    main()
