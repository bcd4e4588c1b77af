"""The bare handler: the same public API as the facade, answered in one hop, nothing else.

``python -m bench.bare --port N`` serves, on uvloop like the services:

- ``POST /facade {"msg": "..."}`` -> ``{"status": "success", "uuid": "<uuid4>"}``
  (the message is appended to an in-memory list);
- ``GET /facade`` -> ``{"logs": [...], "message": "not implemented yet"}``;
- ``GET /health`` -> ``{"status": "ok"}``.

No validation beyond a JSON object with a string ``msg``, no logs, no RPC: the
floor every figure of the real services is compared against.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import orjson
import uvloop
from aiohttp import web

STATIC_MESSAGE = "not implemented yet"
MESSAGES = web.AppKey("messages", list[str])


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def post_message(request: web.Request) -> web.Response:
    """Store the message and answer with a fresh UUID."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"status": "failure", "message": "body is not JSON"}, 400)
    msg = body.get("msg") if isinstance(body, dict) else None
    if not isinstance(msg, str) or not msg:
        return _json({"status": "failure", "message": 'body needs a "msg" string'}, 422)
    request.app[MESSAGES].append(msg)
    return _json({"status": "success", "uuid": str(uuid.uuid4())})


async def get_messages(request: web.Request) -> web.Response:
    """Every stored message and the static text."""
    return _json({"logs": request.app[MESSAGES], "message": STATIC_MESSAGE})


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "service": "bare"})


def create_app() -> web.Application:
    """The bare app with an empty message list."""
    app = web.Application()
    app[MESSAGES] = []
    app.router.add_post("/facade", post_message)
    app.router.add_get("/facade", get_messages)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the bare app on ``--host``/``--port`` until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(create_app(), host=args.host, port=args.port, access_log=None, print=None,
                shutdown_timeout=1.0, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
