"""The load: clients that POST unique messages (and now and then GET a page), and what they were told."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from .config import SoakConfig

#: The longest a client pauses after a failure (it honours Retry-After up to this).
MAX_PAUSE = 1.0


@dataclass
class PostOp:
    """One message a client sent: its unique text and what the client was finally told."""

    text: str
    started: float
    attempts: int = 0
    #: ``ok`` (200 success), ``http-<status>``, ``timeout``, ``connection-error`` or ``bad-reply``.
    outcome: str = "pending"
    uuid: str | None = None
    ended: float = 0.0

    @property
    def acknowledged(self) -> bool:
        """Whether the client was told the message is stored."""
        return self.outcome == "ok"


@dataclass
class GetStats:
    """What the clients' GET /facade calls got during the load."""

    attempted: int = 0
    ok: int = 0
    #: 200, but answered without the messages service (it was down).
    degraded: int = 0
    failed: int = 0
    #: Texts in a page that no client had sent: as bad as an unexpected message.
    unexpected_texts: int = 0


@dataclass
class LoadState:
    """Everything the clients did, shared by the client tasks (one event loop, no locks)."""

    ops: list[PostOp] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    gets: GetStats = field(default_factory=GetStats)
    acknowledged: int = 0
    #: When the latest-sent acknowledged POST was first sent (``time.monotonic()``), if any was.
    last_acknowledged_start: float | None = None
    #: Set on every acknowledgement (whoever waits for one clears it first).
    acknowledgement: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, op: PostOp) -> None:
        """Remember ``op`` before it is sent, so a read that sees it never counts it as unexpected."""
        self.ops.append(op)
        self.sent.add(op.text)

    def finish(self, op: PostOp) -> None:
        """Count ``op`` once its client has been told how it ended."""
        if op.acknowledged:
            self.acknowledged += 1
            self.last_acknowledged_start = max(op.started, self.last_acknowledged_start or op.started)
            self.acknowledgement.set()

    def acknowledged_since(self, moment: float | None) -> bool:
        """Whether a POST first sent at or after ``moment`` (None: the start) was acknowledged."""
        last = self.last_acknowledged_start
        return last is not None and (moment is None or last >= moment)


async def client(index: int, config: SoakConfig, session: aiohttp.ClientSession, facade_url: str,
                 state: LoadState, stop: asyncio.Event) -> None:
    """One client: POST unique messages (sometimes GET a page) until ``stop``."""
    rng = random.Random(f"{config.seed}:client:{index}")
    seq = 0
    while not stop.is_set():
        if rng.random() < config.get_ratio:
            pause = await _get_page(session, facade_url, rng, state, config.request_timeout)
        else:
            seq += 1
            op = PostOp(text=f"soak-{config.seed}-c{index:03d}-{seq:07d}", started=time.monotonic())
            state.record(op)
            pause = await post_message(session, facade_url, op, timeout=config.request_timeout,
                                       retries=config.client_retries, rng=rng)
            state.finish(op)
        if pause:
            await asyncio.sleep(rng.uniform(0.0, pause))


async def post_message(session: aiohttp.ClientSession, facade_url: str, op: PostOp, *, timeout: float,
                       retries: int = 0, rng: random.Random | None = None) -> float:
    """POST ``op.text`` to the facade, resending up to ``retries`` times on failure.

    Resends carry an ``Idempotency-Key`` derived from the text, so they land
    on the same UUID. Records the outcome on ``op`` and returns how long the
    caller may pause before its next request (0 after a success).
    """
    rng = rng or random.Random()
    headers = {"Idempotency-Key": op.text} if retries else {}
    pause = 0.0
    for attempt in range(retries + 1):
        op.attempts += 1
        op.outcome, op.uuid, pause = await _post_once(session, facade_url, op.text, headers, timeout)
        if op.acknowledged or attempt == retries:
            break
        await asyncio.sleep(rng.uniform(0.0, pause))
    op.ended = time.monotonic()
    return pause


async def _request(session: aiohttp.ClientSession, method: str, url: str, timeout: float,
                   **kwargs: Any) -> tuple[int, bytes, str | None]:
    """One request to the facade: ``(status, body, Retry-After)``; timeouts and connection errors
    propagate."""
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout),
                               **kwargs) as resp:
        return resp.status, await resp.read(), resp.headers.get("Retry-After")


async def _post_once(session: aiohttp.ClientSession, facade_url: str, text: str,
                     headers: Mapping[str, str], timeout: float) -> tuple[str, str | None, float]:
    """One POST: ``(outcome, uuid, pause)``."""
    try:
        status, raw, retry_after = await _request(session, "POST", f"{facade_url}/facade", timeout,
                                                  json={"msg": text}, headers=headers)
    except TimeoutError:
        return "timeout", None, MAX_PAUSE
    except aiohttp.ClientError:
        return "connection-error", None, MAX_PAUSE / 2
    if status != 200:
        return f"http-{status}", None, _pause_for(retry_after)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "bad-reply", None, MAX_PAUSE / 2
    uuid = body.get("uuid") if isinstance(body, dict) else None
    if body.get("status") != "success" or not isinstance(uuid, str):
        return "bad-reply", None, MAX_PAUSE / 2
    return "ok", uuid, 0.0


def _pause_for(retry_after: str | None) -> float:
    """How long to back off after a failure: the server's Retry-After, capped, or a short default."""
    try:
        return min(MAX_PAUSE, float(retry_after)) if retry_after else 0.25
    except ValueError:
        return 0.25


async def _get_page(session: aiohttp.ClientSession, facade_url: str, rng: random.Random,
                    state: LoadState, timeout: float) -> float:
    """GET a small page at a random offset; check it holds only texts some client sent."""
    state.gets.attempted += 1
    offset = rng.randrange(state.acknowledged + 1)
    try:
        status, raw, retry_after = await _request(session, "GET", f"{facade_url}/facade", timeout,
                                                  params={"offset": offset, "limit": 20})
    except (TimeoutError, aiohttp.ClientError):
        state.gets.failed += 1
        return MAX_PAUSE / 2
    try:
        body = orjson.loads(raw) if status == 200 else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("logs"), list):
        state.gets.failed += 1
        return _pause_for(retry_after)
    state.gets.ok += 1
    state.gets.degraded += "messages" in body.get("unavailable", ())
    state.gets.unexpected_texts += sum(text not in state.sent for text in body["logs"])
    return 0.0
