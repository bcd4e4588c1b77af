"""End to end: the real service processes, driven over HTTP as curl would drive them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facade.settings import FacadeSettings
from resilience.observability.correlation import CORRELATION_HEADER
from resilience.testing.processes import free_port, is_ready, poll_until, wait_until_healthy
from scripts import REDIS_CONF
from scripts.cluster import Cluster
from tests.cases import BAD_BODIES
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request, as curl would send it; returns status, JSON body and headers."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def post_msg(base: str, text: str, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, Any], dict[str, str]]:
    return http("POST", base + "/facade", json.dumps({"msg": text}).encode(),
                {"Content-Type": "application/json", **(headers or {})})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The three services, started once for the module's read-mostly tests."""
    with Cluster(tmp_path_factory.mktemp("logs")) as running:
        running.start_all()
        yield running


def test_assignment_curl_session(cluster: Cluster) -> None:
    """POST msg1, msg2, msg3 then GET: the assignment's answers, over real sockets."""
    before = http("GET", cluster.facade_url + "/facade")[1]["logs"]
    for text in ("msg1", "msg2", "msg3"):
        status, body, _ = post_msg(cluster.facade_url, text)
        assert status == 200
        assert body["status"] == "success"
        assert len(body["uuid"]) == 36
    status, body, _ = http("GET", cluster.facade_url + "/facade")
    assert status == 200
    assert body == {"logs": [*before, "msg1", "msg2", "msg3"], "message": "not implemented yet"}


def post_raw(base: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST ``body`` to /facade as it is, declared as JSON."""
    return http("POST", base + "/facade", body, {"Content-Type": "application/json"})


def send_oversized_header(port: int) -> bytes:
    """A request whose header is over aiohttp's 8 KiB limit; the first bytes of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /facade HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        return conn.recv(100)


@pytest.mark.parametrize(("body", "status", "says"), [b[1:] for b in BAD_BODIES],
                         ids=[b[0] for b in BAD_BODIES])
def test_bad_input_over_the_wire(cluster: Cluster, body: bytes, status: int, says: str) -> None:
    """Each bad body gets its clear JSON error from the real facade and stores nothing."""
    before = http("GET", cluster.facade_url + "/facade")[1]["logs"]
    got, payload, _ = post_raw(cluster.facade_url, body)
    assert (got, payload["status"]) == (status, "failure")
    assert says in payload["message"]
    assert http("GET", cluster.facade_url + "/facade")[1]["logs"] == before


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("PUT", "/facade", b"{}", 405),
    ("DELETE", "/facade", None, 405),
    ("GET", "/nowhere", None, 404),
    ("POST", "/facade", b'{"msg": "' + b"x" * 70_000 + b'"}', 413),
])
def test_method_path_and_size_errors_are_json(cluster: Cluster, method: str, path: str,
                                              body: bytes | None, status: int) -> None:
    """405, 404 and 413 come back as {"status": "failure", "message": ...} too."""
    got, payload, _ = http(method, cluster.facade_url + path, body,
                           {"Content-Type": "application/json"})
    assert got == status
    assert payload["status"] == "failure"


def test_malformed_http_is_refused_with_one_log_line(cluster: Cluster) -> None:
    """A header over aiohttp's 8 KiB limit gets a 400 and a one-line warning, not a traceback."""
    assert send_oversized_header(cluster.ports["facade"]).startswith(b"HTTP/1.0 400")
    # The line leaves at the end of the loop's turn: it can reach the file after the reply.
    poll_until(lambda: any(str(e["event"]).startswith("malformed HTTP request")
                           and e["level"] == "warning" for e in cluster.log_lines("facade")),
               10, "the one-line warning")


