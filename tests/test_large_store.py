"""A million stored messages: GET still answers, whole or paged, and nothing falls over."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from resilience.server import SERVICE_KEY

MILLION = 1_000_000


async def test_get_with_a_million_messages(
    make_facade: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    logging_server: TestServer,
) -> None:
    """The whole store comes back in order through both services; a page comes back alone."""
    store = logging_server.app[SERVICE_KEY].store  # type: ignore[attr-defined]
    for i in range(MILLION):
        store.add(str(uuid.UUID(int=i, version=4)), f"m{i}")
    facade = await make_facade()

    resp = await facade.get("/facade")
    assert resp.status == 200
    logs = (await resp.json())["logs"]
    assert len(logs) == MILLION
    assert (logs[0], logs[-1]) == ("m0", f"m{MILLION - 1}")

    resp = await facade.get("/facade", params={"offset": str(MILLION - 3), "limit": "10"})
    assert (await resp.json())["logs"] == [f"m{MILLION - 3}", f"m{MILLION - 2}", f"m{MILLION - 1}"]

    resp = await facade.post("/facade", json={"msg": "one more"})
    assert resp.status == 200
    assert len(store) == MILLION + 1
