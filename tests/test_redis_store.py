"""The Redis store against a real redis-server: two logging replicas on one Redis, faults included.

Each replica is the real logging app (``create_app`` with ``LOGGING_STORE`` set) on
its own socket, with its own connection pool, so replicas race as separate
processes would; Redis runs with the shipped ``redis.conf`` (AOF, fsync always).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from logging_service.store import RedisStore
from logging_service.store.base import UuidConflict
from logging_service.store.redis import CHUNK, IN_ORDER
from resilience.rpc.server import ENDPOINT
from resilience.testing.redis_server import RedisServer
from tests.conftest import REDIS_CONF, AiohttpClient, wait_for

Client = TestClient[web.Request, web.Application]
MakeReplica = Callable[[str], Awaitable[Client]]


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def make_replica(aiohttp_client: AiohttpClient) -> MakeReplica:
    """Start a logging replica (the real app on a free port) whose store is the Redis at ``url``."""

    async def make(url: str) -> Client:
        return await aiohttp_client(create_logging(LoggingSettings(logging_store=url)))

    return make


async def call(replica: Client, method: str, **kwargs: Any) -> tuple[int, Any]:
    """One RPC call; its status and decoded JSON body."""
    resp = await replica.post(f"/rpc/{method}", json=kwargs)
    return resp.status, await resp.json()


async def test_concurrent_duplicates_on_two_replicas_are_stored_once(
        make_replica: MakeReplica, redis_url: str) -> None:
    """The same UUID sent at once to two replicas, twice each, is stored once and acknowledged four times."""
    a, b = await make_replica(redis_url), await make_replica(redis_url)
    ids = [new_id() for _ in range(200)]
    sends = [(replica, key) for key in ids for replica in (a, b, a, b)]
    replies = await asyncio.gather(*(call(r, "log", uuid=key, msg=f"text {key}") for r, key in sends))

    assert {status for status, _ in replies} == {200}
    stored = Counter(key for (_, key), (_, body) in zip(sends, replies, strict=True)
                     if body["result"] == {"stored": True})
    assert stored == dict.fromkeys(ids, 1)
    duplicates = sum(body["result"] == {"stored": False, "duplicate": True} for _, body in replies)
    assert duplicates == 3 * len(ids)
    assert (await call(b, "count"))[1]["result"] == len(ids)
    texts = (await call(a, "messages"))[1]["result"]["logs"]
    assert sorted(texts) == sorted(f"text {key}" for key in ids)


async def test_other_text_for_a_stored_uuid_is_a_conflict_on_any_replica(
        make_replica: MakeReplica, redis_url: str) -> None:
    """A UUID stored through one replica keeps its text: another text through the other is a 409."""
    a, b = await make_replica(redis_url), await make_replica(redis_url)
    key = new_id()
    assert await call(a, "log", uuid=key, msg="first") == (200, {"result": {"stored": True}})
    status, body = await call(b, "log", uuid=key, msg="second")
    assert (status, body["error"]["type"]) == (409, "Conflict")
    assert (await call(b, "messages"))[1]["result"]["logs"] == ["first"]


async def test_arrival_order_is_kept_across_replicas_and_pages_are_ranges(
        make_replica: MakeReplica, redis_url: str, shared_redis: RedisServer) -> None:
    """Messages alternating between replicas read back in arrival order; a page is one LRANGE of it."""
    a, b = await make_replica(redis_url), await make_replica(redis_url)
    for i, replica in zip(range(10), itertools.cycle((a, b)), strict=False):
        assert (await call(replica, "log", uuid=new_id(), msg=f"m{i}"))[0] == 200
    assert (await call(b, "messages"))[1]["result"]["logs"] == [f"m{i}" for i in range(10)]

    with redis.Redis(port=shared_redis.port) as spy:
        spy.config_set("slowlog-log-slower-than", 0)  # log every command, with its arguments
        spy.slowlog_reset()
        assert (await call(a, "messages", offset=3, limit=2))[1]["result"]["logs"] == ["m3", "m4"]
        commands = [entry["command"] for entry in spy.slowlog_get(10)]
        spy.config_set("slowlog-log-slower-than", 10_000)
    assert b"LRANGE {logging}:in_order 3 4" in commands
    assert not any(c.startswith(b"LRANGE") and c != b"LRANGE {logging}:in_order 3 4" for c in commands)

    assert (await call(a, "messages", offset=8))[1]["result"]["logs"] == ["m8", "m9"]
    assert (await call(a, "messages", offset=0, limit=0))[1]["result"]["logs"] == []
    assert (await call(a, "messages", offset=20, limit=5))[1]["result"]["logs"] == []
    assert (await call(a, "count"))[1]["result"] == 10


async def test_reads_longer_than_a_chunk_come_back_whole_and_in_order(
        shared_redis: RedisServer, redis_url: str) -> None:
    """A full read and a page that cross LRANGE chunks join them without a gap or an overlap."""
    total = 2 * CHUNK + 5
    with redis.Redis(port=shared_redis.port) as direct:
        direct.rpush(IN_ORDER, *(f"m{i}" for i in range(total)))
    store = RedisStore(redis_url)
    assert await store.messages() == [f"m{i}" for i in range(total)]
    assert await store.messages(CHUNK - 2, CHUNK + 4) == [f"m{i}" for i in range(CHUNK - 2, 2 * CHUNK + 2)]
    assert await store.messages(2 * CHUNK, 100) == [f"m{i}" for i in range(2 * CHUNK, total)]
    await store.close()


async def test_concurrent_adds_leave_as_pipelines_each_with_its_own_outcome(
        shared_redis: RedisServer, redis_url: str) -> None:
    """200 adds at once reach Redis in a few pipelines, not 200 round trips; each gets its own
    outcome (stored, duplicate, conflict) and the new ones are stored once, in order."""
    store = RedisStore(redis_url)
    ids = [new_id() for _ in range(200)]
    await store.add(ids[0], "t0")
    outcomes = await asyncio.gather(
        *(store.add(uid, f"t{i}") for i, uid in enumerate(ids[:150])),
        store.add(ids[1], "another text"),
        return_exceptions=True)
    assert outcomes[:150] == [False] + [True] * 149
    assert isinstance(outcomes[150], UuidConflict)
    assert await asyncio.gather(*(store.add(uid, f"t{i}") for i, uid in enumerate(ids))) == (
        [False] * 150 + [True] * 50)
    assert await store.messages() == [f"t{i}" for i in range(200)]
    assert store.adds.calls == 352
    assert store.adds.requests <= 10
    await store.close()


async def test_an_rpc_batch_reaches_redis_as_one_pipeline_without_a_script_check(
        make_replica: MakeReplica, shared_redis: RedisServer, redis_url: str) -> None:
    """A batch of 20 calls is one pipeline of 20 EVALSHA: no add goes alone first and no
    SCRIPT EXISTS round trip precedes them."""
    a = await make_replica(redis_url)
    assert (await call(a, "log", uuid=new_id(), msg="warm"))[0] == 200  # the script is loaded
    store = a.app[ENDPOINT].service.store  # type: ignore[attr-defined]
    requests = store.adds.requests
    with redis.Redis(port=shared_redis.port) as spy:
        spy.config_set("slowlog-log-slower-than", 0)  # log every command
        spy.slowlog_reset()
        batch = [{"method": "log", "kwargs": {"uuid": new_id(), "msg": f"b{i}"}} for i in range(20)]
        resp = await a.post("/rpc", json=batch)
        assert resp.status == 200
        assert await resp.json() == [{"result": {"stored": True}}] * 20
        commands = [entry["command"].split(b" ")[0] for entry in spy.slowlog_get(100)]
        spy.config_set("slowlog-log-slower-than", 10_000)
    assert store.adds.requests == requests + 1
    assert Counter(commands)[b"EVALSHA"] == 20
    assert b"SCRIPT" not in commands


async def test_adds_after_redis_lost_its_scripts_are_stored_once(
        shared_redis: RedisServer, redis_url: str) -> None:
    """After SCRIPT FLUSH (as on a restarted Redis), adds answered NOSCRIPT are sent again once
    the script is loaded: each stored once, in order, and resent ones then seen as duplicates."""
    store = RedisStore(redis_url)
    ids = [new_id() for _ in range(10)]
    with redis.Redis(port=shared_redis.port) as direct:
        direct.script_flush()
        assert await asyncio.gather(*(store.add(uid, f"t{i}") for i, uid in enumerate(ids))) == [True] * 10
        direct.script_flush()
        assert await asyncio.gather(*(store.add(uid, f"t{i}") for i, uid in enumerate(ids))) == [False] * 10
    assert await store.messages() == [f"t{i}" for i in range(10)]
    await store.close()


async def test_sigkill_of_redis_under_load_loses_no_acknowledged_message(
        make_replica: MakeReplica, redis_server: RedisServer) -> None:
    """Writers post through two replicas while Redis is SIGKILLed and restarted: every 200 survives."""
    a, b = await make_replica(redis_server.url), await make_replica(redis_server.url)
    acknowledged: list[str] = []
    refused: list[int] = []
    done, restarted = asyncio.Event(), asyncio.Event()

    async def writer(replica: Client, name: str) -> None:
        for n in itertools.count():
            if done.is_set():
                return
            text = f"{name}-{n}"
            status, _ = await call(replica, "log", uuid=new_id(), msg=text)
            if status == 200:
                acknowledged.append(text)
            else:
                refused.append(status)
                await restarted.wait()  # Redis is down: do not spin while it restarts

    with capture_logs() as logs:
        writers = [asyncio.create_task(writer(r, f"w{i}")) for i, r in enumerate((a, b, a, b))]
        await wait_for(lambda: len(acknowledged) >= 100)
        await asyncio.to_thread(redis_server.kill)
        await wait_for(lambda: len(refused) >= 4)
        before_restart = len(acknowledged)
        await asyncio.to_thread(redis_server.start)
        restarted.set()
        await wait_for(lambda: len(acknowledged) >= before_restart + 100, timeout=10)
        done.set()
        await asyncio.gather(*writers)

    assert set(refused) == {503}
    stored = (await call(a, "messages"))[1]["result"]["logs"]
    counts = Counter(stored)
    assert all(counts[text] == 1 for text in acknowledged), "an acknowledged message was lost or doubled"
    assert max(counts.values()) == 1
    events = [e["event"] for e in logs]
    assert "store unreachable" in events
    assert "store reachable again" in events
    assert not any("exc_info" in e or e["log_level"] == "error" for e in logs)


async def test_redis_unreachable_is_503_then_recovers_by_itself(
        make_replica: MakeReplica, tmp_path: Path) -> None:
    """No Redis: log and /ready answer 503 (Retry-After), /health 200, one log line; Redis up: 200 again."""
    later = RedisServer(tmp_path / "redis", config=REDIS_CONF)
    replica = await make_replica(later.url)
    with capture_logs() as logs:
        for _ in range(3):
            resp = await replica.post("/rpc/log", json={"uuid": new_id(), "msg": "lost?"})
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            error = (await resp.json())["error"]
            assert (error["type"], error["message"]) == ("ServiceUnavailable",
                                                         "redis unavailable: ConnectionError")
        ready = await replica.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["status"] == "unavailable"
        assert (await replica.get("/health")).status == 200

        with later:
            await asyncio.to_thread(later.start)
            key = new_id()
            assert await call(replica, "log", uuid=key, msg="after") == (200, {"result": {"stored": True}})
            assert (await replica.get("/ready")).status == 200
            assert (await call(replica, "messages"))[1]["result"]["logs"] == ["after"]
    outage = [e for e in logs if e["event"] == "store unreachable"]
    assert len(outage) == 1
    assert outage[0]["log_level"] == "warning"
    assert "Connect" in outage[0]["error"]
    assert [e["event"] for e in logs].count("store reachable again") == 1
    assert not any(e["log_level"] == "error" or "exc_info" in e for e in logs)


def set_maxmemory(server: RedisServer, limit: int) -> None:
    """Cap the server's memory at ``limit`` bytes (0: no cap), refusing writes beyond it."""
    with server.client() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", limit)


