"""The course's demo on Redis, on the real processes: msg1..msg10 over three replicas, two killed, all read.

``python -m scripts.cluster_demo`` starts redis-server (the shipped
``redis.conf``), three logging replicas on it, messages and the facade over
the replicas' ``LOGGING_URLS``, each as a process of its own on a free port
(not under honcho, which stops every process once one exits). It posts
msg1..msg10, prints which replica stored each (from the replicas' own
``message stored`` log lines, checked against the facade's access lines),
SIGKILLs two replicas and reads everything back through the facade (which
replica served the read: from the replicas' access lines, since the facade's
GET line does not name it).
Exit status 0 when all ten come back, in order.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resilience import CORRELATION_HEADER
from resilience.testing.processes import poll_until
from resilience.testing.redis_server import RedisServer
from scripts import REDIS_CONF
from scripts.cluster import Cluster

TEXTS = tuple(f"msg{i}" for i in range(1, 11))
#: The replicas the demo SIGKILLs once every message is stored.
KILLED = ("logging1", "logging3")


def request(method: str, url: str, correlation_id: str, body: Any = None) -> tuple[int, Any]:
    """One request to the facade, tagged with ``correlation_id``; its status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", CORRELATION_HEADER: correlation_id}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as reply:
        return reply.status, json.loads(reply.read())


@dataclass
class Demo:
    """The running cluster and what the facade and the replicas logged for each tagged request."""

    cluster: Cluster

    def replica_of(self, url: str) -> str:
        """The replica's name for its URL (as the facade's access line gives it)."""
        return next(name for name in self.cluster.replicas if self.cluster.url(name) == url)

    def access_line(self, cid: str) -> dict[str, object]:
        """The facade's access line for the request tagged ``cid`` (its correlation ID), once written."""
        def lines() -> list[dict[str, object]]:
            return [line for line in self.cluster.log_lines("facade")
                    if line.get("event") == "request handled" and line.get("correlation_id") == cid]
        poll_until(lambda: bool(lines()), 10, f"the facade's access line for {cid}")
        return lines()[0]

    def stored_by(self, uuid: str) -> list[str]:
        """The replicas whose log says they stored ``uuid``, once one does."""
        def names() -> list[str]:
            return [name for name in self.cluster.replicas for line in self.cluster.log_lines(name)
                    if line.get("event") == "message stored" and line.get("uuid") == uuid]
        poll_until(lambda: bool(names()), 10, f"a replica's log line for {uuid}")
        return names()

    def served_read(self, correlation_id: str) -> list[str]:
        """The replicas whose access lines say they answered a read tagged ``correlation_id``."""
        return [name for name in self.cluster.replicas for line in self.cluster.log_lines(name)
                if line.get("event") == "request handled" and line.get("path") == "/rpc/messages"
                and line.get("correlation_id") == correlation_id and line.get("status") == 200]

    def retries(self, correlation_id: str) -> list[str]:
        """Where the attempts the facade retried for the request tagged ``correlation_id`` failed."""
        return [self.replica_of(str(line["replica"])) for line in self.cluster.log_lines("facade")
                if line.get("event") == "retrying call" and line.get("correlation_id") == correlation_id]


def run(workdir: Path) -> bool:
    """The demo, printed as it goes; whether all ten messages were read back in order."""
    with RedisServer(workdir / "redis", config=REDIS_CONF) as redis:
        redis.start()
        with Cluster(workdir / "logs", env={"LOGGING_STORE": redis.url}, logging_replicas=3) as cluster:
            cluster.start_all()
            demo = Demo(cluster)
            print(f"redis-server   :{redis.port}  (redis.conf: AOF, appendfsync always)")
            for name in cluster.replicas:
                print(f"{name:<14} :{cluster.ports[name]}  LOGGING_STORE={redis.url}")
            print(f"{'messages':<14} :{cluster.ports['messages']}")
            print(f"{'facade':<14} :{cluster.ports['facade']}  LOGGING_URLS={','.join(cluster.logging_urls)}")
            print()
            for text in TEXTS:
                status, body = request("POST", cluster.facade_url + "/facade", f"demo-{text}", {"msg": text})
                line = demo.access_line(f"demo-{text}")
                replica = demo.replica_of(str(line["logging_replica"]))
                stored = demo.stored_by(body["uuid"])
                print(f"POST {{\"msg\": \"{text}\"}}{'':<{6 - len(text)}} -> {status}  uuid {body['uuid']}"
                      f"  stored by {', '.join(stored)}"
                      f"{'' if stored == [replica] else f' (facade says {replica})'}")
            print()
            for name in KILLED:
                status = cluster.kill(name)
                print(f"SIGKILL {name} (exit status {status})")
            status, body = request("GET", cluster.facade_url + "/facade", "demo-read")
            demo.access_line("demo-read")
            retried = demo.retries("demo-read")
            how = f"after failing on {', '.join(retried)}, retried" if retried else "at the first attempt"
            print(f"GET /facade -> {status}  served by {', '.join(demo.served_read('demo-read'))} {how}")
            print(json.dumps(body))
            return status == 200 and tuple(body["logs"]) == TEXTS


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cluster-demo-") as workdir:
        sys.exit(0 if run(Path(workdir)) else 1)


if __name__ == "__main__":
    main()
