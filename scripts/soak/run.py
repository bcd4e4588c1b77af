"""One soak run, start to finish: the services, the proxy, the load and the faults, then the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from resilience.settings import Settings
from resilience.testing.cluster import Cluster

from .config import SoakConfig
from .faults import ChaosState, logging_chaos, messages_chaos, network_chaos, wait_for_stop
from .load import LoadState, client
from .proxy import SoakProxy
from .readback import evidence, quiesce, read_store, read_via_facade
from .report import SETTINGS_SHOWN, Report
from .timeline import draw_png, timeline_of
from .verdict import problems, tally

#: The services behind the facade, started first.
BACKENDS = ("logging", "messages")
#: Past ``duration``, the load goes on until a POST held to the strict rule has been
#: acknowledged (so that the verdict vouches for something), for at most this many seconds.
CHECK_PATIENCE = 30.0


async def run_soak(config: SoakConfig) -> Report:
    """Run one soak as ``config`` says and return its report; all processes are stopped on return."""
    config.validate()
    started = time.monotonic()
    log_dir = config.log_dir if config.log_dir is not None else Path(tempfile.mkdtemp(prefix="soak-"))
    cluster = Cluster(log_dir, env=config.service_env)
    settings = Settings.from_env(cluster.env())
    proxy = SoakProxy(cluster.url("logging"), seed=config.seed)
    rng = random.Random(config.seed)
    state = LoadState()
    chaos = ChaosState(started=started)  # restarted when the load starts
    shutdown: dict[str, dict[str, float]] = {}
    load_started_utc = ""
    try:
        await asyncio.to_thread(_start_backends, cluster)
        await proxy.start()
        cluster.logging_url = proxy.url
        await asyncio.to_thread(cluster.start, "facade")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()
            lock = asyncio.Lock()
            slow_delay = settings.rpc_timeout * 1.5
            chaos.started = time.monotonic()
            load_started_utc = datetime.now(UTC).isoformat(timespec="milliseconds")
            async with asyncio.TaskGroup() as group:
                for index in range(config.concurrency):
                    group.create_task(client(index, config, session, cluster.facade_url, state, stop))
                group.create_task(network_chaos(proxy, random.Random(rng.random()), config, slow_delay,
                                                stop, chaos))
                group.create_task(messages_chaos(cluster, lock, random.Random(rng.random()), config,
                                                 stop, chaos))
                if config.kill_logging:
                    group.create_task(logging_chaos(cluster, lock, random.Random(rng.random()), config,
                                                    stop, chaos))
                if config.progress_every > 0:
                    group.create_task(_progress(config, state, chaos, stop))
                await asyncio.sleep(config.duration)
                await until_something_checked(config, state, chaos)
                stop.set()
            chaos.note("load stopped, faults cleared")
            await proxy.heal()
            await quiesce(proxy, settle=settings.retry_deadline + slow_delay + 0.5)
            stored = await read_store(session, cluster.url("logging"), config.request_timeout)
            via_facade = await read_via_facade(session, cluster.facade_url, config.request_timeout)
    finally:
        shutdown = await asyncio.to_thread(_stop_all, cluster)
        await proxy.refuse()  # cancels forwards still waiting out a delay, instead of awaiting them
        await proxy.stop()

    found, stored_uuids = evidence(cluster)
    picture = _draw(config, log_dir, cluster, state, chaos, load_started_utc)
    result = tally(state.ops, stored, strict_since=chaos.last_logging_restart, stored_uuids=stored_uuids)
    agreement = ("unavailable" if via_facade is None
                 else "identical" if via_facade == stored else "DIFFERENT")
    return Report(
        seed=config.seed, duration=config.duration, concurrency=config.concurrency,
        kill_logging=config.kill_logging, elapsed=round(time.monotonic() - started, 2),
        settings={name: float(getattr(settings, name)) for name in SETTINGS_SHOWN}, tally=result,
        gets=state.gets, outcomes=dict(Counter(op.outcome for op in state.ops)),
        faults={"phases": dict(chaos.phases), "proxy_received": dict(proxy.received),
                "proxy_forwarded": proxy.counts.forwarded,
                "proxy_dropped": proxy.counts.dropped, "proxy_errored": proxy.counts.errored,
                "proxy_upstream_failures": proxy.upstream_failures,
                "messages_kills": chaos.messages_kills, "logging_kills": chaos.logging_kills},
        evidence=found, readback={"stored": len(stored), "via_facade": agreement}, shutdown=shutdown,
        log_dir=str(log_dir), load_started_utc=load_started_utc, timeline=chaos.timeline, picture=picture,
        problems=problems(result, state.gets, agreement),
    )


def _draw(config: SoakConfig, log_dir: Path, cluster: Cluster, state: LoadState, chaos: ChaosState,
          load_started_utc: str) -> str:
    """Draw the run's timeline picture; where it is, or why it was skipped."""
    path = config.plot if config.plot is not None else log_dir / "timeline.png"
    stopped = [at for at, note in chaos.timeline if note.startswith("load stopped")]
    end = stopped[-1] if stopped else time.monotonic() - chaos.started
    data = timeline_of(state.ops, chaos.started, chaos.timeline, cluster.log_lines("facade"),
                       load_started_utc, end)
    title = (f"soak: {config.duration:g} s, {config.concurrency} clients, seed {config.seed}"
             f"{', logging kills' if config.kill_logging else ''}")
    if not draw_png(data, path, title):
        return "skipped (matplotlib is not installed: pip install -e '.[plots]')"
    return str(path)