def test_undecodable_body_is_refused_in_our_words_with_one_log_line(cluster: Cluster) -> None:
    """A body declared gzip that is not: 400 saying so on one line, and one warning in the log."""
    got, payload, _ = http("POST", cluster.facade_url + "/facade", b'{"msg": "x"}',
                           {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert (got, payload["message"]) == (
        400, "request body cannot be read: it is not valid gzip (Content-Encoding)")
    poll_until(lambda: any(str(e["event"]).startswith("malformed HTTP request: Can not decode")
                           and e["level"] == "warning" for e in cluster.log_lines("facade")),
               10, "the one-line warning")
    assert "Traceback" not in cluster.raw_log("facade")


def test_no_tracebacks_in_any_service_log(cluster: Cluster) -> None:
    """After every bad body and a malformed request, no service has printed a traceback."""
    for _, body, status, _ in BAD_BODIES:
        assert post_raw(cluster.facade_url, body)[0] == status
    send_oversized_header(cluster.ports["facade"])
    for name in ("facade", "logging", "messages"):
        assert "Traceback" not in cluster.raw_log(name)
        assert '"exception"' not in cluster.raw_log(name)


def test_one_correlation_id_through_all_three_services(cluster: Cluster) -> None:
    """A client's X-Correlation-ID is echoed and is on the log lines of every service it touched."""
    cid = "e2e-trace-0001"
    status, body, headers = post_msg(cluster.facade_url, "traced", {"X-Correlation-ID": cid})
    assert status == 200
    assert headers["X-Correlation-ID"] == cid
    status, _, headers = http("GET", cluster.facade_url + "/facade", None,
                              {"X-Correlation-ID": cid})
    assert headers["X-Correlation-ID"] == cid

    stored = [e for e in cluster.log_lines("logging") if e.get("event") == "message stored"
              and e.get("uuid") == body["uuid"]]
    assert stored == [stored[0]]
    assert stored[0]["correlation_id"] == cid
    assert stored[0]["msg"] == "traced"
    accepted = [e for e in cluster.log_lines("facade") if e.get("correlation_id") == cid]
    assert any(e["event"] == "request handled" and e["path"] == "/facade" for e in accepted)
    for name in ("facade", "logging", "messages"):
        # An access line leaves at the end of its loop turn, which may come after the reply.
        poll_until(lambda name=name: any(e.get("correlation_id") == cid
                                         for e in cluster.log_lines(name)), 10, f"{name}'s lines")
        lines = [e for e in cluster.log_lines(name) if e.get("correlation_id") == cid]
        assert all({"timestamp", "level", "service", "event"} <= e.keys() for e in lines)
        assert {e["service"] for e in lines} == {name}


def test_a_traceparent_trace_id_is_on_every_services_log_lines(cluster: Cluster) -> None:
    """A W3C traceparent from the client: its trace-id is the correlation ID on every service's log
    lines for the request, and the client gets back what it sent."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "tracestate": "vendor=abc"}
    status, _, headers = post_msg(cluster.facade_url, "w3c", sent)
    assert status == 200
    assert (headers["traceparent"], headers["X-Correlation-ID"]) == (sent["traceparent"], trace_id)
    assert http("GET", cluster.facade_url + "/facade", None, sent)[0] == 200
    for name in ("facade", "logging", "messages"):
        poll_until(lambda name=name: any(e.get("correlation_id") == trace_id
                                         for e in cluster.log_lines(name)), 10,
                   f"{name}'s lines for trace {trace_id}")


def facade_retries(cluster: Cluster, correlation_id: str) -> int:
    """How many retries the facade logged for the request with ``correlation_id``."""
    return sum(e.get("correlation_id") == correlation_id and e["event"] == "retrying call"
               for e in cluster.log_lines("facade"))


async def test_logging_down_then_back(tmp_path: Path) -> None:
    """logging stopped: 503 + Retry-After within the deadline; from the second request on the
    breaker fails fast, retrying nothing; logging restarted: the facade recovers by itself.
    Shipped settings."""
    with Cluster(tmp_path) as cluster:
        cluster.start_all()
        assert post_msg(cluster.facade_url, "before")[0] == 200
        cluster.stop("logging")

        started = time.monotonic()
        status, body, headers = post_msg(cluster.facade_url, "during")
        first = time.monotonic() - started
        assert status == 503
        # One request's own retries do not open the breaker: the first 503 names the network error.
        assert body["message"].startswith("logging service unavailable (ClientConnectorError")
        assert int(headers["Retry-After"]) >= 1
        assert first < FacadeSettings().retry_deadline + 1.0

        ids = [f"during-{i}" for i in range(1, 6)]
        replies = [post_msg(cluster.facade_url, cid, {CORRELATION_HEADER: cid}) for cid in ids]
        assert {status for status, _, _ in replies} == {503}
        messages = [body["message"] for _, body, _ in replies]
        opened = next(i for i, message in enumerate(messages) if "circuit breaker open" in message)
        assert all("circuit breaker open" in message for message in messages[opened:])
        # Once it is open, a request is refused at once: never attempted, so never retried.
        assert [facade_retries(cluster, cid) for cid in ids[opened + 1:]] == [0] * (4 - opened)

        cluster.start("logging")
        await wait_for(lambda: post_msg(cluster.facade_url, "after")[0] == 200, 15)
        # logging's store started empty again; every acknowledged message after the restart is there once.
        logs = http("GET", cluster.facade_url + "/facade")[1]["logs"]
        assert logs == ["after"]
        events = [e["event"] for e in cluster.log_lines("facade")]
        assert "retrying call" in events
        assert "circuit breaker state changed" in events


async def test_facade_starts_before_logging_listens(tmp_path: Path) -> None:
    """Start order does not matter: the facade comes up alone and works once logging appears."""
    with Cluster(tmp_path) as cluster:
        cluster.start("facade")
        assert post_msg(cluster.facade_url, "early")[0] == 503
        cluster.start("logging")
        cluster.start("messages")
        await wait_for(lambda: post_msg(cluster.facade_url, "on time")[0] == 200, 15)


@contextlib.contextmanager
def honcho(cwd: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``honcho <args>`` run from ``cwd``, with this venv's entry points on PATH.

    If the test leaves it running, it gets Ctrl-C (so it stops its processes,
    which run in sessions of their own), then SIGKILL for its own group.
    """
    env = {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "honcho", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def ctrl_c(proc: subprocess.Popen[bytes]) -> str:
    """SIGINT to honcho, as Ctrl-C sends it; honcho's output once everything stopped (callers check
    that honcho never needed its SIGKILL, which it sends after its 5 s grace)."""
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=10)
    return output.decode()


def test_honcho_start_runs_the_procfile_and_stops_cleanly(tmp_path: Path) -> None:
    """`honcho start` brings all three up; on SIGINT (Ctrl-C) each service gets honcho's SIGTERM itself
    and exits 0 within the 5 s grace (honcho never needs its SIGKILL), without a traceback."""
    ports = Cluster(tmp_path)  # only to pick free ports and build the environment
    # The Procfile logs to the console unless told otherwise; the checks below read JSON.
    with honcho(REPO, {**ports.env(), "LOG_FORMAT": "json"}, "start") as proc:
        for name in ("logging", "messages", "facade"):
            wait_until_healthy(ports.url(name))
        assert post_msg(ports.facade_url, "via honcho")[0] == 200
        assert http("GET", ports.facade_url + "/facade")[1] == {
            "logs": ["via honcho"], "message": "not implemented yet"}
        text = ctrl_c(proc)
    assert "Traceback" not in text
    for name in ("logging", "messages", "facade"):
        assert f"{name}.1 started" in text
        assert f"{name}.1 stopped (rc=0)" in text  # not -15: the service, not a shell, got the signal
    assert text.count('"event":"service stopped"') == 3
    assert "SIGKILL" not in text  # what honcho sends once its grace is over


#: The ports Procfile.cluster names: the services', Redis's, and each NATS server's client, route
#: and monitoring ports.
CLUSTER_PORTS = re.compile(r"\b(5000|5001|5002|5003|5004|5005|6390|422[234]|622[234]|822[234])\b")
REPLICAS = ("logging1", "logging2", "logging3")
MESSAGES = ("messages1", "messages2")


def test_honcho_runs_procfile_cluster_on_redis_and_nats(tmp_path: Path) -> None:
    """`honcho -f Procfile.cluster start`: Redis and three NATS servers with their data folders,
    three logging replicas on one store, two messages instances each keeping every message of
    the stream, the facade over all of them; Ctrl-C stops everything cleanly."""
    procfile = (REPO / "Procfile.cluster").read_text()
    # The file's own ports, each replaced by a free one (tests never bind the ports a live system uses).
    ports = {port: free_port() for port in sorted(set(CLUSTER_PORTS.findall(procfile)))}
    (tmp_path / "Procfile.cluster").write_text(CLUSTER_PORTS.sub(lambda m: str(ports[m[0]]), procfile))
    shutil.copy(REDIS_CONF, tmp_path)
    shutil.copy(REPO / "nats.conf", tmp_path)
    url = {name: f"http://127.0.0.1:{ports[port]}" for name, port in [
        ("facade", "5000"), ("logging1", "5001"), ("messages1", "5002"),
        ("logging2", "5003"), ("logging3", "5004"), ("messages2", "5005")]}

    with honcho(tmp_path, {**os.environ, "LOG_FORMAT": "json"}, "-f", "Procfile.cluster", "start") as proc:
        for name in (*REPLICAS, *MESSAGES):
            poll_until(lambda name=name: is_ready(url[name]), 30, f"{name} ready")
        wait_until_healthy(url["facade"])
        texts = [f"msg{i}" for i in range(1, 11)]
        # The facade answers 503 until its event stream is connected: the first POST is retried
        # under one Idempotency-Key until it is acknowledged.
        poll_until(lambda: post_msg(url["facade"], texts[0], {"Idempotency-Key": "first"})[0] == 200,
                   30, "the first POST acknowledged")
        for text in texts[1:]:
            assert post_msg(url["facade"], text)[0] == 200
        for name in REPLICAS:  # one store: every replica reads all, in order, whoever stored each
            reply = http("POST", url[name] + "/rpc/messages", b"{}", {"Content-Type": "application/json"})
            assert reply[:2] == (200, {"result": {"logs": texts}})
        for name in MESSAGES:  # each instance keeps every message of the stream
            reply = http("POST", url[name] + "/rpc/messages", b"{}", {"Content-Type": "application/json"})
            assert reply[:2] == (200, {"result": {"logs": texts}})
        assert http("GET", url["facade"] + "/facade")[:2] == (200, {"logs": texts, "messages": texts})
        for port in ("8222", "8223", "8224"):  # nats.conf: each event on disk before its ack
            varz = http("GET", f"http://127.0.0.1:{ports[port]}/varz")[1]
            assert varz["jetstream"]["config"]["sync_always"] is True
        text = ctrl_c(proc)

    facade_lines = [json.loads(line[line.index("{"):]) for line in text.splitlines()
                    if " facade.1 " in line and "{" in line]
    served = [e["logging_replica"] for e in facade_lines
              if e["event"] == "request handled" and e["method"] == "POST" and e["status"] == 200]
    assert len(served) == len(texts)
    assert set(served) <= {url[name] for name in REPLICAS}  # the facade balances over LOGGING_URLS
    assert (tmp_path / ".data" / "redis" / "appendonlydir").is_dir()
    for name in ("nats1", "nats2", "nats3"):
        assert (tmp_path / ".data" / name / "jetstream").is_dir()
    assert "Traceback" not in text
    for name in ("redis", "nats1", "nats2", "nats3", *REPLICAS, *MESSAGES, "facade"):
        assert f"{name}.1 started" in text
    print(text)  # shown should an assertion below fail: what each process said, and when
    assert "SIGKILL" not in text
    assert text.count('"event":"service stopped"') == 6


def test_repo_root_does_not_shadow_the_standard_library(tmp_path: Path) -> None:
    """From the repo root, `import logging` is the standard library and `python -m venv` works."""
    out = subprocess.run([sys.executable, "-c", "import logging; print(logging.__file__)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not out.startswith(str(REPO))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")],
                   cwd=REPO, check=True)
