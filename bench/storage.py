"""What a stored message costs: the in-memory logging service's RSS, and Redis's ``used_memory``.

In memory, messages go straight to a fresh logging service's ``POST /rpc/log``
(not through the facade), each a fresh UUID and a short realistic text
(``message 12345``); its resident set size (psutil's, ``VmRSS``) and the
latency of GET /facade are read at each store size. On Redis, what emptying it gives
back of ``INFO memory``'s ``used_memory`` once a cluster's runs have stored
their messages and the cluster has stopped.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence

import aiohttp
import orjson
import psutil

from logging_service.paging import MAX_PAGE
from resilience.testing.processes import poll_until
from resilience.testing.redis_server import RedisServer

from .results import StoreResult

JSON_HEADERS = {"Content-Type": "application/json"}
# Calls that exercise the whole /rpc/log path (the same pair again is a duplicate, not stored)
# before the baseline RSS is read, so first-call allocations do not count as per-message cost.
WARMUP_CALLS = 300
# How long the services' connections to Redis may take to close once they have stopped.
DISCONNECT_TIMEOUT = 10.0


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
    """Fill a fresh logging service up to each of ``sizes``, reading its RSS and GET latency at each."""
    logging = psutil.Process(logging_pid)
    rss: dict[int, int] = {}
    latency: dict[int, float] = {}
    async with aiohttp.ClientSession() as session:
        url = f"{logging_url}/rpc/log"
        first = str(uuid.uuid4())
        for _ in range(WARMUP_CALLS):
            await _log(session, url, first, "message 0")
        baseline = logging.memory_info().rss
        stored = 1
        for size in sorted(sizes):
            await store_messages(session, logging_url, stored, size, concurrency)
            stored = size
            rss[size] = logging.memory_info().rss
            latency[size] = await median_get_ms(session, facade_url, size, samples)
    return StoreResult(baseline_rss=baseline, rss=rss, get_median_ms=latency)


async def stored_count(logging_url: str) -> int:
    """How many messages the logging service at ``logging_url`` says its store holds."""
    async with aiohttp.ClientSession() as session, \
            session.post(f"{logging_url}/rpc/count", data=b"{}", headers=JSON_HEADERS) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise StoreError(f"/rpc/count answered {resp.status}: {body[:200]!r}")
    return int(orjson.loads(body)["result"])


def redis_bytes_per_message(redis: RedisServer, stored: int) -> float:
    """What emptying Redis gives back of its ``used_memory``, per message ``stored``; Redis is empty
    afterwards. Read once only this reader is connected (the services' connection buffers are not
    the messages' cost), and against the emptied server rather than the one before the run, as
    what outlives the data (Redis's first allocations for clients and scripts) is not either."""
    poll_until(lambda: redis.info("clients")["connected_clients"] == 1, DISCONNECT_TIMEOUT,
               "every service disconnected from Redis")
    full = redis.used_memory()
    redis.flush()
    return (full - redis.used_memory()) / stored
