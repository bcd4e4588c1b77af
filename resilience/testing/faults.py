"""An HTTP proxy that injects the faults the retry policy must survive.

Put it between a caller and a service (point the caller at ``proxy.url``)
and set its knobs at any time:

- ``refuse()`` / ``resume()``: stop and start listening (connection refused);
- ``delay``: seconds to wait before forwarding (a slow service; timeouts);
- ``path_delays``: the same for some paths only (``{"/rpc/list": 2.0}``: slow reads);
- ``error_rate``: share of requests answered 503 (with ``Retry-After``)
  without being forwarded;
- ``drop_rate``: share of requests forwarded, answered by the service, and
  then dropped: the connection closes before the reply reaches the caller
  (the write happened, the caller cannot know);
- ``drop_next``: the next that many requests are dropped so, whatever ``drop_rate`` says;
- ``swallow_rate``: share of requests forwarded, answered by the service, and then never
  answered: the connection stays open and silent (a gray failure: only a timeout tells);
- ``swallow_next``: the next that many requests are swallowed so;
- ``hold()`` / ``release()``: requests that arrive in between wait, unforwarded, until
  ``release()`` (a request held on the wire for as long as a test needs, not for a time;
  a hung service); ``hold("/rpc/list")`` holds those paths only.

When the service behind it is down, the proxy answers 502, as a reverse proxy would.

Choices use a seeded ``random.Random`` so runs are reproducible.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from resilience.rpc.server import error_body
from resilience.runtime.web import json_response

_HOP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive",
                          "transfer-encoding"})


@dataclass
class FaultCounts:
    """What the proxy did, request by request."""

    received: int = 0
    #: Requests received, by path.
    paths: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    dropped: int = 0
    swallowed: int = 0
    errored: int = 0


class FaultProxy:
    """Forwards HTTP requests to ``upstream`` unless told to misbehave."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0,
                 seed: int = 0, retry_after: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self.rng = random.Random(seed)
        self.delay = 0.0
        self.path_delays: dict[str, float] = {}
        self.error_rate = 0.0
        self.drop_rate = 0.0
        self.drop_next = 0
        self.swallow_rate = 0.0
        self.swallow_next = 0
        self._silence = asyncio.Event()  # set on stop: swallowed replies end with the proxy
        self.retry_after = retry_after
        self.counts = FaultCounts()
        self._gate: asyncio.Event | None = None
        self._held_paths: frozenset[str] = frozenset()  # empty: every path
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        """Start listening; the port stays the same across ``refuse()`` and ``resume()``."""
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # A fault proxy holds delayed requests; on stop, cut them instead of waiting.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.1)
        await self._runner.setup()
        await self.resume()
        return self

    async def refuse(self) -> None:
        """Stop listening: new connections are refused, open keep-alive ones are closed."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            await self._runner.server.shutdown(0.1)

    async def resume(self) -> None:
        """Listen again on the same port."""
        assert self._runner is not None, "start() first"
        if self._site is None:
            self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await self._site.start()
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening and release everything."""
        self.release()
        self._silence.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self._site = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def hold(self, *paths: str) -> None:
        """Hold every request that arrives from now on (to ``paths`` only, if given), until
        ``release()``."""
        if self._gate is None:
            self._gate = asyncio.Event()
        self._held_paths = frozenset(paths)

    def release(self) -> None:
        """Forward the held requests, and hold no more."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.counts.received += 1
        self.counts.paths[request.path] += 1
        body = await request.read()
        if self._gate is not None and (not self._held_paths or request.path in self._held_paths):
            await self._gate.wait()
        delay = self.path_delays.get(request.path, self.delay)
        if delay:
            await asyncio.sleep(delay)
        if self.rng.random() < self.error_rate:
            self.counts.errored += 1
            return json_response(error_body("ServiceUnavailable", "injected fault"), status=503,
                                 headers={"Retry-After": str(self.retry_after)})
        drop = self.rng.random() < self.drop_rate or self.drop_next > 0
        self.drop_next = max(0, self.drop_next - 1)
        swallow = not drop and (self.swallow_next > 0 or (self.swallow_rate > 0
                                                           and self.rng.random() < self.swallow_rate))
        self.swallow_next = max(0, self.swallow_next - (not drop))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs,
                                             data=body, headers=headers) as upstream:
                payload = await upstream.read()
                status = upstream.status
                reply_headers = {k: v for k, v in upstream.headers.items()
                                 if k.lower() not in _HOP_HEADERS}
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The service itself is down: answer as a reverse proxy would.
            return json_response(error_body("BadGateway", f"upstream unreachable: {exc}"), status=502)
        self.counts.forwarded += 1
        if drop:
            self.counts.dropped += 1
            if request.transport is not None:  # None: the caller gave up on it already
                request.transport.close()  # the service acted; its reply never arrives
        if swallow:
            self.counts.swallowed += 1
            await self._silence.wait()  # the service acted; the caller hears nothing, ever
            raise web.HTTPServiceUnavailable()  # the proxy is stopping
        return web.Response(body=payload, status=status, headers=reply_headers)
