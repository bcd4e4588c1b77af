"""A real redis-server on a free port, in a data folder of its own, stopped by PID.

::

    with RedisServer(tmp_path, config=Path("redis.conf")) as server:
        server.start()
        redis.asyncio.from_url(server.url)   # redis://127.0.0.1:<port>/0
        server.kill(); server.start()        # SIGKILL, then the same port and folder again

It never uses Redis's default port 6379 unless told to, so it runs beside a
Redis the machine may have. ``redis-server`` must be on ``PATH`` (Debian:
``apt-get install redis-server``); without it ``start`` raises, it does not skip.
Its log is ``<data_dir>/redis.log``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from resilience.testing.processes import free_port, poll_until


class RedisServer:
    """Starts, stops and kills one redis-server process; the port stays across restarts."""

    def __init__(self, data_dir: Path, config: Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.host = host
        self.port = free_port(host) if port is None else port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def command(self) -> list[str]:
        """The redis-server command line: the config file, then this server's port and folder."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH: install it "
                                    "(Debian/Ubuntu: apt-get install redis-server)")
        config = [] if self.config is None else [str(self.config)]
        return [binary, *config, "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.data_dir)]

    def start(self, timeout: float = 15.0) -> None:
        """Start redis-server and wait until it answers PING (after loading its AOF)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            return self.is_ready()

        poll_until(ready, timeout, f"redis-server on port {self.port} answering PING")

    def is_ready(self) -> bool:
        """Whether it answers PING with PONG right now (while loading its AOF it answers LOADING)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` to the process and wait for it to exit; return its exit status."""
        proc = self.proc
        if proc is None:
            raise RuntimeError("redis-server is not running")
        if proc.poll() is None:
            proc.send_signal(sig)
        status = proc.wait(timeout)
        self.proc = None
        return status

    def kill(self) -> int:
        """SIGKILL: no chance to flush or save anything it has not written already."""
        return self.stop(signal.SIGKILL)

    def info(self, section: str) -> dict[str, Any]:
        """One section of ``INFO`` (``memory``, ``clients``, ``persistence``...), parsed."""
        with self.client() as client:
            return dict(client.info(section))

    def used_memory(self) -> int:
        """``INFO memory``'s ``used_memory``: bytes the server's allocator holds for data and itself."""
        return int(self.info("memory")["used_memory"])

    def flush(self) -> None:
        """Delete every key of every database: a clean server for the next test."""
        with self.client() as client:
            client.flushall()

    def client(self) -> redis.Redis:
        """A blocking client for the test's own thread (never on a service's event loop)."""
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill()
