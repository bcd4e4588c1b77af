"""The bare handler: the same public API as the facade, answered in one hop, nothing else.

``python -m bench.bare --port N`` serves, on uvloop like the services:

- ``POST /facade {"msg": "..."}`` -> ``{"status": "success", "uuid": "<uuid4>"}``
  (the message is appended to an in-memory list);
- ``GET /facade`` -> ``{"logs": [...], "message": "not implemented yet"}``;
- ``GET /health`` -> ``{"status": "ok"}``.

No validation beyond a JSON object with a string ``msg``, no logs, no RPC: the
floor every figure of the real services is compared against. ``bare_server``
runs it as a process of its own on a free port.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import web

from resilience.testing.processes import free_port, wait_until_healthy

STATIC_MESSAGE = "not implemented yet"
MESSAGES = web.AppKey("messages", list[str])
STOP_TIMEOUT = 10.0


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


@contextmanager
def bare_server(log_dir: Path, host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """The bare handler as a process of its own on a free port, serving: its URL and PID.
    Stopped by PID on the way out: SIGTERM, then SIGKILL after ``STOP_TIMEOUT``."""
    port = free_port(host)
    with open(log_dir / "bare.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.bare", "--host", host, "--port", str(port)],
                                cwd=Path(__file__).resolve().parents[1], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://{host}:{port}"
        wait_until_healthy(url)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
