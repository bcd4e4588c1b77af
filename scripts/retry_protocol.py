"""The retry protocol: a real session that shows retries, the breaker and exactly-once at work.

    python -m scripts.retry_protocol            # print the protocol
    python -m scripts.retry_protocol --write    # also write docs/retry-protocol.md

It starts the three real services on free ports, with logging behind a
fault proxy, and then, step by step: the assignment's session; logging
stopped (retries, 503 + Retry-After, the breaker opening, fast failures);
logging restarted (half-open trials, closed); replies dropped after logging
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from facade.settings import FacadeSettings
from resilience import CORRELATION_HEADER
from resilience.policies.pipeline import breaker_rule
from resilience.testing.faults import FaultProxy
from resilience.testing.processes import wait_until_healthy
from scripts.cluster import Cluster

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "retry-protocol.md"
SETTINGS = {"BREAKER_OPEN_DURATION": "2", "RETRY_DEADLINE": "3"}


#: At most this many POSTs are sent to open the breaker before the run gives up.
MAX_POSTS_TO_OPEN = 20
#: Seconds to wait for a log line a step must show. A service writes its lines once per turn
#: of its event loop, so a line written as a reply leaves can reach the log after the reply.
LOG_WAIT = 5.0

LogLine = dict[str, object]


@dataclass(frozen=True)
class Exchange:
    """One request as curl would send it, and what came back."""

    curl: str
    status: int
    payload: dict[str, Any]
    retry_after: str | None
    elapsed_ms: float


class Protocol:
    """Collects Markdown as the session runs."""

    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.parts: list[str] = []
        self.log_marks: dict[str, int] = {}
        #: The correlation ID of every request sent, in order (``protocol-001`` is the first).
        self.correlation_ids: list[str] = []

    def say(self, text: str) -> None:
        self.parts.append(text.strip() + "\n")
        print(text.strip() + "\n")

    def block(self, lines: Iterable[str], lang: str = "") -> None:
        self.say(f"```{lang}\n" + "\n".join(lines) + "\n```")

    async def send(self, method: str, path: str, body: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> Exchange:
        """Send one request under the next correlation ID; record nothing."""
        self.correlation_ids.append(f"protocol-{len(self.correlation_ids) + 1:03d}")
        hdrs = {CORRELATION_HEADER: self.correlation_ids[-1], **(headers or {})}
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
        return Exchange(" ".join(curl), status, payload, retry_after,
                        (time.perf_counter() - started) * 1000)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """Send one request as curl would, record the command and the answer, return them."""
        sent = await self.send(method, path, body, headers)
        answer = [f"HTTP {sent.status}" + (f"   Retry-After: {sent.retry_after}" if sent.retry_after else ""),
                  json.dumps(sent.payload), f"(answered in {sent.elapsed_ms:.0f} ms)"]
        self.block([sent.curl, *answer], "console")
        return sent.status, sent.payload

    def new_log_lines(self, name: str, events: set[str] | None = None) -> list[str]:
        """Log lines ``name`` wrote since the last call, optionally only these events."""
        lines = self.cluster.log_lines(name)
        start = self.log_marks.get(name, 0)
        self.log_marks[name] = len(lines)
        picked = [line for line in lines[start:] if events is None or line.get("event") in events]
        return [json.dumps(line) for line in picked]

    async def wait_for_line(self, name: str, wanted: Callable[[LogLine], bool], what: str) -> None:
        """Wait until ``name`` has logged, since the lines last taken, a line ``wanted`` accepts."""
        deadline = time.monotonic() + LOG_WAIT
        start = self.log_marks.get(name, 0)
        while not any(wanted(line) for line in self.cluster.log_lines(name)[start:]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} logged no {what} within {LOG_WAIT:g} s")
            await asyncio.sleep(0.05)

    def show_logs(self, name: str, events: set[str]) -> list[str]:
        lines = self.new_log_lines(name, events)
        if lines:
            self.say(f"`{name}` logged:")
            self.block(lines, "json")
        return lines


BREAKER_EVENTS = {"circuit breaker state changed"}
RETRY_EVENTS = {"retrying call", *BREAKER_EVENTS}
STORE_EVENTS = {"message stored", "duplicate message ignored"}


def breaker_became(state: str) -> Callable[[LogLine], bool]:
    """Whether a log line says a breaker changed to ``state``."""
    return lambda line: line.get("event") in BREAKER_EVENTS and line.get("new_state") == state


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

    rule = breaker_rule(FacadeSettings.from_env(SETTINGS))
    p.say("## 2. logging stopped: retries, then 503 with Retry-After")
    cluster.stop("logging")
    await proxy.refuse()
    p.say("The logging process was stopped (SIGTERM). The facade retries the call with "
          "full-jitter backoff until its attempts or its deadline are spent, then answers 503:")
    await p.request("POST", "/facade", {"msg": "msg4"})
    p.show_logs("facade", RETRY_EVENTS)
    p.say(f"The breaker on writes to logging opens once its last {rule.window:g} s hold at least "
          f"{rule.min_calls} calls and {rule.failure_rate:.0%} of them failed, or once its newest "
          f"{rule.fast_window:g} s show {rule.failure_rate:.0%} failed beyond reasonable doubt (ten or more "
          "failures in a row, as here, where the POSTs follow each other at once). Until then "
          "each POST fails the same way after its retries; the one during which it opens is cut short:")
    tried = []
    for n in range(MAX_POSTS_TO_OPEN):
        sent = await p.send("POST", "/facade", {"msg": f"down-{n + 1}"})
        tried.append(f"{p.correlation_ids[-1]}: POST down-{n + 1} -> HTTP {sent.status} in "
                     f"{sent.elapsed_ms:.0f} ms: {sent.payload['message']}")
        if "circuit breaker open" in sent.payload["message"]:
            break
    else:
        raise RuntimeError(f"the breaker did not open within {MAX_POSTS_TO_OPEN} POSTs")
    p.block(tried, "text")
    await p.wait_for_line("facade", breaker_became("open"), "breaker opening")
    p.show_logs("facade", BREAKER_EVENTS)
    p.say("While the breaker is open, a POST fails fast without touching the network:")
    await p.request("POST", "/facade", {"msg": "msg5"})
    p.new_log_lines("facade")

    p.say("## 3. logging restarted: the facade recovers by itself")
    await asyncio.to_thread(cluster.start, "logging")
    await proxy.resume()
    await asyncio.to_thread(wait_until_healthy, proxy.url)
    p.say("logging is back (with an empty store: it keeps messages in memory only). "
          f"After the breaker's open duration ({rule.open_duration:g} s) it turns half-open and "
          f"lets up to {rule.trial_calls} trial calls through; once they have succeeded it closes.")
    await asyncio.sleep(rule.open_duration)
    for text in ("msg6", "msg7", "msg8"):
        await p.request("POST", "/facade", {"msg": text})
    await p.wait_for_line("facade", breaker_became("closed"), "breaker closing")
    p.show_logs("facade", RETRY_EVENTS)
    p.new_log_lines("logging")

    p.say("## 4. Replies lost after logging stored the message: no duplicates")
    p.say("The proxy now forwards every call to logging but drops half of the replies "
          "(the connection closes after logging has stored the message). The facade "
          "cannot tell a lost reply from a lost request, so it resends the same UUID; "
          "logging acknowledges the copy as a duplicate.")
    proxy.drop_rate = 0.5
    for text in ("msg9", "msg10", "msg11"):
        await p.request("POST", "/facade", {"msg": text})
    proxy.drop_rate = 0.0
    p.show_logs("facade", RETRY_EVENTS)
    p.show_logs("logging", STORE_EVENTS)
    dropped = proxy.counts.dropped
    if not dropped:
        raise RuntimeError("the proxy dropped no reply: section 4 would show nothing")
    p.say(f"The proxy dropped {dropped} {'reply' if dropped == 1 else 'replies'}; "
          "every message is stored once:")
    await p.request("GET", "/facade")

    p.say("## 5. A client retrying its own POST: Idempotency-Key")
    key = {"Idempotency-Key": "protocol-order-1"}
    await p.request("POST", "/facade", {"msg": "pay 10"}, key)
    await p.request("POST", "/facade", {"msg": "pay 10"}, key)
    await p.request("POST", "/facade", {"msg": "pay 99"}, key)
    p.show_logs("logging", STORE_EVENTS)
    await p.request("GET", "/facade")

    p.say("## 6. Following one request through every service")
    first_post = p.correlation_ids[0]
    traced = [line for name in ("facade", "logging") for line in cluster.log_lines(name)
              if line.get("correlation_id") == first_post]
    lines = [json.dumps(line) for line in sorted(traced, key=lambda line: str(line["timestamp"]))]
    if not lines:
        raise RuntimeError(f"no service logged a line with correlation_id {first_post}")
    p.say("Every line a request causes carries its `correlation_id`. With the services "
          "under honcho, [the jq recipe](observability.md#reading-logs-with-jq) shows them "
          "(`--no-prefix` leaves just the JSON, `fromjson?` skips honcho's own lines):")
    p.block(["LOG_FORMAT=json honcho start --no-prefix | tee run.log",
             f"jq -cR 'fromjson? | select(.correlation_id == \"{first_post}\")' run.log"], "sh")
    p.say(f"For the first POST above (`{first_post}`):")
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
