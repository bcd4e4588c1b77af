"""Large stores: GET reads them a page at a time within both budgets, and nothing falls over."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from facade.settings import FacadeSettings
from logging_service.paging import MAX_PAGE
from resilience.rpc.server import ENDPOINT

Client = TestClient[web.Request, web.Application]
MILLION = 1_000_000
# What a reply holds around its logs: the brackets' object, "message" and "next_offset".
REPLY_OVERHEAD = 100


async def fill(server: TestServer, texts: Callable[[int], str], count: int) -> None:
    store = server.app[ENDPOINT].service.store  # type: ignore[attr-defined]
    for i in range(count):
        await store.add(str(uuid.UUID(int=i, version=4)), texts(i))


async def read_all(facade: Client, limit: int | None = None) -> tuple[list[str], list[int]]:
    """Follow next_offset from 0 to the end; return every message and each reply's size."""
    texts: list[str] = []
    sizes: list[int] = []
    offset: int | None = 0
    while offset is not None:
        params = {"offset": str(offset)} | ({} if limit is None else {"limit": str(limit)})
        resp = await facade.get("/facade", params=params)
        assert resp.status == 200
        raw = await resp.read()
        sizes.append(len(raw))
        page = orjson.loads(raw)
        texts.extend(page["logs"])
        assert page.get("next_offset", len(texts)) == len(texts)
        offset = page.get("next_offset")
    return texts, sizes


async def test_a_million_messages_come_back_page_by_page(
    make_facade: Callable[..., Awaitable[Client]], logging_server: TestServer
) -> None:
    """At the shipped settings, a million messages are read whole by following next_offset, in
    order, MAX_PAGE at a time; a POST still works afterwards."""
    await fill(logging_server, lambda i: f"m{i}", MILLION)
    facade = await make_facade()

    texts, sizes = await read_all(facade)
    assert len(texts) == MILLION
    assert (texts[0], texts[-1]) == ("m0", f"m{MILLION - 1}")
    assert len(sizes) == MILLION // MAX_PAGE
    assert max(sizes) <= FacadeSettings().max_page_bytes + REPLY_OVERHEAD

    resp = await facade.get("/facade", params={"offset": str(MILLION - 3), "limit": "10"})
    assert (await resp.json())["logs"] == [f"m{MILLION - 3}", f"m{MILLION - 2}", f"m{MILLION - 1}"]
    assert (await facade.post("/facade", json={"msg": "one more"})).status == 200


async def test_large_messages_are_paged_by_bytes(
    make_facade: Callable[..., Awaitable[Client]], logging_server: TestServer
) -> None:
    """2,000 messages of 10,000 characters (20 MB): no reply is over MAX_PAGE_BYTES (plus its
    own few fields), even with limit=10000, and the pages hold every message once, in order."""
    await fill(logging_server, lambda i: f"{i:05d}" + "x" * 9_995, 2_000)
    facade = await make_facade()
    texts, sizes = await read_all(facade, limit=MAX_PAGE)
    assert [text[:5] for text in texts] == [f"{i:05d}" for i in range(2_000)]
    assert max(sizes) <= FacadeSettings().max_page_bytes + REPLY_OVERHEAD
    assert len(sizes) > 2_000 * 10_000 // FacadeSettings().max_page_bytes
