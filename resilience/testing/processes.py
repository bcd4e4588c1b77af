"""Processes for tests and tools: a free port, and waiting until a service is healthy.

Synchronous, for tests that start real processes and for scripts; async tests
wait on their own conditions.
"""

from __future__ import annotations

import itertools
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

#: The lowest port free_port hands out; it stays below the kernel's ephemeral ports.
LOWEST_PORT = 20000


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, not handed out before by this process.

    It is taken below the kernel's ephemeral ports (``ip_local_port_range``),
    from which every outgoing connection takes its local port: a process's
    port is picked before the process binds it, and meanwhile a connection
    between two other processes (a NATS route, a Redis client) could take an
    ephemeral one.
    """
    for port in itertools.islice(_PORTS, len(_RANGE)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port from {_RANGE.start} to {_RANGE.stop - 1}")


def _ephemeral_low() -> int:
    """The lowest port the kernel hands outgoing connections (32768 where it does not say)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_RANGE = range(LOWEST_PORT, max(LOWEST_PORT + 1000, _ephemeral_low()))
# In turn from a random one, so that two processes picking at once rarely meet.
_START = random.randrange(len(_RANGE))
_PORTS: Iterator[int] = itertools.cycle([*_RANGE[_START:], *_RANGE[:_START]])


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
