"""The process helpers tests and scripts share: free ports."""

from __future__ import annotations

import socket

from resilience.testing.processes import _RANGE, LOWEST_PORT, _ephemeral_low, free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_ones() -> None:
    """Ports picked for processes that bind them later: never one an outgoing connection could
    take meanwhile (the kernel's ephemeral ports), never the same twice."""
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == 200
    assert all(LOWEST_PORT <= port < _ephemeral_low() for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_something_listens_on_is_skipped() -> None:
    """The port next in turn is taken by another socket: the one after it comes instead."""
    last = free_port()
    after = last + 1 if last + 1 < _RANGE.stop else _RANGE.start
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", after))
        taken.listen()
        assert free_port() not in (last, after)