async def test_a_full_redis_is_503_with_one_warning_until_a_write_succeeds(
        make_replica: MakeReplica, redis_server: RedisServer) -> None:
    """Redis at maxmemory refuses every write: each log call, alone or in a batch, is a 503 with
    Retry-After, and the replica logs one warning for the whole episode, no traceback; reads
    still work, and once Redis has room the next write is stored and the log says so."""
    replica = await make_replica(redis_server.url)
    assert await call(replica, "log", uuid=new_id(), msg="before") == (200, {"result": {"stored": True}})
    set_maxmemory(redis_server, 1)
    with capture_logs() as logs:
        alone = await asyncio.gather(*(replica.post("/rpc/log", json={"uuid": new_id(), "msg": f"m{i}"})
                                       for i in range(20)))
        batch = [{"method": "log", "kwargs": {"uuid": new_id(), "msg": f"b{i}"}} for i in range(10)]
        batched = await replica.post("/rpc", json=batch)
        for resp in (*alone, batched):
            assert (resp.status, resp.headers["Retry-After"]) == (503, "1")
            assert (await resp.json())["error"] == {
                "type": "ServiceUnavailable", "message": "redis unavailable: OutOfMemoryError",
                "args": ["redis unavailable: OutOfMemoryError"]}
        assert (await call(replica, "messages"))[1]["result"]["logs"] == ["before"]
        set_maxmemory(redis_server, 0)
        assert await call(replica, "log", uuid=new_id(), msg="after") == (200, {"result": {"stored": True}})
    full = [e for e in logs if e["event"] == "store full: writes refused"]
    assert len(full) == 1
    assert full[0]["log_level"] == "warning"
    assert "maxmemory" in full[0]["error"]
    assert [e["event"] for e in logs].count("store accepting writes again") == 1
    assert not any(e["log_level"] == "error" or "exc_info" in e for e in logs)


