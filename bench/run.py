"""One benchmark run: start every process, run the phases in order, stop every process.

1. The bare handler and the three services start on free ports on 127.0.0.1.
2. Both get the same small store (``SMALL_STORE`` messages through POST /facade).
3. GET then POST load, bare then facade, each after a warm-up of the same load.
4. Once the facade has drained, the logging service restarts empty and, as
   soon as the facade reaches it again, is filled through /rpc/log, reading
   its RSS and GET /facade latency at each size.
5. The wrapper's per-call cost, in this process, against that logging service.

Every process is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import aiohttp
import orjson
import uvloop

from resilience.testing.cluster import Cluster, free_port, wait_until_healthy

from .load import ROOT, drive
from .machine import Machine
from .plan import SMALL_STORE, Plan
from .procfs import cpu_seconds
from .results import LoadResult, Report
from .storage import measure_store
from .wrapper import measure_wrapper

HOST = "127.0.0.1"
VERBS = ("GET", "POST")
STOP_TIMEOUT = 10.0
# After a load run the facade may still be finishing requests whose client has gone.
DRAIN_SECONDS = 1.0
# Long enough for an open breaker (5 s by default) to admit its trial call again.
READY_TIMEOUT = 20.0

Say = Callable[[str], None]


class BareServer:
    """The bare handler as its own process; ``stop`` (and leaving the ``with``) ends it by PID."""

    def __init__(self, log_dir: Path, host: str = HOST) -> None:
        self.log_path = log_dir / "bare.log"
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.bare", "--host", self.host, "--port", str(self.port)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the bare handler is not running")
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> BareServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def seed(base_urls: Iterable[str], count: int) -> None:
    """POST ``count`` short messages to each ``/facade`` and check each GET returns exactly those."""
    async with aiohttp.ClientSession() as session:
        for base in base_urls:
            for number in range(count):
                async with session.post(f"{base}/facade", json={"msg": f"message {number}"}) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"seeding {base} failed: HTTP {resp.status}")
            async with session.get(f"{base}/facade") as resp:
                stored = len(orjson.loads(await resp.read())["logs"])
            if stored != count:
                raise RuntimeError(f"{base} holds {stored} messages after seeding, expected {count}")


async def until_serving(facade_url: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll GET /facade until it answers 200 (the facade reaches logging again), or raise."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{facade_url}/facade") as resp:
                await resp.read()
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET /facade still answers {resp.status} after {timeout} s")
            await asyncio.sleep(0.2)


def throughput(plan: Plan, targets: dict[str, str], pids: dict[str, dict[str, int]],
               say: Say) -> tuple[dict[tuple[str, str], LoadResult], dict[tuple[str, str], dict[str, float]]]:
    """The same load on every target for each verb (GET first, while the store is small).

    Returns the load results and, per run, the CPU microseconds per request
    of each process in ``pids[target]`` (read from /proc around the run, so
    they hold even when other work on the machine skews the rates).
    """
    results = {}
    cpu = {}
    for verb in VERBS:
        for name, base in targets.items():
            say(f"{verb} {name}: {plan.warmup} s warm-up, {plan.duration} s at "
                f"{plan.connections} connections")
            url = f"{base}/facade"
            drive(plan.tool, url, verb, connections=plan.connections, duration=plan.warmup,
                  threads=plan.threads)
            before = {proc: cpu_seconds(pid) for proc, pid in pids[name].items()}
            result = drive(plan.tool, url, verb, connections=plan.connections,
                           duration=plan.duration, threads=plan.threads)
            served = max(result.requests, 1)
            cpu[(name, verb)] = {proc: (cpu_seconds(pid) - before[proc]) / served * 1e6
                                 for proc, pid in pids[name].items()}
            results[(name, verb)] = result
    return results, cpu


def run(plan: Plan, machine: Machine, log_dir: Path, say: Say) -> Report:
    """Run every phase of ``plan`` and return the figures; no process outlives this call."""
    with Cluster(log_dir, host=HOST) as cluster, BareServer(log_dir) as bare:
        say("starting the bare handler and the three services")
        bare.start()
        cluster.start_all()
        wait_until_healthy(bare.url)
        targets = {"bare": bare.url, "facade": cluster.facade_url}
        pids = {"bare": {"bare": bare.pid},
                "facade": {name: proc.pid for name, proc in cluster.procs.items()}}
        uvloop.run(seed(targets.values(), SMALL_STORE))
        load, cpu = throughput(plan, targets, pids, say)

        say("restarting the logging service with an empty store")
        time.sleep(DRAIN_SECONDS)
        cluster.stop("logging")
        logging_pid = cluster.start("logging").pid
        uvloop.run(until_serving(cluster.facade_url))
        say(f"storing up to {max(plan.store_sizes):,} messages through /rpc/log")
        store = uvloop.run(measure_store(cluster.logging_url, cluster.facade_url, logging_pid,
                                         plan.store_sizes, plan.get_samples, plan.fill_concurrency))
        say(f"timing {plan.wrapper_calls:,} raw and {plan.wrapper_calls:,} wrapped calls")
        wrapper = uvloop.run(measure_wrapper(cluster.logging_url, plan.wrapper_calls))
        say("stopping every process")
    return Report(machine=machine, plan=plan, load=load, cpu_us=cpu, store=store,
                  wrapper=wrapper)
