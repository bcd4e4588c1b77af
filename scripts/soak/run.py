"""One soak run, start to finish: the processes, the load and the faults, then the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from facade.settings import FacadeSettings
from scripts.cluster import Cluster

from .config import REPLICAS, SoakConfig
from .faults import REDIS, ChaosState, missing_faults, wait_for_stop
from .load import LoadState, client
from .readback import evidence, read_store, read_via_facade, replica_aliases
from .report import SETTINGS_SHOWN, Report
from .timeline import draw_png, timeline_of
from .topology import topology_for
from .verdict import messages_verdict, problems, tally

#: Past ``duration``, the load goes on until every fault the run needs has happened and a POST
#: sent after the last restart has been acknowledged (so that the verdict vouches for something),
#: for at most this many seconds.
CHECK_PATIENCE = 30.0


async def run_soak(config: SoakConfig) -> Report:
    """Run one soak as ``config`` says and return its report; all processes are stopped on return."""
    config.validate()
    started = time.monotonic()
    log_dir = config.log_dir if config.log_dir is not None else Path(tempfile.mkdtemp(prefix="soak-"))
    topology = topology_for(config, log_dir)
    cluster = topology.cluster
    settings = FacadeSettings.from_env(cluster.env())
    rng = random.Random(config.seed)
    state = LoadState()
    chaos = ChaosState(started=started)  # restarted when the load starts
    shutdown: dict[str, dict[str, float]] = {}
    load_started_utc = ""
    try:
        await topology.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()
            slow_delay = settings.rpc_timeout * 1.5
            chaos.started = time.monotonic()
            load_started_utc = datetime.now(UTC).isoformat(timespec="milliseconds")
            async with asyncio.TaskGroup() as group:
                for index in range(config.concurrency):
                    group.create_task(client(index, config, session, cluster.facade_url, state, stop))
                for task in topology.chaos(rng, slow_delay, stop, chaos):
                    group.create_task(task)
                if config.progress_every > 0:
                    group.create_task(_progress(config, state, chaos, stop))
                await asyncio.sleep(config.duration)
                await until_something_checked(config, state, chaos)
                stop.set()
            chaos.note("load stopped, faults cleared")
            await topology.settle(settings.retry_deadline + slow_delay + 0.5)
            stored = await read_store(session, topology.read_url, config.request_timeout)
            via_facade = await read_via_facade(session, cluster.facade_url, config.request_timeout)
            stored_uuids = await topology.uuid_index()
            kept = await topology.messages_kept(session, config.request_timeout)
    finally:
        shutdown = await topology.stop()

    found = evidence(cluster)
    picture = _draw(config, log_dir, cluster, state, chaos, load_started_utc)
    result = tally(state.ops, stored, strict_since=None if config.cluster else chaos.last_restart,
                   stored_uuids=stored_uuids, store_killed_at=chaos.last_store_kill,
                   restarted_at=chaos.last_restart if config.cluster else None)
    messages = {name: messages_verdict(state.ops, texts) for name, texts in kept.items()}
    agreement = ("unavailable" if via_facade is None
                 else "identical" if via_facade == stored else "DIFFERENT")
    return Report(
        seed=config.seed, duration=config.duration, concurrency=config.concurrency,
        kill_logging=config.kill_logging, cluster=config.cluster,
        elapsed=round(time.monotonic() - started, 2),
        settings={name: float(getattr(settings, name)) for name in SETTINGS_SHOWN}, tally=result,
        gets=state.gets, outcomes=dict(Counter(op.outcome for op in state.ops)),
        faults={"phases": dict(chaos.phases), **topology.fault_counts(),
                "kills": dict(sorted(chaos.kills.items())), "replica_rounds": chaos.replica_rounds,
                "pair_rounds": chaos.pair_rounds},
        evidence=found, readback={"stored": len(stored), "via_facade": agreement}, shutdown=shutdown,
        log_dir=str(log_dir), load_started_utc=load_started_utc, timeline=chaos.timeline, picture=picture,
        messages=messages,
        problems=problems(result, state.gets, agreement, missing_faults(config, chaos), messages),
    )


def _draw(config: SoakConfig, log_dir: Path, cluster: Cluster, state: LoadState, chaos: ChaosState,
          load_started_utc: str) -> str:
    """Draw the run's timeline picture; where it is, or why it was skipped."""
    path = config.plot if config.plot is not None else log_dir / "timeline.png"
    stopped = [at for at, note in chaos.timeline if note.startswith("load stopped")]
    end = stopped[-1] if stopped else time.monotonic() - chaos.started
    data = timeline_of(state.ops, chaos.started, chaos.timeline, cluster.log_lines("facade"),
                       load_started_utc, end, aliases=replica_aliases(cluster))
    title = (f"soak: {config.duration:g} s, {config.concurrency} clients, seed {config.seed}"
             f"{', logging kills' if config.kill_logging else ''}"
             f"{f', cluster on Redis and NATS ({REPLICAS} logging replicas)' if config.cluster else ''}")
    if not draw_png(data, path, title):
        return "skipped (matplotlib is not installed: pip install -e '.[plots]')"
    return str(path)


def something_checked(config: SoakConfig, state: LoadState, chaos: ChaosState) -> bool:
    """Whether every fault the run is there to survive has happened, nothing on the write path is
    down, and a POST sent after the last restart of it (logging, a replica, redis-server: so, held to
    the strict rule) has been acknowledged: the system is seen to have recovered."""
    if chaos.down or missing_faults(config, chaos):
        return False
    return state.acknowledged_since(chaos.last_restart)


async def until_something_checked(config: SoakConfig, state: LoadState, chaos: ChaosState) -> None:
    """Keep the load on past ``duration`` until ``something_checked``, for at most ``CHECK_PATIENCE``.

    On a busy machine the last restart can end so late (or the breaker
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
    chaos.note(f"load went on {time.monotonic() - began:.1f} s past the duration, until every fault "
               "had happened and a POST sent after the last restart was acknowledged")


async def _progress(config: SoakConfig, state: LoadState, chaos: ChaosState, stop: asyncio.Event) -> None:
    """A progress line on stderr every ``config.progress_every`` seconds."""
    while not await wait_for_stop(stop, config.progress_every):
        elapsed = time.monotonic() - chaos.started
        print(f"[{elapsed:6.1f} s] POSTs {len(state.ops)}, acknowledged {state.acknowledged}, "
              f"GETs {state.gets.attempted}, {_faults_so_far(config, chaos)}",
              file=sys.stderr, flush=True)


def _faults_so_far(config: SoakConfig, chaos: ChaosState) -> str:
    """The progress line's summary of the faults: the network phase, or the kills so far."""
    if config.cluster:
        return (f"replica kills {chaos.replica_kills}, redis-server kills {chaos.kills[REDIS]}, "
                f"stream leader kills {chaos.nats_kills}, messages kills "
                f"{sum(n for name, n in chaos.kills.items() if name.startswith('messages'))}")
    return f"network {chaos.phase}, messages kills {chaos.kills['messages']}"
