"""The real service processes on free ports, for end-to-end tests, the benchmark and the soak.

::

    with Cluster(tmp_path) as cluster:
        cluster.start_all()
        requests.post(cluster.facade_url + "/facade", ...)
        cluster.kill("messages"); cluster.start("messages")

    # Three logging replicas on one Redis, the facade over their LOGGING_URLS:
    with Cluster(tmp_path, env={"LOGGING_STORE": redis.url}, logging_replicas=3) as cluster:
        cluster.start_all()
        cluster.kill("logging2"); cluster.start("logging2")

Each process writes its JSON log lines to ``<log_dir>/<name>.log``.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import orjson

from resilience.testing.processes import HEALTH_POLL, free_port, is_healthy

#: The module each kind of service runs as (``python -m <module>``).
MODULES = {"facade": "facade", "logging": "logging_service", "messages": "messages"}


def replica_names(count: int, service: str = "logging") -> tuple[str, ...]:
    """The names of ``count`` replicas of ``service``: ``logging`` alone, else ``logging1``...
    (as in Procfile.cluster)."""
    if count < 1:
        raise ValueError(f"a cluster needs at least one {service} replica")
    return (service,) if count == 1 else tuple(f"{service}{i}" for i in range(1, count + 1))


class Cluster:
    """Starts, stops and kills the real service processes; ports are picked free.

    ``logging_url``/``messages_url`` can be pointed elsewhere (a fault proxy)
    before ``start("facade")``; ``env`` adds settings to every process.
    With ``logging_replicas`` above one, the logging replicas are named
    ``logging1``... (``replicas``), each on a port of its own, and the facade
    balances over all of them (``LOGGING_URLS``); they share a store only if
    ``env`` gives them one (``LOGGING_STORE``). Likewise ``messages_instances``
    (``messages1``..., ``MESSAGES_URLS``), which keep the stream's messages
    when ``env`` gives them ``NATS_URLS``.
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1", logging_replicas: int = 1,
                 messages_instances: int = 1) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.replicas = replica_names(logging_replicas)
        self.messages_instances = replica_names(messages_instances, "messages")
        self.services = (*self.replicas, *self.messages_instances, "facade")
        self.ports = {name: free_port(host) for name in self.services}
        self.logging_url = self.url(self.replicas[0])
        self.messages_url = self.url(self.messages_instances[0])
        self.extra_env = dict(env or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: Where in its log each running service's lines since its (re)start begin.
        self._log_starts: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    @property
    def facade_url(self) -> str:
        return self.url("facade")

    @property
    def logging_urls(self) -> tuple[str, ...]:
        """Where each logging replica listens, in the order of ``replicas``."""
        return tuple(self.url(name) for name in self.replicas)

    def env(self, name: str | None = None) -> dict[str, str]:
        """The environment service ``name`` gets (without a name: what every service gets)."""
        replicas = {"LOGGING_URLS": ",".join(self.logging_urls)} if len(self.replicas) > 1 else {}
        if len(self.messages_instances) > 1:
            replicas["MESSAGES_URLS"] = ",".join(map(self.url, self.messages_instances))
        messages = name if name in self.messages_instances else self.messages_instances[0]
        return {
            **os.environ,
            "HOST": self.host,
            "FACADE_PORT": str(self.ports["facade"]),
            "LOGGING_PORT": str(self.ports[name if name in self.replicas else self.replicas[0]]),
            "MESSAGES_PORT": str(self.ports[messages]),
            "LOGGING_URL": self.logging_url,
            **replicas,
            "MESSAGES_URL": self.messages_url,
            "LOG_FORMAT": "json",
            **self.extra_env,
        }

    def start(self, name: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """Start service ``name`` (appending to its log) and, with ``wait``, wait until it serves."""
        module = MODULES["logging" if name in self.replicas
                         else "messages" if name in self.messages_instances else name]
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self._log_starts[name] = log.tell()
            proc = subprocess.Popen([sys.executable, "-m", module], env=self.env(name),
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        if wait:
            self.wait_until_serving(name)
        return proc

    def start_all(self) -> None:
        for name in self.services:
            self.start(name, wait=False)
        for name in self.services:
            self.wait_until_serving(name)

    def wait_until_serving(self, name: str, timeout: float = 15.0) -> None:
        """Wait until the process started as ``name`` listens on its port and answers its health
        check; raise RuntimeError if it exits first, TimeoutError if it takes longer than ``timeout``.

        A port is picked free, but is only free when picked: another process on
        the machine may take it before the service binds it, and would then
        answer the health check in its place. So the service's own log must say
        that it is listening (a port taken fails with "cannot listen" instead).
        """
        proc, url = self.procs[name], self.url(name)
        deadline = time.monotonic() + timeout
        while not (self._says_listening(name) and is_healthy(url)):
            if proc.poll() is not None:
                lines = self.lines_since_start(name)
                said = lines[-1] if lines else {}
                raise RuntimeError(f"{name} exited with status {proc.returncode} before serving on "
                                   f"{url}: {said.get('event', '')} {said.get('error', '')}".rstrip())
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not serving on {url} within {timeout} s")
            time.sleep(HEALTH_POLL)

    def lines_since_start(self, name: str) -> list[dict[str, object]]:
        """The JSON log lines service ``name`` has written since it was last started."""
        with open(self.log_dir / f"{name}.log", "rb") as log:
            log.seek(self._log_starts.get(name, 0))
            return _json_lines(log.read())

    def _says_listening(self, name: str) -> bool:
        """Whether service ``name`` has logged, since it was last started, that it listens on its port."""
        return any(line.get("event") == "service listening" and line.get("port") == self.ports[name]
                   for line in self.lines_since_start(name))

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` to service ``name`` and wait for it to exit; return its exit status.

        If it has not exited within ``timeout``, it stays in ``procs`` (so it can be killed)
        and ``subprocess.TimeoutExpired`` is raised.
        """
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        status = proc.wait(timeout)
        del self.procs[name]
        return status

    def kill(self, name: str) -> int:
        """SIGKILL service ``name``: no chance to finish anything."""
        return self.stop(name, signal.SIGKILL)

    def stop_all(self) -> dict[str, dict[str, float]]:
        """SIGTERM every running service, the facade first, SIGKILL any still up after 10 s:
        each one's exit status and the seconds it took."""
        order = [name for name in reversed(self.services) if name in self.procs]
        return {name: stopped(functools.partial(self.stop, name), functools.partial(self.kill, name))
                for name in order}

    def log_lines(self, name: str) -> list[dict[str, object]]:
        """The JSON log lines service ``name`` has written so far (other lines are skipped)."""
        return _json_lines((self.log_dir / f"{name}.log").read_bytes())

    def raw_log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


def _json_lines(data: bytes) -> list[dict[str, object]]:
    """The lines of ``data`` that are JSON objects, parsed (a traceback's lines are skipped)."""
    lines = []
    for raw in data.splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def stopped(stop: Callable[[], int], kill: Callable[[], int]) -> dict[str, float]:
    """``stop()``, or ``kill()`` if it timed out: the exit status and the seconds it took."""
    began = time.monotonic()
    try:
        code = stop()
    except subprocess.TimeoutExpired:
        code = kill()
    return {"exit": code, "seconds": round(time.monotonic() - began, 2)}
