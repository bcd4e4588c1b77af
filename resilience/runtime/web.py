"""HTTP plumbing the three services share: bodies read in time, JSON in and out."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import http_exceptions, web
from aiohttp.typedefs import Middleware

#: What a handler or a middleware's ``handler`` is: a request in, a response out.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_TYPES = ("application/json",)
#: Methods whose body, if a client sends one, no handler here reads.
BODILESS_METHODS = frozenset({"GET", "HEAD"})
# Every body is read by ``body_deadline`` before a handler runs, so a body left unread
# means it was refused (408, 413, undecodable). aiohttp then drains what the client still
# sends, discarding it, before it closes: closing at once, with the client's bytes unread,
# would make the kernel answer with a reset that can destroy the refusal before the client
# reads it. aiohttp drains for 10 s by default; a second is enough to read a short reply.
LINGER_AFTER_REFUSAL = 1.0
#: ``handler_args`` of an app whose bodies are read by ``body_deadline``: drain a refused one briefly.
CLOSE_ON_UNREAD_BODY = {"lingering_time": LINGER_AFTER_REFUSAL}


class BadRequest(Exception):
    """The request cannot be used; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def retry_after_header(hint: float | None) -> dict[str, str]:
    """A ``Retry-After`` header in whole seconds: ``hint`` rounded up, at least 1 (1 without a hint)."""
    return {"Retry-After": str(max(1, math.ceil(hint or 1)))}


def body_deadline(timeout: float, refuse: Callable[[int, str], web.Response]) -> Middleware:
    """A middleware that reads a request's body within ``timeout`` seconds, before the handler.

    aiohttp has no body timeout: a client that announces a body and stalls
    (or trickles an endless chunked one) would hold its buffer for as long as
    the connection lives. Past the deadline the answer is 408, the partial
    body is dropped and the connection closed (after
    ``LINGER_AFTER_REFUSAL`` s of discarding whatever still comes, with
    ``CLOSE_ON_UNREAD_BODY``). A body over the app's ``client_max_size`` (413)
    or one that cannot be decoded (400) is refused the same way. The
    deadline counts from the moment the headers are in, so it bounds a slow
    sender as well as a stalled one. The body is then cached on the request:
    ``request.read()`` in the handler costs nothing.

    ``refuse(status, message)`` builds the reply in the app's error format;
    it is sent with ``Connection: close``, since the rest of the body was
    never read and the connection cannot carry another request.
    """

    @web.middleware
    async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _reads_body(request):
            try:
                if request.content.is_eof():  # it came in with its headers (most do): no timer
                    await request.read()
                else:
                    async with asyncio.timeout(timeout):
                        await request.read()
            except TimeoutError:
                return _closing(refuse(408, f"request body did not arrive within {timeout:g} s"))
            except web.HTTPRequestEntityTooLarge:
                return _closing(refuse(413, f"request body is over the limit of "
                                            f"{request.client_max_size} bytes"))
            except web.RequestPayloadError as exc:
                return _closing(refuse(400, _unreadable(request, exc)))
        return await handler(request)

    return read_body_in_time


def _reads_body(request: web.Request) -> bool:
    """Whether a handler will read this request's body: it has one, the route exists, and the
    method carries one. Other bodies are never read; aiohttp drains them (for at most
    ``LINGER_AFTER_REFUSAL`` s) after the reply."""
    return (request.body_exists and request.method not in BODILESS_METHODS
            and request.match_info.http_exception is None)


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


def _unreadable(request: web.Request, exc: web.RequestPayloadError) -> str:
    if isinstance(exc.__cause__, http_exceptions.ContentEncodingError):
        encoding = request.headers.get("Content-Encoding", "")
        return f"request body cannot be read: it is not valid {encoding} (Content-Encoding)"
    return "request body cannot be read: it is cut short or its framing is broken"


async def read_json(request: web.Request, *, require_content_type: bool) -> Any:
    """Parse the request body as JSON, or raise ``BadRequest`` saying what is wrong with it.

    Without ``require_content_type``, a body sent with no Content-Type is still
    read as JSON; a declared type other than JSON (as curl's ``-d`` declares
    a form unless told otherwise) is refused either way, with 415. The body
    itself was read (and its size limited to the app's ``client_max_size``)
    by ``body_deadline``.
    """
    ctype = request.headers.get("Content-Type")
    if (ctype is not None or require_content_type) and not _is_json(request.content_type):
        raise BadRequest(
            415, "Content-Type must be application/json (with curl: -H 'Content-Type: application/json')"
        )
    body = await request.read()
    if not body.strip():
        raise BadRequest(400, "request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, _not_json(body, exc)) from None


def _not_json(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """Where the body stops being JSON, in our words rather than the parser's."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"request body is not valid JSON: byte {bad.start + 1} is not UTF-8 text"
    return f"request body is not valid JSON: the error is at line {exc.lineno}, column {exc.colno}"


def _is_json(content_type: str) -> bool:
    return content_type in JSON_TYPES or content_type.endswith("+json")


def reply_budget(max_bytes: int, send_timeout: float,
                 refuse: Callable[[int, str, dict[str, str]], web.Response],
                 on_cut: Callable[[], object] = lambda: None) -> Middleware:
    """A middleware that bounds the memory of replies clients have not taken yet.

    aiohttp writes a reply after the handler returns, into the transport's
    buffer, and keeps it there for as long as the client does not read: a
    thousand clients that ask for a large page and never read would hold a
    thousand pages. Here the reply is written inside the middleware, which
    goes first in the app's list (the others have finished the reply by
    then), with ``max_bytes`` of bodies being written at once across the app (past
    it, a large reply is refused 503 with ``Retry-After`` instead of held)
    and at most ``send_timeout`` seconds to leave: a reply not taken by then
    has its connection aborted, and its buffer freed (``on_cut`` counts it).
    Once written, a reply's body is let go: aiohttp keeps a keep-alive
    connection's last response until the next request comes, which a client
    that never reads never sends.
    """
    writing = 0

    @web.middleware
    async def bounded_reply(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal writing
        response = await handler(request)
        size = response.content_length or 0 if isinstance(response, web.Response) else 0
        if size and writing + size > max_bytes and writing:
            return refuse(503, "too many replies are waiting for their clients to read them; "
                               "retry in 1 s", retry_after_header(1))
        writing += size
        try:
            async with asyncio.timeout(send_timeout):
                await response.prepare(request)
                await response.write_eof()
        except TimeoutError:
            on_cut()
            if request.transport is not None:
                request.transport.abort()  # drops what the client did not take
        except ConnectionError:
            pass  # the client went away mid-reply: nobody is left to answer
        finally:
            writing -= size
            if isinstance(response, web.Response):
                response.body = None
        return response

    return bounded_reply
