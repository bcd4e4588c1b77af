"""What the resilience wrapper costs per call, measured in this process against a raw call.

A raw call is what a hand-written client would do: ``orjson.dumps`` the
arguments, POST them to the logging service's ``/rpc/log`` on a keep-alive
``ClientSession``, read and ``orjson.loads`` the reply. The wrapped call is
the same through ``RpcProxy`` with ``downstream_policies`` (retry, budget,
breaker, concurrency limit, per-attempt timeout, correlation header), built as the facade
builds it. Calls are sequential and alternate, raw then wrapped then wrapped
then raw, each timed on its own (wall clock and this process's CPU time);
medians keep a busy machine's bursts out of the figures.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from facade.settings import FacadeSettings
from resilience import CallPolicy, RpcProxy, downstream_policies
from resilience.observability.access import OBSERVERS
from resilience.observability.metrics import setup_metrics

from .results import WrapperResult

JSON_HEADERS = {"Content-Type": "application/json"}
WARMUP_CALLS = 200

Call = Callable[[str, str], Awaitable[Any]]


async def _metrics_only_us(count: int) -> float:
    """Microseconds the request metrics add to one request: the access log's observer that counts
    it and times it (``resilience/observability/metrics.py``), called on a real routed request, no network."""
    app = web.Application()
    app.router.add_post("/facade", _never_called)
    setup_metrics(app)
    (observe,) = app[OBSERVERS]
    request = make_mocked_request("POST", "/facade", app=app)
    request._match_info = await app.router.resolve(request)  # as aiohttp routes it
    started = time.perf_counter()
    for _ in range(count):
        observe(request, 200, 0.003)
    return (time.perf_counter() - started) / count * 1e6


async def _never_called(request: web.Request) -> web.Response:
    raise AssertionError("the metrics timing never runs a handler")


async def _policy_only_us(policy: CallPolicy, count: int) -> float:
    """Microseconds per ``policy.call`` around an attempt that does nothing (no network)."""

    async def nothing(url: str, timeout: float) -> None:
        return None

    started = time.perf_counter()
    for _ in range(count):
        await policy.call(nothing)
    return (time.perf_counter() - started) / count * 1e6


async def _timed(call: Call, message_id: str, msg: str) -> tuple[int, int]:
    """Wall and CPU nanoseconds of one call."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    await call(message_id, msg)
    return time.perf_counter_ns() - wall, time.process_time_ns() - cpu


async def measure_wrapper(logging_url: str, calls: int) -> WrapperResult:
    """Time ``calls`` raw and ``calls`` wrapped calls, interleaved, each storing a new message."""
    settings = FacadeSettings(logging_url=logging_url)
    # The facade's own session settings: unlimited keep-alive connections.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        url = f"{logging_url}/rpc/log"

        async def raw(message_id: str, msg: str) -> Any:
            body = orjson.dumps({"uuid": message_id, "msg": msg})
            async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
                reply = await resp.read()
            return orjson.loads(reply)["result"]

        proxy = RpcProxy(session, "logging",
                         downstream_policies("logging", [logging_url], settings, ("write",))["write"])

        async def wrapped(message_id: str, msg: str) -> Any:
            return await proxy.log(uuid=message_id, msg=msg)

        timings: dict[Call, list[tuple[int, int]]] = {raw: [], wrapped: []}
        for index in range(WARMUP_CALLS + calls):
            for call in (raw, wrapped) if index % 2 == 0 else (wrapped, raw):
                timing = await _timed(call, str(uuid.uuid4()), f"wrapper {index}")
                if index >= WARMUP_CALLS:
                    timings[call].append(timing)
    (raw_us, raw_cpu_us), (wrapped_us, wrapped_cpu_us) = (
        (statistics.median(wall for wall, _ in timings[call]) / 1e3,
         statistics.median(cpu for _, cpu in timings[call]) / 1e3) for call in (raw, wrapped))
    policy_only_us = await _policy_only_us(
        downstream_policies("logging", [logging_url], settings, ("write",))["write"], calls)
    metrics_only_us = await _metrics_only_us(calls * 10)
    return WrapperResult(calls=calls, raw_us=raw_us, wrapped_us=wrapped_us, raw_cpu_us=raw_cpu_us,
                         wrapped_cpu_us=wrapped_cpu_us, policy_only_us=policy_only_us,
                         metrics_only_us=metrics_only_us)
