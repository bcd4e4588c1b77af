"""The logging service as its store grows: resident memory per message, and GET /facade latency.

Messages go straight to the logging service's ``POST /rpc/log`` (not through
the facade), each a fresh UUID and a short realistic text (``message 12345``).
Memory is the logging process's ``VmRSS`` from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence

import aiohttp
import orjson

from resilience.paging import MAX_PAGE

from .procfs import vm_rss
from .results import StoreResult

JSON_HEADERS = {"Content-Type": "application/json"}
# Calls that exercise the whole /rpc/log path (the same pair again is a duplicate, not stored)
# before the baseline RSS is read, so first-call allocations do not count as per-message cost.
WARMUP_CALLS = 300


class StoreError(RuntimeError):
    """The logging service or the facade answered something unexpected."""


async def _log(session: aiohttp.ClientSession, url: str, message_id: str, msg: str) -> object:
    async with session.post(url, data=orjson.dumps({"uuid": message_id, "msg": msg}),
                            headers=JSON_HEADERS) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise StoreError(f"/rpc/log answered {resp.status}: {body[:200]!r}")
    return orjson.loads(body)["result"]


async def store_messages(session: aiohttp.ClientSession, logging_url: str, start: int, stop: int,
                         concurrency: int) -> None:
    """Store messages number ``start`` to ``stop - 1``, ``concurrency`` calls in flight."""
    url = f"{logging_url}/rpc/log"
    numbers = iter(range(start, stop))

    async def sender() -> None:
        for number in numbers:
            result = await _log(session, url, str(uuid.uuid4()), f"message {number}")
            if result != {"stored": True}:
                raise StoreError(f"message {number} was not stored: {result!r}")

    await asyncio.gather(*(sender() for _ in range(concurrency)))


async def median_get_ms(session: aiohttp.ClientSession, facade_url: str, expected: int,
                        samples: int) -> float:
    """Median wall time of ``samples`` sequential GET /facade calls (after one warm-up call), each
    answering the first page: ``expected`` messages, or ``MAX_PAGE`` of a larger store."""
    timings = []
    for index in range(samples + 1):
        started = time.perf_counter()
        async with session.get(f"{facade_url}/facade") as resp:
            body = await resp.read()
        elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise StoreError(f"GET /facade answered {resp.status}: {body[:200]!r}")
        if index == 0:
            count = len(orjson.loads(body)["logs"])
            if count != min(expected, MAX_PAGE):
                raise StoreError(f"GET /facade returned {count} messages, expected "
                                 f"{min(expected, MAX_PAGE)} of {expected}")
            continue
        timings.append(elapsed)
    return statistics.median(timings) * 1e3


async def measure_store(logging_url: str, facade_url: str, logging_pid: int,
                        sizes: Sequence[int], samples: int, concurrency: int) -> StoreResult:
    """Fill a fresh logging service up to each of ``sizes``, reading RSS and GET latency at each."""
    rss: dict[int, int] = {}
    latency: dict[int, float] = {}
    async with aiohttp.ClientSession() as session:
        url = f"{logging_url}/rpc/log"
        first = str(uuid.uuid4())
        for _ in range(WARMUP_CALLS):
            await _log(session, url, first, "message 0")
        baseline = vm_rss(logging_pid)
        stored = 1
        for size in sorted(sizes):
            await store_messages(session, logging_url, stored, size, concurrency)
            stored = size
            rss[size] = vm_rss(logging_pid)
            latency[size] = await median_get_ms(session, facade_url, size, samples)
    return StoreResult(baseline_rss=baseline, rss=rss, get_median_ms=latency)
