"""The facade fuzz's oracle: the apps a request goes to, and what every reply must satisfy.

Oracles: the OpenAPI document the facade serves (every reply must be
documented, with a valid JSON body), and the logging store (a reply other
than 200 stored nothing; a 200 POST stored exactly its ``msg``, once).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import assume, event
from multidict import CIMultiDictProxy
from yarl import URL

from facade.ids import KeyUuids
from facade.openapi import CORRELATION_ID_PATTERN
from logging_service.paging import MAX_PAGE
from resilience.observability.correlation import CORRELATION_HEADER
from tests.conftest import stored
from tests.openapi_oracle import contract, reply_errors
from tests.strategies import FuzzRequest

Client = TestClient[web.Request, web.Application]

DOCUMENT = contract()
# What a reply body must never show a client: traces, source paths, object reprs.
INTERNALS = ("Traceback", 'File "', ".py\"", "site-packages", "object at 0x", "<class ", "<function ")


@dataclass
class Reply:
    """What came back."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL


@dataclass
class Stack:
    """The facade client, the logging server behind it, and what the facade has acknowledged."""

    facade: Client
    logging: TestServer
    acknowledged: dict[str, str] = field(default_factory=dict)

    async def send(self, req: FuzzRequest) -> Reply:
        """Send ``req`` exactly as built (paths and queries percent-encoded, headers verbatim).

        A HEAD the HTTP parser refuses is skipped: aiohttp's server answers it
        with a body, which no HTTP client can read after a HEAD.
        """
        assume(not (req.method == "HEAD" and req.parser_may_refuse()))
        root = self.facade.make_url("/")
        url = URL.build(scheme=root.scheme, host=root.host or "", port=root.port,
                        path=req.path).with_query(req.query)
        skip = [] if req.content_type is not None else ["Content-Type"]
        async with self.facade.session.request(req.method, url, data=req.body, headers=req.headers(),
                                               skip_auto_headers=skip) as resp:
            return Reply(resp.status, resp.headers, await resp.read(), resp.url)



def leaked_internals(body: bytes, *sent: str | bytes) -> list[str]:
    """The markers of Python internals in ``body``, but for those the client itself ``sent``
    (a path, a body, an argument's name: what an error may quote back). Hypothesis draws on the
    strings in the test code, these markers included, so a fuzzed request does send them."""
    text = body.decode("utf-8", "replace")
    said = "".join(part.decode("utf-8", "replace") if isinstance(part, bytes) else part
                   for part in sent)
    return [marker for marker in INTERNALS if marker in text and marker not in said]


def own_words(body: bytes) -> bytes:
    """What a reply says in the service's own words: the ``logs`` of a page (at the top, or in
    an RPC ``result``) are the clients' texts sent back as stored, so a marker among them (a
    text ending in ``.py`` before its closing quote) is no leak."""
    try:
        reply = json.loads(body)
    except ValueError:
        return body
    page = reply.get("result", reply) if isinstance(reply, dict) else None
    if not (isinstance(page, dict) and isinstance(page.get("logs"), list)):
        return body
    page["logs"] = []
    return json.dumps(reply).encode()


def check_reply(stack: Stack, req: FuzzRequest, reply: Reply, before: list[str]) -> None:
    """Every property a reply to any request must have."""
    event(f"{req.method if req.method in ('GET', 'POST', 'HEAD') else 'other method'} -> {reply.status}")
    assert reply.status < 500, reply.body[:500]
    assert not leaked_internals(own_words(reply.body), reply.url.path, repr(req)), reply.body[:500]
    if reply.status == 400 and reply.headers.get("Content-Type", "").startswith("text/plain"):
        # Refused by the HTTP parser before the app saw it; only for requests it may refuse.
        assert req.parser_may_refuse(), reply.body[:500]
        assert stored(stack.logging) == before
        return
    assert reply_errors(DOCUMENT, req.method, reply.url.path, reply.status, reply.headers, reply.body) == []
    check_correlation_id(req.correlation_id, reply.headers[CORRELATION_HEADER])
    after = stored(stack.logging)
    if req.method == "POST" and reply.url.path == "/facade" and reply.status == 200:
        check_stored_once(stack, req, json.loads(reply.body)["uuid"], before, after)
    else:
        assert after == before, (reply.status, reply.body[:200])
    if req.method == "GET" and reply.url.path == "/facade" and reply.status == 200:
        offset = int(reply.url.query.get("offset", "0"))
        end = offset + int(reply.url.query.get("limit", MAX_PAGE))
        page = json.loads(reply.body)
        assert page["logs"] == after[offset:end]
        assert page.get("next_offset") == (offset + len(page["logs"])
                                           if offset + len(page["logs"]) < len(after) else None)


def check_correlation_id(sent: str | None, echoed: str) -> None:
    """A sane client ID comes back as sent (trimmed as HTTP trims it); anything else is replaced."""
    trimmed = None if sent is None else sent.strip(" \t")
    if trimmed and re.fullmatch(CORRELATION_ID_PATTERN[1:-1], trimmed):
        assert echoed == trimmed
    else:
        assert re.fullmatch("[0-9a-f]{32}", echoed)


def check_stored_once(stack: Stack, req: FuzzRequest, message_id: str, before: list[str],
                      after: list[str]) -> None:
    """A 200 POST stored the body's msg exactly once under the UUID it answered."""
    msg = json.loads(req.body or b"")["msg"]
    if req.idempotency_key is not None:
        assert message_id == KeyUuids()(req.idempotency_key.strip(" \t"))
    if message_id in stack.acknowledged:
        assert stack.acknowledged[message_id] == msg
        assert after == before
    else:
        assert after == [*before, msg]
        stack.acknowledged[message_id] = msg
