"""The Cluster of real service processes: a service counts as started only once it serves itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scripts.cluster import Cluster

pytestmark = pytest.mark.e2e


class _AlwaysHealthy(BaseHTTPRequestHandler):
    """Another process's server that happens to answer GET /health with 200 too."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: nothing to report."""


@pytest.fixture
def squatter(tmp_path: Path) -> Iterator[tuple[Cluster, ThreadingHTTPServer]]:
    """A cluster whose messages port was taken, after it was picked, by a server of someone else's."""
    cluster = Cluster(tmp_path)
    server = ThreadingHTTPServer((cluster.host, cluster.ports["messages"]), _AlwaysHealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cluster, server
    finally:
        cluster.stop_all()
        server.shutdown()
        server.server_close()


def test_a_port_taken_after_it_was_picked_is_an_error_not_a_start(
        squatter: tuple[Cluster, ThreadingHTTPServer]) -> None:
    """When another process answers on a service's port, start() says the service could not
    listen, instead of taking the other process's health check for the service's."""
    cluster, _ = squatter

    with pytest.raises(RuntimeError, match=r"messages exited with status 1 before serving .*: cannot listen"):
        cluster.start("messages")


def test_a_started_service_has_said_it_listens(tmp_path: Path) -> None:
    """start() returns once the service itself has logged that it listens on its port."""
    with Cluster(tmp_path) as cluster:
        cluster.start("messages")

        events = [(line["event"], line.get("port")) for line in cluster.log_lines("messages")]

    assert ("service listening", cluster.ports["messages"]) in events