def something_checked(config: SoakConfig, state: LoadState, chaos: ChaosState) -> bool:
    """Whether a POST the strict rule holds to (with ``kill_logging``: one sent after the last
    logging restart, with no restart under way) has been acknowledged."""
    if config.kill_logging and (chaos.logging_down or not chaos.logging_kills):
        return False
    return state.acknowledged_since(chaos.last_logging_restart)


async def until_something_checked(config: SoakConfig, state: LoadState, chaos: ChaosState) -> None:
    """Keep the load on past ``duration`` until ``something_checked``, for at most ``CHECK_PATIENCE``.

    On a busy machine the last logging restart can end so late (or the breaker
    stay open so long after it) that nothing sent after it is acknowledged
    within the duration; waiting for that condition, rather than for a time,
    is what lets a short run vouch for something. If it never comes, the
    verdict says the run checked nothing. Only an acknowledgement can make the
    condition true (one sent after a restart is acknowledged after it), so the
    condition is looked at after each one.
    """
    if something_checked(config, state, chaos):
        return
    began = time.monotonic()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CHECK_PATIENCE):
            while not something_checked(config, state, chaos):
                state.acknowledgement.clear()
                await state.acknowledgement.wait()
    chaos.note(f"load went on {time.monotonic() - began:.1f} s past the duration, until a POST held "
               "to the strict rule was acknowledged")


async def _progress(config: SoakConfig, state: LoadState, chaos: ChaosState, stop: asyncio.Event) -> None:
    """A progress line on stderr every ``config.progress_every`` seconds."""
    while not await wait_for_stop(stop, config.progress_every):
        elapsed = time.monotonic() - chaos.started
        print(f"[{elapsed:6.1f} s] POSTs {len(state.ops)}, acknowledged {state.acknowledged}, "
              f"GETs {state.gets.attempted}, network {chaos.phase}, messages kills {chaos.messages_kills}",
              file=sys.stderr, flush=True)


def _start_backends(cluster: Cluster) -> None:
    """Start logging and messages together and wait until both answer."""
    for name in BACKENDS:
        cluster.start(name, wait=False)
    for name in BACKENDS:
        cluster.wait_until_serving(name)


def _stop_all(cluster: Cluster) -> dict[str, dict[str, float]]:
    """SIGTERM every running service (facade first), SIGKILL any still up after 10 s; report each."""
    results: dict[str, dict[str, float]] = {}
    for name in ("facade", "messages", "logging"):
        proc = cluster.procs.pop(name, None)
        if proc is None:
            continue
        began = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        results[name] = {"exit": code, "seconds": round(time.monotonic() - began, 2)}
    return results
