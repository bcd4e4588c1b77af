"""After the load: wait until nothing is in flight, read the store back, and read the services' logs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from logging_service.paging import MAX_PAGE
from scripts.cluster import Cluster

from .proxy import SoakProxy


async def quiesce(proxy: SoakProxy, settle: float, patience: float = 30.0) -> None:
    """Wait ``settle`` seconds (the facade's retry deadline, plus the proxy's delay), then until no
    forward is in flight, but no longer than ``patience`` seconds in all."""
    await asyncio.sleep(settle)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proxy.idle.wait(), max(0.0, patience - settle))


async def follow_pages(fetch: Callable[[int], Awaitable[Any]], patience: float) -> list[str] | None:
    """Every message, from offset 0 on, following each page's ``next_offset``.

    ``fetch(offset)`` returns a page (``{"logs": [...], "next_offset": N}``) or
    None; a page that does not come is asked for again until ``patience``
    seconds have gone (then None: the breaker may still be open after the last faults).
    """
    deadline = time.monotonic() + patience
    texts: list[str] = []
    while True:
        try:
            page = await fetch(len(texts))
        except (TimeoutError, aiohttp.ClientError):
            page = None
        if page is not None:
            texts.extend(str(text) for text in page["logs"])
            if "next_offset" not in page:
                return texts
            continue
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.25)


async def read_store(session: aiohttp.ClientSession, logging_url: str, timeout: float = 5.0,
                     patience: float = 20.0) -> list[str]:
    """Every stored message, from the logging service itself (POST /rpc/messages, page by page);
    from a messages instance on the event stream, every message it keeps (asked again while it
    answers 503, replaying the stream after a restart)."""

    async def fetch(offset: int) -> Any:
        async with session.post(f"{logging_url}/rpc/messages", json={"offset": offset},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return orjson.loads(await resp.read())["result"] if resp.status == 200 else None

    texts = await follow_pages(fetch, patience)
    if texts is None:
        raise RuntimeError(f"could not read the store from {logging_url} within {patience} s")
    return texts


async def read_via_facade(session: aiohttp.ClientSession, facade_url: str, timeout: float,
                          patience: float = 20.0) -> list[str] | None:
    """Every stored message through the public API; None if the facade would not answer."""

    async def fetch(offset: int) -> Any:
        async with session.get(f"{facade_url}/facade", params={"offset": offset, "limit": MAX_PAGE},
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return orjson.loads(await resp.read()) if resp.status == 200 else None

    return await follow_pages(fetch, patience)


def logged_uuids(lines: Sequence[Mapping[str, object]]) -> dict[str, set[str]]:
    """Every UUID the logging service logged as stored, with the message(s) stored under it.

    ``lines`` are its JSON log lines, across restarts; a UUID stored again by
    a restarted process (its first store was lost) lists the same message.
    """
    stored_uuids: dict[str, set[str]] = {}
    for line in lines:
        if line.get("event") == "message stored":
            stored_uuids.setdefault(str(line.get("uuid")), set()).add(str(line.get("msg")))
    return stored_uuids


def replica_aliases(cluster: Cluster) -> dict[str, str]:
    """Each logging replica's and messages instance's ``host:port`` (as the facade's breaker names
    give it) -> its name."""
    return {f"{cluster.host}:{cluster.ports[name]}": name
            for name in (*cluster.replicas, *cluster.messages_instances)}


def breaker_label(breaker: str, aliases: Mapping[str, str]) -> str:
    """A breaker's name with its replica's address replaced by the replica's name
    (``logging.write@127.0.0.1:40123`` -> ``logging.write@logging2``)."""
    base, at, authority = breaker.partition("@")
    return f"{base}@{aliases.get(authority, authority)}" if at else breaker


def evidence(cluster: Cluster) -> dict[str, Any]:
    """What the services' logs show happened (the logging figures summed over its replicas)."""
    services = ("facade", *cluster.replicas, *cluster.messages_instances)
    logs = {name: cluster.log_lines(name) for name in services}
    facade = logs["facade"]
    logging_lines = [line for name in cluster.replicas for line in logs[name]]
    aliases = replica_aliases(cluster)
    breaker_opened: Counter[str] = Counter(
        breaker_label(str(line.get("breaker")), aliases) for line in facade
        if line.get("event") == "circuit breaker state changed" and line.get("new_state") == "open")
    return {
        "facade_retries": sum(line.get("event") == "retrying call"
                              and line.get("downstream") == "logging" for line in facade),
        "breaker_opened": dict(breaker_opened),
        "degraded_gets_logged": sum(line.get("event") == "messages service unavailable, answering without it"
                                    for line in facade),
        "stored_logged": sum(line.get("event") == "message stored" for line in logging_lines),
        "duplicates_ignored": sum(line.get("event") == "duplicate message ignored" for line in logging_lines),
        "store_unreachable_logged": sum(line.get("event") == "store unreachable" for line in logging_lines),
        "error_lines": {name: sum(line.get("level") in ("error", "critical") for line in lines)
                        for name, lines in logs.items()},
        "tracebacks": {name: cluster.raw_log(name).count("Traceback") for name in services},
    }
