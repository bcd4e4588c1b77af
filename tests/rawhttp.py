"""HTTP written by hand on a real socket: what a well-behaved client library will not do
(announce a body and stall it, trickle an endless chunked one, send header bytes that are
not text)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import orjson
from aiohttp.test_utils import BaseTestServer


@dataclass
class Reply:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


@contextlib.asynccontextmanager
async def request_head(server: BaseTestServer, path: str, headers: Mapping[str, str | bytes],
                       method: str = "POST"
                       ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to ``server`` on which a request line and headers were sent, no body yet;
    closed on exit. A header value given as bytes goes on the wire as it is."""
    assert server.host is not None
    assert server.port is not None
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(_head(server, path, headers, method))
        await writer.drain()
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def exchange(server: BaseTestServer, path: str, headers: Mapping[str, str | bytes],
                   body: bytes = b"", method: str = "POST") -> Reply:
    """Send one whole request (its Content-Length added) and read the reply."""
    async with request_head(server, path, {**headers, "Content-Length": str(len(body))},
                            method) as (reader, writer):
        writer.write(body)
        await writer.drain()
        return await read_reply(reader)


def _head(server: BaseTestServer, path: str, headers: Mapping[str, str | bytes], method: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {server.host}:{server.port}".encode(),
             *(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
               for name, value in headers.items())]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def stalled_request(server: BaseTestServer, path: str, headers: dict[str, str], body_start: bytes,
                    method: str = "POST") -> socket.socket:
    """A plain socket to ``server`` on which a request's head and the start of its body were
    sent, and nothing more: a client that stalls its body. Cheap enough to hold thousands of
    (no event loop work on the client side); the caller closes it."""
    assert server.host is not None
    assert server.port is not None
    sock = socket.create_connection((server.host, server.port))
    try:
        sock.sendall(_head(server, path, headers, method) + body_start)
    except BaseException:
        sock.close()
        raise
    return sock


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """Read one response (status line, headers, a Content-Length body)."""
    status_line = await reader.readuntil(b"\r\n")
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(int(status_line.split()[1]), headers, body)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server has closed the connection (nothing more, then EOF)."""
    return await reader.read() == b""


def open_connections(server: BaseTestServer) -> int:
    """How many connections the server holds open right now."""
    assert server.runner is not None
    assert server.runner.server is not None
    return len(server.runner.server.connections)


def affordable_connections(wanted: int, spare: int = 256) -> int:
    """``wanted`` connections, or as many as this process's file limit allows (two descriptors
    each, client and server end), after raising the soft limit as far as the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 2 * wanted + spare if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(0, min(wanted, (soft - spare) // 2))
