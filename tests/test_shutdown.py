"""Stopping the real services: SIGTERM with requests in flight, and a facade restart mid-load.

honcho sends SIGTERM and, 5 s later, SIGKILL. Within that grace each service
must stop listening, finish (or cleanly drop) what it is handling, and exit
with status 0 and no traceback; and restarting the facade under load must not
lose, duplicate or invent any message a client was told was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from scripts.cluster import Cluster
from scripts.soak import PostOp, SoakProxy, logged_uuids, post_message, read_store, tally
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

#: honcho's grace between SIGTERM and SIGKILL.
GRACE = 5.0
#: how long a load client waits after a failed POST, so a restarting facade is not spun on.


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on free ports with nothing started; whatever a test leaves running is killed."""
    running = Cluster(tmp_path / "logs")
    try:
        yield running
    finally:
        for proc in running.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        running.procs.clear()


@pytest.fixture
async def logging_proxy(cluster: Cluster) -> AsyncIterator[SoakProxy]:
    """The logging service behind a fault proxy; the facade (started later) goes through the proxy."""
    await asyncio.to_thread(cluster.start, "logging")
    proxy = SoakProxy(cluster.url("logging"), seed=0)
    await proxy.start()
    cluster.logging_url = proxy.url
    yield proxy
    await proxy.refuse()  # cancels forwards still held or waiting out a delay
    await proxy.stop()


