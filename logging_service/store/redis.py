"""The Redis store: every logging replica on one Redis, each message stored once across all of them.

Two keys, in one hash slot (the ``{logging}`` tag) so the script may touch
both on a Redis Cluster too:

- ``{logging}:by_uuid``, a hash ``uuid -> text``: the dedup index, and what a
  conflict is checked against;
- ``{logging}:in_order``, a list of the texts in arrival order: a page is
  ``LRANGE`` of that range (in chunks), the count one ``LLEN``.

Dedup and append are one Lua script, which Redis runs atomically: of two
replicas that send the same UUID at the same moment, one stores it and the
other is told it is a duplicate. Each text is held twice (hash and list), so
that reads never touch the hash; docs/redis.md gives the memory per message.

Adds are group-committed (``resilience.rpc.batching``): the adds made in one
turn of the loop (an RPC batch's, which the server runs together) go to Redis
at once as one pipeline; those that come while it is on the wire leave
together as the next when it returns. A pipeline is one write and one read on
one connection: ``EVALSHA`` each, with no ``SCRIPT EXISTS`` check first
(redis-py's pipelines make one, a round trip more); only the adds Redis
answers ``NOSCRIPT`` (a restarted Redis has no scripts) are sent again, once
the script is loaded. Each add is still its own script run, atomic on its
own, with its own outcome; the pipeline is not a transaction, and Redis runs
its commands in the order sent.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resilience import Coalescer, Pending, ServiceUnavailable, get_logger

from .base import UuidConflict

log = get_logger("logging_service.store")

T = TypeVar("T")

BY_UUID: Final = "{logging}:by_uuid"
IN_ORDER: Final = "{logging}:in_order"

# HSETNX answers 1 only for a UUID not seen before: only then is the text appended.
ADD_SCRIPT: Final = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 'stored'
end
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return 'duplicate'
end
return 'conflict'
"""

