"""A hung logging process (SIGSTOP) under load, on the real processes with the shipped settings.

A hang is the fault a timeout alone handles worst: nothing is refused, every
call waits. The facade must cap what waits on it, stay responsive itself,
and recover by itself once logging runs again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from facade.settings import FacadeSettings
from scripts.cluster import Cluster
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

DEFAULTS = FacadeSettings()
# More clients than the facade admits at once: the extra ones are shed while logging hangs.
CLIENTS = DEFAULTS.max_in_flight + 36


async def test_hung_logging_is_capped_the_facade_stays_up_and_recovers(tmp_path: Path) -> None:
    """While logging is stopped, at most MAX_IN_FLIGHT requests wait on it and the rest are shed
    at once, the facade's /health answers, and after SIGCONT POSTs are acknowledged again within the
    breaker's open duration; every acknowledged message is stored exactly once."""
    with Cluster(tmp_path) as cluster:
        cluster.start_all()
        logging_pid = cluster.procs["logging"].pid
        url = cluster.facade_url
        outcomes: Counter[str] = Counter()
        acknowledged: list[str] = []
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=DEFAULTS.retry_deadline + 5)

        async def client(session: aiohttp.ClientSession, n: int) -> None:
            i = 0
            while not stop.is_set():
                text = f"hang-{n}-{i}"
                i += 1
                async with session.post(url + "/facade", json={"msg": text}) as resp:
                    body = await resp.json()
                if resp.status == 200:
                    acknowledged.append(text)
                    outcomes["acknowledged"] += 1
                elif "requests in flight" in body["message"]:
                    outcomes["shed"] += 1
                else:
                    outcomes[f"{resp.status}"] += 1

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [asyncio.create_task(client(session, n)) for n in range(CLIENTS)]
            try:
                await wait_for(lambda: outcomes["acknowledged"] >= 500, timeout=30)
                os.kill(logging_pid, signal.SIGSTOP)
                try:
                    await wait_for(lambda: outcomes["shed"] >= CLIENTS, timeout=10)
                    for _ in range(5):
                        async with asyncio.timeout(1.0), session.get(url + "/health") as health:
                            assert health.status == 200
                    # Let the waiting calls reach their deadline too: timeouts, not only shedding.
                    await wait_for(lambda: outcomes["503"] > 0, timeout=10)
                finally:
                    os.kill(logging_pid, signal.SIGCONT)
                resumed = asyncio.get_running_loop().time()
                before = outcomes["acknowledged"]
                await wait_for(lambda: outcomes["acknowledged"] > before + 100,
                               timeout=DEFAULTS.breaker_open_duration_max)
                recovered_after = asyncio.get_running_loop().time() - resumed
            finally:
                stop.set()
                await asyncio.gather(*clients)
            async with session.get(url + "/facade") as resp:
                stored = Counter((await resp.json())["logs"])

    openings = [line for line in cluster.log_lines("facade") if line.get("new_state") == "open"]
    longest_open = max((float(str(line["open_for"])) for line in openings), default=0.0)
    assert recovered_after <= longest_open + DEFAULTS.retry_deadline + 2.0, (recovered_after, openings)
    assert all(stored[text] == 1 for text in acknowledged)
    assert set(stored.values()) == {1}
