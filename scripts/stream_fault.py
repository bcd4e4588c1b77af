"""``python -m scripts.stream_fault``: the course's fault test for the message queue, on real processes.

Three NATS servers, logging, two messages instances and the facade start on
free ports (``NATS_URLS`` set, as in Procfile.cluster). Then, as the course
asks: the messages instances (the consumers) are stopped; 100 messages are
POSTed, each acknowledged; the server leading the event stream is SIGKILLed;
the consumers start again. ``GET /facade`` must then list all 100, once each,
in logging's part and in the messages service's, and so must each instance.
It prints each step as it goes and exits 1 if anything is missing or doubled.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resilience.testing.nats_server import NatsCluster
from resilience.testing.processes import is_ready, poll_until
from scripts.cluster import Cluster

#: The stream the services publish to and consume from (``EVENTS_STREAM``'s default).
STREAM = "events"


def http(method: str, url: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One request with a JSON body; its status and JSON reply (an HTTP error is a status too)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


@dataclass(frozen=True)
class Outcome:
    """What the fault test saw: the texts acknowledged, what GET /facade and each instance list."""

    acknowledged: list[str]
    logs: list[str]
    messages: list[str]
    kept: dict[str, list[str]]
    killed: str

    def problems(self) -> list[str]:
        """What is missing or doubled, where (empty when every message is there once)."""
        found = []
        for where, texts in [("GET logs", self.logs), ("GET messages", self.messages),
                             *self.kept.items()]:
            missing = len(set(self.acknowledged) - set(texts))
            doubled = sum(n > 1 for n in Counter(texts).values())
            if missing or doubled:
                found.append(f"{where}: {missing} missing, {doubled} doubled")
        return found


def course_fault_test(nats: NatsCluster, cluster: Cluster, count: int = 100,
                      say: Callable[[str], None] = print) -> Outcome:
    """On a running system: stop the consumers, POST ``count`` messages, SIGKILL the stream's
    leader, start the consumers, and read everything back."""
    post = cluster.facade_url + "/facade"
    # A facade that has just started answers 503 until its event stream is connected: the first
    # message is sent again, under one Idempotency-Key, until it is acknowledged.
    texts = [f"msg{i}" for i in range(1, count + 1)]
    poll_until(lambda: http("POST", post, {"msg": texts[0]}, {"Idempotency-Key": "first"})[0] == 200,
               30, "the facade publishing")
    say(f"stopping the consumers: {', '.join(cluster.messages_instances)}")
    for name in cluster.messages_instances:
        cluster.stop(name)
    for text in texts[1:]:
        status, reply = http("POST", post, {"msg": text})
        if status != 200:
            raise RuntimeError(f"POST {text!r} answered {status}: {reply}")
    say(f"POSTed {count} messages, {count} acknowledged")
    leader = nats.stream_leader(STREAM)
    nats.kill(leader)
    say(f"SIGKILLed {leader}, the leader of stream {STREAM!r}")
    started = time.monotonic()
    for name in cluster.messages_instances:
        cluster.start(name)
    for url in map(cluster.url, cluster.messages_instances):
        poll_until(functools.partial(is_ready, url), 60, f"{url} ready")
    new_leader = nats.stream_leader(STREAM)
    say(f"started the consumers; both replayed the stream within {time.monotonic() - started:.1f} s "
        f"(new leader: {new_leader})")
    status, page = http("GET", post)
    if status != 200:
        raise RuntimeError(f"GET /facade answered {status}: {page}")
    kept = {name: http("POST", cluster.url(name) + "/rpc/messages", {})[1]["result"]["logs"]
            for name in cluster.messages_instances}
    return Outcome(acknowledged=texts, logs=page["logs"], messages=page.get("messages", []),
                   kept=kept, killed=leader)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.stream_fault",
                                     description="The course's fault test for the message queue.")
    parser.add_argument("--count", type=int, default=100, help="messages to POST (default: 100)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stream-fault-") as folder, \
            NatsCluster(Path(folder) / "nats") as nats:
        nats.start_all()
        with Cluster(Path(folder) / "logs", env={"NATS_URLS": nats.urls},
                     messages_instances=2) as cluster:
            cluster.start_all()
            print(f"started nats1..nats3, logging, messages1, messages2 and the facade "
                  f"at {cluster.facade_url}")
            outcome = course_fault_test(nats, cluster, args.count)
    print(f"GET /facade: {len(outcome.logs)} in logs, {len(outcome.messages)} in messages; "
          + ", ".join(f"{name} keeps {len(texts)}" for name, texts in outcome.kept.items()))
    problems = outcome.problems()
    print("\n".join(f"FAIL: {problem}" for problem in problems) if problems
          else f"PASS: all {args.count} acknowledged messages listed once each, everywhere")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