# Below the facade's per-attempt RPC timeout (1 s), so logging answers 503 before
# the facade gives up on the attempt. A URL's query (?socket_timeout=2) overrides them.
SOCKET_TIMEOUT: Final = 0.5
CONNECT_TIMEOUT: Final = 0.5
# Calls in flight to Redis at once; more wait for a free connection, up to POOL_WAIT.
MAX_CONNECTIONS: Final = 32
POOL_WAIT: Final = 0.5
# Adds per pipeline, and adds waiting (sent or queued) before one is refused at once.
MAX_PIPELINE: Final = 256
MAX_PENDING_ADDS: Final = 4096
# How long an add waits, queued and then on the wire, before it is a 503: what one call
# alone could take (a connection from the pool, then the read).
ADD_WAIT: Final = POOL_WAIT + SOCKET_TIMEOUT
# Texts per LRANGE: a few milliseconds of Redis's time, so other commands are not held up.
CHUNK: Final = 10_000
# A transient answer for the caller: Redis restarts in about a second, and a full Redis takes
# writes again as soon as it has room.
RETRY_AFTER: Final = 1.0

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class RedisStore:
    """A ``MessageStore`` on a Redis server, through redis.asyncio's connection pool.

    No call blocks the event loop. Connections are opened on first use, so
    a replica starts (and answers ``/health``) while Redis is down; every call
    made then raises ``ServiceUnavailable``, and the first that succeeds
    afterwards says so in the log. So does every add while Redis is at its
    ``maxmemory`` (it answers OOM to writes; reads still work), until an add
    succeeds again.
    """

    def __init__(self, url: str) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT,
            socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
            # One immediate retry, on a fresh connection, when a pooled one turns out
            # dead (Redis restarted); a timeout is not retried: the caller's retry is.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._add_sha = self._redis.register_script(ADD_SCRIPT).sha
        # Group commit of adds (its counters, calls and requests, show how they were grouped).
        self.adds: Coalescer[str] = Coalescer(self._send_adds, max_pending=MAX_PENDING_ADDS,
                                               refuse=self._too_many_adds, max_items=MAX_PIPELINE,
                                               collect_turn=True)
        self._down = False
        self._refusing_writes = False  # Redis answered OOM to an add, and none succeeded since

    async def add(self, uuid: str, msg: str) -> bool:
        try:
            outcome = await self.adds.submit("add", (uuid, msg), timeout=ADD_WAIT)
        except TimeoutError:  # queued behind slow pipelines: as if Redis had timed out
            raise ServiceUnavailable("redis", "TimeoutError", RETRY_AFTER,
                                     f"no answer within {ADD_WAIT:g} s") from None
        if outcome == "conflict":
            raise UuidConflict(uuid)
        return bool(outcome == "stored")

    async def _send_adds(self, _key: str, items: list[Pending]) -> None:
        """Adds that queued together, as one pipeline of script runs: each its own outcome (a
        script that fails fails its own add only). Redis unreachable fails them all."""
        outcomes = await self._run_adds([item.payload for item in items])
        unknown = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, NoScriptError)]
        if unknown:  # those did nothing: load the script, and send them again
            await self._call(self._redis.script_load(ADD_SCRIPT))
            again = await self._run_adds([items[i].payload for i in unknown])
            for i, outcome in zip(unknown, again, strict=True):
                outcomes[i] = outcome
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, OutOfMemoryError):
                item.fail(self._out_of_memory(outcome))
            elif isinstance(outcome, Exception):
                item.fail(outcome)
            else:
                item.resolve(outcome)
                self._writable()

    async def _run_adds(self, adds: list[tuple[str, str]]) -> list[Any]:
        """One pipeline of ``EVALSHA``, one per ``(uuid, text)``: their outcomes, errors included."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for uuid, msg in adds:
                pipe.evalsha(self._add_sha, 2, BY_UUID, IN_ORDER, uuid, msg)
            return await self._call(pipe.execute(raise_on_error=False))

    def _out_of_memory(self, exc: OutOfMemoryError) -> ServiceUnavailable:
        """Redis at its ``maxmemory`` refuses writes until it has room again: transient for the
        caller (a 503 it may retry), and one warning line for the whole episode, not one per add."""
        if not self._refusing_writes:
            self._refusing_writes = True
            log.warning("store full: writes refused", store="redis", error=str(exc))
        return ServiceUnavailable("redis", type(exc).__name__, RETRY_AFTER, str(exc))

    def _writable(self) -> None:
        """An add ran its script to the end: if Redis was full, the episode is over."""
        if self._refusing_writes:
            self._refusing_writes = False
            log.info("store accepting writes again", store="redis")

    @staticmethod
    def _too_many_adds() -> ServiceUnavailable:
        return ServiceUnavailable("redis", "too many adds waiting", RETRY_AFTER)

    async def messages(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Read ``LRANGE`` by ``LRANGE`` of at most ``CHUNK`` texts, never the whole list at once.

        Redis serves one command at a time: a million-item ``LRANGE`` would hold
        every replica's writes back while it runs, and outlast the read timeout.
        The list only grows at its end, so the chunks join into what it held
        at some moment of the read.
        """
        texts: list[str] = []
        while limit is None or len(texts) < limit:
            wanted = CHUNK if limit is None else min(CHUNK, limit - len(texts))
            start = offset + len(texts)
            chunk = await self._call(self._redis.lrange(IN_ORDER, start, start + wanted - 1))
            texts.extend(cast(list[str], chunk))  # decode_responses: every reply is a str
            if len(chunk) < wanted:
                break
        return texts

    async def count(self) -> int:
        return await self._call(self._redis.llen(IN_ORDER))

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def close(self) -> None:
        await self.adds.aclose()
        await self._redis.aclose()

    async def _call(self, command: Awaitable[T]) -> T:
        """Await ``command``; Redis unreachable becomes ``ServiceUnavailable``, logged once per outage."""
        try:
            result = await command
        except _UNREACHABLE as exc:
            if not self._down:
                self._down = True
                log.warning("store unreachable", store="redis", error=f"{type(exc).__name__}: {exc}")
            raise ServiceUnavailable("redis", type(exc).__name__, RETRY_AFTER, str(exc)) from None
        if self._down:
            self._down = False
            log.info("store reachable again", store="redis")
        return result
