"""Property-based fuzz of the facade, through the real RPC layer.

The facade under test is wired to the real logging and messages RPC apps on
real sockets (the ``make_facade`` fixture), so every fuzzed request goes
through validation, the retry and breaker policy, the RPC client and server
and the logging store. Hypothesis runs each property's examples against one
set of apps; the properties hold whatever earlier examples stored. The
strategies are in ``tests/strategies.py``, the oracle in ``tests/oracle.py``,
the facade's security checks in ``tests/test_security.py``.
"""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from facade.ids import KeyUuids
from facade.openapi import IDEMPOTENCY_KEY_PATTERN
from tests.conftest import MakeFacade, stored
from tests.oracle import Stack, check_reply
from tests.strategies import BAD_KEYS, FUZZ, GOOD_KEYS, MESSAGE_TEXT, FuzzRequest, requests, weighted


@pytest.fixture
async def stack(make_facade: MakeFacade, logging_server: TestServer) -> Stack:
    """A facade wired to the real logging and messages apps."""
    return Stack(await make_facade(), logging_server)



@FUZZ
@given(req=requests())
async def test_any_request_gets_a_documented_reply(stack: Stack, req: FuzzRequest) -> None:
    """Any method, path, query, body and headers: no 5xx, no internals, a documented reply, no stray write."""
    before = stored(stack.logging)
    check_reply(stack, req, await stack.send(req), before)


@FUZZ
@given(req=requests(methods=st.just("POST"), paths=st.just("/facade")))
async def test_any_post_stores_its_message_once_or_nothing(stack: Stack, req: FuzzRequest) -> None:
    """Any POST /facade: a 200 stored exactly its msg once; anything else stored nothing."""
    before = stored(stack.logging)
    check_reply(stack, req, await stack.send(req), before)


@FUZZ
@given(req=requests(methods=st.sampled_from(["GET", "HEAD"]), paths=st.just("/facade")),
       seed=st.lists(MESSAGE_TEXT, max_size=4))
async def test_any_get_answers_the_right_page(stack: Stack, req: FuzzRequest, seed: list[str]) -> None:
    """Any GET /facade query: a 200 holds exactly the requested slice of the store; a 400 says why."""
    for msg in seed:
        assert (await stack.facade.post("/facade", json={"msg": msg})).status == 200
    before = stored(stack.logging)
    check_reply(stack, req, await stack.send(req), before)


@FUZZ
@given(key=weighted((2, GOOD_KEYS), (1, BAD_KEYS)), first=MESSAGE_TEXT, second=MESSAGE_TEXT)
async def test_idempotency_key_model(stack: Stack, key: str, first: str, second: str) -> None:
    """Same key and msg: same UUID, stored once; same key, other msg: 422; a malformed key: 400, no write."""
    headers = {"Idempotency-Key": key}
    before = stored(stack.logging)
    one = await stack.facade.post("/facade", json={"msg": first}, headers=headers)
    trimmed = key.strip(" \t")
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN[1:-1], trimmed):
        assert one.status == 400
        assert stored(stack.logging) == before
        return
    message_id = KeyUuids()(trimmed)
    if stack.acknowledged.get(message_id, first) != first:
        assert one.status == 422
        assert stored(stack.logging) == before
        return
    assert one.status == 200
    assert (await one.json())["uuid"] == message_id
    again = await stack.facade.post("/facade", json={"msg": first}, headers=headers)
    assert (await again.json())["uuid"] == message_id
    other = await stack.facade.post("/facade", json={"msg": second}, headers=headers)
    assert other.status == (200 if second == first else 422)
    expected = before if message_id in stack.acknowledged else [*before, first]
    assert stored(stack.logging) == expected
    stack.acknowledged[message_id] = first
