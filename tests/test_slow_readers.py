"""Replies that clients do not read cost bounded memory and time: cut after REPLY_SEND_TIMEOUT,
refused past MAX_REPLY_BYTES being written, let go once written. On real sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from pathlib import Path

import aiohttp
import psutil
import pytest
from aiohttp import web

from resilience.runtime.web import reply_budget
from scripts.cluster import Cluster
from tests.conftest import POLL_INTERVAL, AiohttpServer, wait_for

BIG = 32 * 1024 * 1024  # more than the kernel buffers for a client that does not read


def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


async def non_reader(port: int, path: str = "/") -> socket.socket:
    """A client that sends a GET and never reads the reply (with a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return sock


async def app_with_budget(aiohttp_server: AiohttpServer, *, max_bytes: int, send_timeout: float,
                          sent: list[web.Response], cut: list[int]) -> int:
    async def big(request: web.Request) -> web.Response:
        response = web.Response(body=b"x" * BIG)
        sent.append(response)
        return response

    async def small(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[reply_budget(max_bytes, send_timeout, refuse,
                                                    on_cut=lambda: cut.append(1))])
    app.router.add_get("/", big)
    app.router.add_get("/small", small)
    server = await aiohttp_server(app)
    assert server.port is not None
    return server.port


async def test_a_reply_not_taken_in_time_has_its_connection_cut(aiohttp_server: AiohttpServer) -> None:
    """A 32 MiB reply to a client that never reads is cut once the send timeout passes (counted),
    its body let go; the app answers others meanwhile."""
    sent: list[web.Response] = []
    cut: list[int] = []
    port = await app_with_budget(aiohttp_server, max_bytes=4 * BIG, send_timeout=0.3, sent=sent, cut=cut)
    sock = await non_reader(port)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/small") as resp:
            assert (resp.status, await resp.text()) == (200, "ok")
        await wait_for(lambda: bool(cut))
        assert [response.body for response in sent] == [None]
    finally:
        sock.close()


async def test_past_the_byte_budget_a_large_reply_is_refused(aiohttp_server: AiohttpServer) -> None:
    """With one 32 MiB reply still being written and a budget of 48 MiB, the next is answered 503
    with Retry-After at once; small replies still go."""
    sent: list[web.Response] = []
    port = await app_with_budget(aiohttp_server, max_bytes=BIG + BIG // 2, send_timeout=30.0, sent=sent,
                                 cut=[])
    sock = await non_reader(port)
    try:
        await wait_for(lambda: bool(sent))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
            async with session.get(f"http://127.0.0.1:{port}/small") as resp:
                assert resp.status == 200
    finally:
        sock.close()


@pytest.mark.e2e
async def test_a_thousand_readers_that_never_read_cost_the_facade_little(tmp_path: Path) -> None:
    """1,000 clients ask for a 1 MiB page and never read it: the facade's RSS grows by at most
    300 MiB, and /health and an ordinary POST are answered meanwhile. Shipped settings."""
    with Cluster(tmp_path) as cluster:
        cluster.start_all()
        url = cluster.facade_url
        async with aiohttp.ClientSession() as session:
            for i in range(110):  # 110 texts of 10,000 characters: a page of about 1 MiB
                async with session.post(url + "/facade", json={"msg": f"{i:04d}" + "x" * 9_996}) as resp:
                    assert resp.status == 200
            async with session.get(url + "/facade") as resp:
                assert len(await resp.read()) > 1_000_000
            facade = psutil.Process(cluster.procs["facade"].pid)
            before = facade.memory_info().rss
            port = int(url.rsplit(":", 1)[1])
            readers: list[socket.socket] = []
            try:
                peak = before
                for _ in range(10):
                    readers += await asyncio.gather(*(non_reader(port, "/facade") for _ in range(100)))
                    peak = max(peak, facade.memory_info().rss)

                async def pages_answered() -> int:
                    async with session.get(url + "/metrics") as resp:
                        text = await resp.text()
                    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                               if line.startswith('http_requests_total{method="GET",route="/facade"'))

                while await pages_answered() < 1 + len(readers):
                    peak = max(peak, facade.memory_info().rss)
                    await asyncio.sleep(POLL_INTERVAL)
                async with session.get(url + "/health") as resp:
                    assert resp.status == 200
                async with session.post(url + "/facade", json={"msg": "meanwhile"}) as resp:
                    assert resp.status == 200
                peak = max(peak, facade.memory_info().rss)
            finally:
                for sock in readers:
                    sock.close()
    assert peak - before <= 300 * 1024 * 1024


async def test_a_client_gone_mid_reply_is_no_error(aiohttp_server: AiohttpServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A client that resets its connection while a large reply is being written leaves no error
    logged (the reply ends, by the reset or by the send timeout), and the app answers the next
    request."""
    sent: list[web.Response] = []
    port = await app_with_budget(aiohttp_server, max_bytes=4 * BIG, send_timeout=1.0, sent=sent, cut=[])
    sock = await non_reader(port)
    await wait_for(lambda: bool(sent))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with a zero linger: a reset
    await wait_for(lambda: sent[0].body is None)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/small") as resp:
        assert resp.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
