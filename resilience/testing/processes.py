"""Processes for tests and tools: a free port, and waiting until a service is healthy.

Synchronous, for tests that start real processes and for scripts; async tests
wait on their own conditions.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: How often a starting service's health check is tried again.
HEALTH_POLL = 0.05


def is_healthy(url: str) -> bool:
    """Whether ``<url>/health`` answers 200 right now."""
    return _answers_200(url + "/health")


def is_ready(url: str) -> bool:
    """Whether ``<url>/ready`` answers 200 right now (the service can serve its calls)."""
    return _answers_200(url + "/ready")


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def poll_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``condition`` until it returns true, or raise TimeoutError naming ``what``.

    Synchronous, for the scripts and for starting processes; async tests wait
    on their own conditions with the test suite's ``wait_for``.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(HEALTH_POLL)


def wait_until_healthy(url: str, timeout: float = 15.0) -> None:
    """Poll ``<url>/health`` until it answers 200, or raise TimeoutError."""
    poll_until(lambda: is_healthy(url), timeout, f"{url} healthy")