async def test_memory_store_stays_the_default(make_replica: MakeReplica, aiohttp_client: AiohttpClient
                                              ) -> None:
    """Without LOGGING_STORE, logging keeps messages in memory and is always ready."""
    assert LoggingSettings.from_env({}).logging_store == "memory"
    replica = await aiohttp_client(create_logging(LoggingSettings()))
    assert await call(replica, "log", uuid=new_id(), msg="here") == (200, {"result": {"stored": True}})
    resp = await replica.get("/ready")
    assert (resp.status, await resp.json()) == (200, {"status": "ready", "service": "logging"})


MEMORY_SAMPLE = 5_000


async def test_memory_per_short_message_in_redis(shared_redis: RedisServer, redis_url: str) -> None:
    """A short message (UUID key, ``msg-<n>`` text) costs Redis under 200 bytes: INFO memory before/after."""
    def only_this_test_connected() -> bool:  # the store's buffers are not the messages' cost
        return bool(shared_redis.info("clients")["connected_clients"] == 1)

    before = await asyncio.to_thread(shared_redis.used_memory)
    store = RedisStore(redis_url)
    for start in range(0, MEMORY_SAMPLE, 500):
        await asyncio.gather(*(store.add(new_id(), f"msg-{n}") for n in range(start, start + 500)))
    assert await store.count() == MEMORY_SAMPLE
    await store.close()
    await wait_for(only_this_test_connected)
    after = await asyncio.to_thread(shared_redis.used_memory)
    assert (after - before) / MEMORY_SAMPLE < 200