def refuses(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` any more (a loopback connect answers at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == errno.ECONNREFUSED


def terminate(cluster: Cluster, name: str) -> float:
    """Send SIGTERM to service ``name``, as honcho does; return when it was sent."""
    cluster.procs[name].send_signal(signal.SIGTERM)
    return time.monotonic()


async def exit_of(cluster: Cluster, name: str, signalled: float) -> tuple[int, float]:
    """Wait for service ``name`` to exit: its status, and seconds since ``signalled``."""
    proc = cluster.procs[name]
    try:
        code = await asyncio.to_thread(proc.wait, GRACE + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} still running {GRACE + 5} s after SIGTERM")
    cluster.procs.pop(name)
    return code, time.monotonic() - signalled


def assert_clean_log(cluster: Cluster, name: str) -> None:
    log = cluster.raw_log(name)
    assert "Traceback" not in log
    assert '"service stopped"' in log


@pytest.mark.parametrize(("name", "path", "body"), [
    ("logging", "/rpc/log", {"uuid": "0b9d7a4e-5a56-4c52-9a3c-6f1e2d3c4b5a", "msg": "held"}),
    ("messages", "/rpc/message", {}),
    ("facade", "/facade", {"msg": "held"}),
])
async def test_sigterm_with_a_request_in_flight_stops_within_the_grace(
        cluster: Cluster, name: str, path: str, body: dict[str, str]) -> None:
    """The service is handling a request (it has answered ``100 Continue``) when SIGTERM arrives.

    It stops listening at once; the body, sent only once it has, arrives after
    shutdown began, which aiohttp ignores: the request is dropped after the
    shutdown timeout, its connection closed without a byte (never a half reply
    or a 5xx), and the service exits 0 within the grace.
    """
    await asyncio.to_thread(cluster.start, name)
    host, port = cluster.host, cluster.ports[name]
    payload = orjson.dumps(body)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\nExpect: 100-continue\r\n\r\n".encode())
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GRACE)
        assert interim.startswith(b"HTTP/1.1 100 ")  # the request reached its route: it is in flight

        signalled = terminate(cluster, name)
        await wait_for(lambda: refuses(host, port), GRACE)
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()
        reply = await asyncio.wait_for(reader.read(), GRACE)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    code, seconds = await exit_of(cluster, name, signalled)
    assert code == 0
    assert seconds < GRACE
    assert reply == b""
    assert_clean_log(cluster, name)


async def test_sigterm_lets_the_facade_finish_posts_waiting_on_logging(
        cluster: Cluster, logging_proxy: SoakProxy) -> None:
    """POSTs waiting on a slow (but not too slow) logging service when SIGTERM arrives all succeed,
    are stored once each, and the facade exits 0 within the grace."""
    logging_proxy.delay = 0.5  # under the facade's 1 s per-attempt timeout
    await asyncio.to_thread(cluster.start, "facade")
    ops = [PostOp(text=f"in-flight-{i}", started=time.monotonic()) for i in range(8)]
    async with aiohttp.ClientSession() as session:
        posts = [asyncio.create_task(post_message(session, cluster.facade_url, op, timeout=GRACE * 2))
                 for op in ops]
        # Group commit: the first POST goes alone, the others queue at the facade and leave together
        # when it returns. Once that second request is in flight, every POST is with the facade.
        await wait_for(lambda: sum(logging_proxy.received.values()) >= 2 and logging_proxy.in_flight)
        signalled = terminate(cluster, "facade")
        await asyncio.gather(*posts)
        stored = await read_store(session, cluster.url("logging"))

    code, seconds = await exit_of(cluster, "facade", signalled)
    assert code == 0
    assert seconds < GRACE
    assert [op.outcome for op in ops] == ["ok"] * len(ops)
    assert sorted(stored) == sorted(op.text for op in ops)
    assert_clean_log(cluster, "facade")


async def test_sigterm_answers_posts_stuck_on_logging_with_a_clean_503(
        cluster: Cluster, logging_proxy: SoakProxy) -> None:
    """POSTs stuck on a logging service slower than the retry deadline are answered 503 with the
    facade's JSON failure body before the facade exits 0, within the grace."""
    logging_proxy.hold()  # logging hangs: far beyond RPC_TIMEOUT and RETRY_DEADLINE
    await asyncio.to_thread(cluster.start, "facade")
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> tuple[int, Any]:
            async with session.post(cluster.facade_url + "/facade", json={"msg": f"stuck-{i}"},
                                    timeout=aiohttp.ClientTimeout(total=GRACE * 2)) as reply:
                return reply.status, await reply.json()

        posts = [asyncio.create_task(post(i)) for i in range(4)]
        # The first POST's second attempt (after its 1 s timeout) shows every POST is with the facade.
        await wait_for(lambda: sum(logging_proxy.received.values()) >= 2)
        signalled = terminate(cluster, "facade")
        replies = await asyncio.gather(*posts)

    code, seconds = await exit_of(cluster, "facade", signalled)
    assert code == 0
    assert seconds < GRACE
    for status, body in replies:
        assert status == 503
        assert body["status"] == "failure"
        assert body["message"].startswith("logging service unavailable")
    assert_clean_log(cluster, "facade")


async def test_facade_restart_mid_load_loses_no_acknowledged_message(
        cluster: Cluster, logging_proxy: SoakProxy) -> None:
    """SIGTERM the facade while clients POST (some waiting on logging), start it again, keep going:
    every acknowledged UUID's message is stored exactly once, and nothing unsent is stored."""
    logging_proxy.delay = 0.05  # so that requests are in flight when SIGTERM arrives
    await asyncio.to_thread(cluster.start, "facade")
    ops: list[PostOp] = []
    stop, serving = asyncio.Event(), asyncio.Event()
    serving.set()

    def acknowledged() -> int:
        return sum(op.acknowledged for op in ops)

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            op = PostOp(text=f"restart-c{index}-{seq}", started=time.monotonic())
            ops.append(op)
            await post_message(session, cluster.facade_url, op, timeout=GRACE * 2)
            if not op.acknowledged:
                await serving.wait()  # the facade is restarting: don't spin

    async with aiohttp.ClientSession() as session:
        clients = [asyncio.create_task(client(i, session)) for i in range(8)]
        try:
            await wait_for(lambda: acknowledged() >= 40)
            await wait_for(lambda: logging_proxy.in_flight > 0)
            in_flight_at_sigterm = logging_proxy.in_flight
            serving.clear()
            signalled = terminate(cluster, "facade")
            code, seconds = await exit_of(cluster, "facade", signalled)
            before_restart = acknowledged()
            await asyncio.to_thread(cluster.start, "facade")
            serving.set()
            await wait_for(lambda: acknowledged() >= before_restart + 40)
        finally:
            stop.set()
            serving.set()
            await asyncio.gather(*clients)
        stored = await read_store(session, cluster.url("logging"))

    assert code == 0
    assert seconds < GRACE
    assert in_flight_at_sigterm > 0
    result = tally(ops, stored, stored_uuids=logged_uuids(cluster.log_lines("logging")))
    assert (result.lost, result.duplicated, result.unexpected, result.uuid_mismatches) == (0, 0, 0, 0), \
        result.examples
    counts = Counter(stored)
    assert all(counts[op.text] == 1 for op in ops if op.acknowledged)
    assert_clean_log(cluster, "facade")
