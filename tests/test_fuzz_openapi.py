"""Schemathesis against the live facade: requests generated from the served OpenAPI document.

Beside the Hypothesis properties of ``tests/test_fuzz_facade.py`` (whose
strategies are written by hand), schemathesis derives requests, valid and
invalid, from the document itself and checks every reply against it: no
5xx, a documented status, the documented headers and Content-Type, a body
valid against its schema, and valid requests accepted. The facade, logging
and messages apps run on real sockets (free ports) in a thread of their own,
since schemathesis calls the API synchronously.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings

from facade.app import create_app as create_facade
from facade.openapi import build_openapi
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from messages.app import create_app as create_messages
from messages.settings import MessagesSettings

#: Cases per operation: a few seconds in all, the same cases on every run.
EXAMPLES = 40
STARTUP_TIMEOUT = 10.0


class LiveStack:
    """logging, messages and a facade wired to them, served by their own event loop in a thread."""

    def __init__(self) -> None:
        self.url = ""
        #: Every Idempotency-Key a 200 answered, with its message: keys are global, so a later
        #: case that reuses one with another message is rightly refused (422).
        self.keys: dict[str, str] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-facade", daemon=True)

    def __enter__(self) -> LiveStack:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"the live facade did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STARTUP_TIMEOUT)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__, never lost in the thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runners: list[web.AppRunner] = []
        try:
            logging_url = await _start(create_logging(LoggingSettings()), runners)
            messages_url = await _start(create_messages(MessagesSettings()), runners)
            facade = create_facade(replace(FacadeSettings(), logging_url=logging_url,
                                           messages_url=messages_url))
            self.url = await _start(facade, runners)
            self._ready.set()
            await self._stop.wait()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


async def _start(app: web.Application, runners: list[web.AppRunner]) -> str:
    """Serve ``app`` on a free loopback port; its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    runners.append(runner)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def live_facade() -> Iterator[LiveStack]:
    """A facade on a real socket, with real logging and messages behind it."""
    with LiveStack() as stack:
        yield stack


def _key_and_msg(case: schemathesis.Case) -> tuple[str, str] | None:
    """The (trimmed) Idempotency-Key and the message of a POST that sends both."""
    key = (case.headers or {}).get("Idempotency-Key")
    msg = case.body.get("msg") if isinstance(case.body, dict) else None
    return None if not isinstance(key, str) or not isinstance(msg, str) else (key.strip(" \t"), msg)


# The document the facade serves under the shipped settings (tests/test_openapi.py pins that the
# live facade serves exactly this one).
schema = schemathesis.openapi.from_dict(build_openapi(FacadeSettings()))


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_generated_request_gets_a_documented_reply(case: schemathesis.Case,
                                                         live_facade: LiveStack) -> None:
    """Any request schemathesis derives from the document: no 5xx, a reply the document describes,
    and a valid one accepted unless it reuses an Idempotency-Key with another message (then 422)."""
    sent = _key_and_msg(case)
    reused = sent is not None and live_facade.keys.get(sent[0], sent[1]) != sent[1]
    excluded = [schemathesis.checks.positive_data_acceptance] if reused else []
    response = case.call_and_validate(base_url=live_facade.url, excluded_checks=excluded)
    if reused:
        assert response.status_code == 422, response.text
    elif sent is not None and response.status_code == 200:
        live_facade.keys[sent[0]] = sent[1]
