"""Shared fixtures: real apps on real sockets, wired the way the processes wire them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from facade.app import create_app as create_facade
from logging_service.app import create_app as create_logging
from messages.app import create_app as create_messages
from resilience import Settings
from resilience.server import SERVICE_KEY

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


POLL_INTERVAL = 0.01


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (polling), or fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(POLL_INTERVAL)


@pytest.fixture
async def logging_server(aiohttp_server: AiohttpServer) -> TestServer:
    """The real logging RPC app on a free port."""
    return await aiohttp_server(create_logging(Settings()))


@pytest.fixture
async def messages_server(aiohttp_server: AiohttpServer) -> TestServer:
    """The real messages RPC app on a free port."""
    return await aiohttp_server(create_messages(Settings()))


def stored(server: TestServer) -> list[str]:
    """The messages a logging test server holds, read from its service object."""
    service = server.app[SERVICE_KEY]
    return list(service.store.messages())  # type: ignore[attr-defined]


@pytest.fixture
def make_facade(aiohttp_client: AiohttpClient, logging_server: TestServer,
                messages_server: TestServer
                ) -> Callable[..., Awaitable[TestClient[web.Request, web.Application]]]:
    """Build a facade client wired to the real logging and messages test servers (or given URLs),
    with the shipped settings unless a test of a setting overrides one."""

    async def make(**overrides: object) -> TestClient[web.Request, web.Application]:
        settings = Settings(
            logging_url=str(logging_server.make_url("")).rstrip("/"),
            messages_url=str(messages_server.make_url("")).rstrip("/"),
        )
        return await aiohttp_client(create_facade(replace(settings, **overrides)))  # type: ignore[arg-type]

    return make
