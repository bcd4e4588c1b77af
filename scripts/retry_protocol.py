"""The retry protocol: a real session that shows retries, the breaker and exactly-once at work.

    python -m scripts.retry_protocol            # print the protocol
    python -m scripts.retry_protocol --write    # also write docs/retry-protocol.md

It starts the three real services on free ports, with logging behind a
fault proxy, and then, step by step: the assignment's session; logging
stopped (retries, 503 + Retry-After, the breaker opening, fast failures);
logging restarted (half-open trial, closed); replies dropped after logging
stored the message (retries land on the same UUID, stored once); a client
retrying with an Idempotency-Key. Every response and log line in the output
is what this run saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from resilience.testing.cluster import Cluster, wait_until_healthy
from resilience.testing.faults import FaultProxy

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "retry-protocol.md"
SETTINGS = {"BREAKER_OPEN_DURATION": "2", "RETRY_DEADLINE": "3"}


class Protocol:
    """Collects Markdown as the session runs."""

    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.parts: list[str] = []
        self.log_marks: dict[str, int] = {}

    def say(self, text: str) -> None:
        self.parts.append(text.strip() + "\n")
        print(text.strip() + "\n")

    def block(self, lines: Iterable[str], lang: str = "") -> None:
        self.say(f"```{lang}\n" + "\n".join(lines) + "\n```")

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """Send one request as curl would, record the command and the answer, return them."""
        hdrs = {"X-Correlation-ID": f"protocol-{len(self.parts):03d}", **(headers or {})}
        curl = [f"curl -i -X {method} http://localhost:5000{path}"]
        curl += [f"-H '{k}: {v}'" for k, v in hdrs.items()]
        if body is not None:
            curl += ["-H 'Content-Type: application/json'", f"-d '{json.dumps(body)}'"]
        started = time.perf_counter()
        async with self.session.request(method, self.cluster.facade_url + path, json=body,
                                        headers=hdrs) as resp:
            payload = await resp.json()
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
        elapsed = (time.perf_counter() - started) * 1000
        answer = [f"HTTP {status}" + (f"   Retry-After: {retry_after}" if retry_after else ""),
                  json.dumps(payload), f"(answered in {elapsed:.0f} ms)"]
        self.block([" ".join(curl), *answer], "console")
        return status, payload

    def new_log_lines(self, name: str, events: set[str] | None = None) -> list[str]:
        """Log lines ``name`` wrote since the last call, optionally only these events."""
        lines = self.cluster.log_lines(name)
        start = self.log_marks.get(name, 0)
        self.log_marks[name] = len(lines)
        picked = [line for line in lines[start:] if events is None or line.get("event") in events]
        return [json.dumps(line) for line in picked]

    def show_logs(self, name: str, events: set[str]) -> list[str]:
        lines = self.new_log_lines(name, events)
        if lines:
            self.say(f"`{name}` logged:")
            self.block(lines, "json")
        return lines


RETRY_EVENTS = {"retrying call", "circuit breaker state changed"}
STORE_EVENTS = {"message stored", "duplicate message ignored"}


async def run(workdir: Path) -> str:
    with Cluster(workdir, env=SETTINGS) as cluster:
        cluster.start("logging")
        cluster.start("messages")
        async with FaultProxy(cluster.url("logging"), seed=3) as proxy, \
                aiohttp.ClientSession() as session:
            cluster.logging_url = proxy.url
            await asyncio.to_thread(cluster.start, "facade")
            p = Protocol(cluster, session)
            for name in ("facade", "logging"):
                p.new_log_lines(name)
            await steps(p, cluster, proxy)
            return "\n".join(p.parts)


async def steps(p: Protocol, cluster: Cluster, proxy: FaultProxy) -> None:
    p.say("# Retry protocol\n\nA real session, written by `python -m scripts.retry_protocol "
          "--write`. The services ran on free ports (shown here as the assignment's 5000); "
          f"settings: `{' '.join(f'{k}={v}' for k, v in SETTINGS.items())}`, the rest default. "
          "logging sat behind a fault proxy so that replies could be dropped.")

    p.say("## 1. The assignment's session")
    for text in ("msg1", "msg2", "msg3"):
        await p.request("POST", "/facade", {"msg": text})
    await p.request("GET", "/facade")
    p.show_logs("logging", STORE_EVENTS)

    p.say("## 2. logging stopped: retries, then 503 with Retry-After")
    cluster.stop("logging")
    await proxy.refuse()
    p.say("The logging process was stopped (SIGTERM). The facade retries with full-jitter "
          "backoff; the fifth consecutive failure opens the breaker, which ends the retry at once.")
    await p.request("POST", "/facade", {"msg": "msg4"})
    p.show_logs("facade", RETRY_EVENTS)
    p.say("While the breaker is open, the facade fails fast without touching the network:")
    await p.request("POST", "/facade", {"msg": "msg5"})
    await p.request("GET", "/facade")

    p.say("## 3. logging restarted: the facade recovers by itself")
    await asyncio.to_thread(cluster.start, "logging")
    await proxy.resume()
    await asyncio.to_thread(wait_until_healthy, proxy.url)
    p.say("logging is back (with an empty store: it keeps messages in memory only). "
          f"After the breaker's reset timeout ({SETTINGS['BREAKER_OPEN_DURATION']} s) one "
          "trial call goes through; it succeeds and the breaker closes.")
    await asyncio.sleep(float(SETTINGS["BREAKER_OPEN_DURATION"]))
    await p.request("POST", "/facade", {"msg": "msg6"})
    p.show_logs("facade", RETRY_EVENTS)
    p.new_log_lines("logging")

    p.say("## 4. Replies lost after logging stored the message: no duplicates")
    p.say("The proxy now forwards every call to logging but drops half of the replies "
          "(the connection closes after logging has stored the message). The facade "
          "cannot tell a lost reply from a lost request, so it resends the same UUID; "
          "logging acknowledges the copy as a duplicate.")
    proxy.drop_rate = 0.5
    for text in ("msg7", "msg8", "msg9"):
        await p.request("POST", "/facade", {"msg": text})
    proxy.drop_rate = 0.0
    p.show_logs("facade", RETRY_EVENTS)
    p.show_logs("logging", STORE_EVENTS)
    p.say(f"The proxy dropped {proxy.counts.dropped} replies; every message is stored once:")
    await p.request("GET", "/facade")

    p.say("## 5. A client retrying its own POST: Idempotency-Key")
    key = {"Idempotency-Key": "protocol-order-1"}
    await p.request("POST", "/facade", {"msg": "pay 10"}, key)
    await p.request("POST", "/facade", {"msg": "pay 10"}, key)
    await p.request("POST", "/facade", {"msg": "pay 99"}, key)
    p.show_logs("logging", STORE_EVENTS)
    await p.request("GET", "/facade")

    p.say("## 6. Following one request through every service")
    p.say("Every line a request causes carries its `correlation_id`; with the services "
          "under honcho, `honcho start | grep -o '{.*}' | jq 'select(.correlation_id == "
          "\"protocol-001\")'` shows them. For the first POST above:")
    lines = [json.dumps(line) for name in ("facade", "logging")
             for line in cluster.log_lines(name) if line.get("correlation_id") == "protocol-001"]
    p.block(lines, "json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT.name}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        text = asyncio.run(run(Path(workdir)))
    if args.write:
        OUTPUT.parent.mkdir(exist_ok=True)
        OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
