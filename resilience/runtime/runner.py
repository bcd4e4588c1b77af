"""Running a service process: settings, logs, the event loop, and a clean stop.

Two per-process settings live here, each for what it buys: rare young garbage
collections (less CPU per request) and large blocks handed back to the system
when freed (memory falls back after a burst); docs/benchmark.md has the figures.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import socket
import sys
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from resilience.observability.logs import configure_logging, get_logger
from resilience.settings import ServerSettings, SettingsError

log = get_logger("resilience.runtime.runner")

S = TypeVar("S", bound=ServerSettings)
#: Blocks this large or larger come from their own memory mapping (glibc's M_MMAP_THRESHOLD).
LARGE_BLOCK = 32 * 1024
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def run_main(name: str, settings_type: type[S], create_app: Callable[[S], web.Application],
             port: Callable[[S], int]) -> None:
    """Entry point of a service process: serve ``create_app(settings)`` until SIGINT or SIGTERM,
    ``settings`` read from the environment as ``settings_type``.

    Bad configuration (a bad value, a ``HOST`` that names no address, an RPC
    port exposed without ``RPC_SECRET``) ends the process with a one-line
    message and exit status 2 before anything is logged; a port already in
    use, with exit status 1. Never a traceback.
    """
    try:
        settings = settings_type.from_env()
        check_host(settings.host)
        app = create_app(settings)
    except SettingsError as exc:
        sys.stderr.write(f"{name}: configuration error: {exc}\n")
        raise SystemExit(2) from None
    configure_logging(name, settings.log_format, settings.log_level)
    give_large_blocks_back()
    try:
        serve(app, name=name, host=settings.host, port=port(settings),
              shutdown_timeout=settings.shutdown_timeout)
    except OSError as exc:
        log.error("cannot listen", host=settings.host, port=port(settings), error=str(exc))
        raise SystemExit(1) from None


def check_host(host: str) -> None:
    """Raise SettingsError unless ``host`` is an address or a name this machine resolves.

    The lookup is the one binding would make, done first so that a typo
    (``999.1.1.1``) is a configuration error, not a failure after "service starting".
    """
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise SettingsError(f"HOST={host!r} is neither an IP address nor a name this machine "
                            "resolves") from None


def give_large_blocks_back() -> None:
    """Have glibc map every block of ``LARGE_BLOCK`` bytes or more on its own, so that freeing
    it gives the memory back to the system at once.

    Request bodies and pages are such blocks. By default glibc keeps freed blocks under
    128 KiB (and, as it adapts, up to 32 MiB) in its heap, where fragmentation pins them:
    after a burst of large bodies, a process would stay at its peak size long after they
    were freed. Elsewhere (macOS, musl) this does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)


#: Net new objects between young collections (CPython's default is 700); see below.
YOUNG_COLLECTION_THRESHOLD = 20_000


async def tune_garbage_collection(_app: web.Application) -> None:
    """Collect rarely, and never again what start-up built.

    What start-up built (modules, the app, its clients) lives as long as the
    process: frozen, it is left out of every later collection. Objects that
    die young are freed by their reference counts, not by the collector, so
    what a young collection scans is mostly the live state of the requests
    in flight, again and again, dozens of times a second under load at the
    default threshold. What waits for a collection meanwhile is only cyclic
    garbage, a few MB at most.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


#: How long the tasks left once an app is cleaned up get to end, cancelled again and again.
STRAY_TASKS_GRACE = 1.0


async def stop_stray_tasks(_app: web.Application | None = None,
                           grace: float = STRAY_TASKS_GRACE) -> None:
    """Cancel the tasks still running once the app is cleaned up, again every 50 ms while one
    lives on, for at most ``grace`` seconds, then name any left in a warning.

    aiohttp cancels the tasks left at the end once and waits for them without a
    bound; a library task that swallows its cancellation (nats-py's, while its
    servers stop too) would keep the process past its supervisor's grace, to its SIGKILL.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if not left:
            return
        if loop.time() >= deadline:
            log.warning("tasks still running at shutdown",
                        tasks=[getattr(task.get_coro(), "__qualname__", task.get_name()) for task in left])
            return
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=0.05)


def serve(app: web.Application, *, name: str, host: str, port: int,
          shutdown_timeout: float) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then let in-flight requests finish and stop.

    aiohttp waits up to ``shutdown_timeout`` for in-flight requests, then
    cancels their request bodies and waits up to as long again before closing
    the connections: twice the timeout must stay under the supervisor's grace
    before SIGKILL (``SHUTDOWN_TIMEOUT``). A request whose calls run under a
    retry deadline ends within it anyway.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed everywhere but Windows
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    log.info("service starting", host=host, port=port)
    app.on_startup.append(tune_garbage_collection)
    app.on_cleanup.append(stop_stray_tasks)  # last: after every cleanup context has ended

    def listening(_banner: str) -> None:
        # aiohttp calls this once every site listens: then, and only then, the port is ours.
        log.info("service listening", host=host, port=port)

    web.run_app(app, host=host, port=port, shutdown_timeout=shutdown_timeout,
                access_log=None, print=listening, loop=loop)
    log.info("service stopped")
