"""Chaos soak: the three real services under concurrent load while their network and processes fail.

::

    python -m scripts.soak                       # 60 s, 16 clients, seed 1
    python -m scripts.soak --duration 10 --json  # the report as JSON on stdout
    python -m scripts.soak --kill-logging        # also kill the logging service (loses its memory)

The facade's ``LOGGING_URL`` points at a fault proxy in front of the logging
service. For ``--duration`` seconds, ``--concurrency`` clients POST messages
with unique texts (and now and then GET a page) while the soak cycles the
logging network path through faults (connections refused, delays beyond
``RPC_TIMEOUT``, 503s, replies dropped after the write) and SIGKILLs and
restarts the messages service again and again. Then it clears the faults,
waits until nothing is in flight, reads the store back and checks it,
Jepsen-style, against what each client was told:

- lost: acknowledged (200 success) but not stored;
- duplicated: stored more than once;
- unexpected: stored but never sent;
- indeterminate: not acknowledged (503, timeout, ...) but stored anyway (allowed);
- failed and absent: not acknowledged and not stored (allowed).

The run passes when nothing is lost, duplicated or unexpected, and every
acknowledged UUID was logged as storing its message (exit status 0); it fails
otherwise (exit status 1). ``--kill-logging`` also kills the logging service,
whose in-memory store goes with it: what that loses is counted apart, and the
strict rule then applies to the messages sent after the last restart.

Every random choice comes from ``--seed``. Only loopback addresses are used,
every loop is bounded, and every process the soak started is stopped before
it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from resilience.settings import Settings, SettingsError
from resilience.testing.cluster import Cluster, wait_until_healthy
from resilience.testing.faults import FaultProxy

#: The states the logging network path cycles through, each held for a random while.
PHASES = ("clean", "refuse", "slow", "errors", "drops", "mixed")
#: Share of requests answered 503 in the ``errors`` phase, and of replies dropped in ``drops``.
#: Low enough that five failures in a row (which open the facade's breaker) stay rare under
#: load, so these phases exercise retries and deduplication; ``refuse`` and ``slow`` open it.
ERROR_RATE = 0.15
DROP_RATE = 0.1
#: The largest page GET /facade serves.
PAGE = 10_000
#: The longest a client pauses after a failure (it honours Retry-After up to this).
MAX_PAUSE = 1.0
#: The facade settings the report shows (they shape what the faults do).
SETTINGS_SHOWN = ("rpc_timeout", "retry_attempts", "retry_deadline", "breaker_fail_max",
                  "breaker_reset_timeout")
#: At most this many examples of each anomaly go into the report.
EXAMPLES = 5


@dataclass(frozen=True)
class SoakConfig:
    """What one soak run does. Every random choice derives from ``seed``."""

    duration: float = 60.0
    concurrency: int = 16
    seed: int = 1
    #: Client-side bound on each request (the facade's own retry deadline is 3 s).
    request_timeout: float = 5.0
    #: Share of client operations that are GET /facade (a small page) instead of a POST.
    get_ratio: float = 0.1
    #: Times a client resends a failed POST with the same Idempotency-Key (0: never).
    client_retries: int = 0
    #: The network phases to cycle through (a subset of ``PHASES``).
    phases: tuple[str, ...] = PHASES
    #: Each network phase lasts uniform(phase_min, phase_max) seconds.
    phase_min: float = 2.0
    phase_max: float = 5.0
    #: Mean seconds between SIGKILLs of the messages service.
    kill_messages_every: float = 5.0
    #: It stays down up to this many seconds before it is restarted.
    messages_downtime: float = 1.0
    #: Also SIGKILL and restart the logging service (its in-memory store goes with it).
    kill_logging: bool = False
    #: Mean seconds between SIGKILLs of the logging service, with ``kill_logging``.
    kill_logging_every: float = 20.0
    #: Extra environment for the services (``{"RPC_TIMEOUT": "0.5"}``), on top of their defaults.
    service_env: Mapping[str, str] = field(default_factory=dict)
    #: Where the services write their JSON logs (default: a new temporary directory).
    log_dir: Path | None = None
    #: Print a progress line to stderr every ``progress_every`` seconds (0: never).
    progress_every: float = 0.0

    def validate(self) -> None:
        """Raise ValueError for settings that cannot make a bounded, meaningful run."""
        if not 0 < self.duration <= 24 * 3600:
            raise ValueError("duration must be between 0 and 86400 seconds")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError("concurrency must be between 1 and 1024")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if not 0 <= self.get_ratio < 1:
            raise ValueError("get_ratio must be in [0, 1)")
        if not 0 <= self.client_retries <= 10:
            raise ValueError("client_retries must be between 0 and 10")
        if not self.phases or not set(self.phases) <= set(PHASES):
            raise ValueError(f"phases must be some of {', '.join(PHASES)}")
        if not 0 < self.phase_min <= self.phase_max:
            raise ValueError("need 0 < phase_min <= phase_max")
        if self.kill_messages_every <= 0 or self.messages_downtime <= 0:
            raise ValueError("kill_messages_every and messages_downtime must be positive")
        if self.kill_logging_every <= 0:
            raise ValueError("kill_logging_every must be positive")
        try:
            Settings.from_env(dict(self.service_env))
        except SettingsError as exc:
            raise ValueError(f"service environment: {exc}") from None


@dataclass
class PostOp:
    """One message a client sent: its unique text and what the client was finally told."""

    text: str
    started: float
    attempts: int = 0
    #: ``ok`` (200 success), ``http-<status>``, ``timeout``, ``connection-error`` or ``bad-reply``.
    outcome: str = "pending"
    uuid: str | None = None
    ended: float = 0.0

    @property
    def acknowledged(self) -> bool:
        """Whether the client was told the message is stored."""
        return self.outcome == "ok"


@dataclass
class GetStats:
    """What the clients' GET /facade calls got during the load."""

    attempted: int = 0
    ok: int = 0
    #: 200, but answered without the messages service (it was down).
    degraded: int = 0
    failed: int = 0
    #: Texts in a page that no client had sent: as bad as an unexpected message.
    unexpected_texts: int = 0


@dataclass
class LoadState:
    """Everything the clients did, shared by the client tasks (one event loop, no locks)."""

    ops: list[PostOp] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    gets: GetStats = field(default_factory=GetStats)
    acknowledged: int = 0

    def record(self, op: PostOp) -> None:
        """Remember ``op`` before it is sent, so a read that sees it never counts it as unexpected."""
        self.ops.append(op)
        self.sent.add(op.text)


@dataclass
class ChaosState:
    """What the chaos tasks did, and when the last logging restart completed."""

    started: float
    phases: Counter[str] = field(default_factory=Counter)
    phase: str = "clean"
    messages_kills: int = 0
    logging_kills: int = 0
    #: ``time.monotonic()`` when the last restarted logging service answered its health check.
    last_logging_restart: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def note(self, event: str) -> None:
        """Add ``event`` to the timeline, in seconds since the load started."""
        self.timeline.append((round(time.monotonic() - self.started, 2), event))


class SoakProxy(FaultProxy):
    """The fault proxy, plus what the soak needs of it.

    It counts the requests it receives per network phase and the forwards
    in flight (so the soak can wait until none is left before reading back),
    and counts the 502s it answers when the upstream cannot be reached (the
    logging service was killed), answering 502 itself, as a gateway would,
    should the upstream error get past the base proxy.
    """

    def __init__(self, upstream: str, *, seed: int) -> None:
        super().__init__(upstream, seed=seed)
        self.in_flight = 0
        self.upstream_failures = 0
        #: The network phase in force, and how many requests reached the proxy in each.
        self.phase = "clean"
        self.received: Counter[str] = Counter()
        #: Set whenever no forward is in flight.
        self.idle = asyncio.Event()
        self.idle.set()

    def clear(self) -> None:
        """No delay, no injected errors, no dropped replies (listening is ``resume()``'s job)."""
        self.delay = 0.0
        self.error_rate = 0.0
        self.drop_rate = 0.0

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.idle.clear()
        self.received[self.phase] += 1
        try:
            response = await super()._forward(request)
            if response.status == 502:
                self.upstream_failures += 1
            return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.upstream_failures += 1
            return web.json_response(
                {"error": {"type": "BadGateway", "message": f"upstream unreachable: {exc}", "args": []}},
                status=502)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()


@dataclass(frozen=True)
class Tally:
    """The Jepsen-style verdict on every POST, given what the store holds at the end."""

    attempted: int
    acknowledged: int
    lost: int
    duplicated: int
    unexpected: int
    indeterminate: int
    failed_and_absent: int
    #: Acknowledged before the last logging restart and gone with its memory (``--kill-logging``).
    lost_with_logging_restart: int
    #: POSTs held to the strict rule: all of them, or those sent after the last logging restart.
    checked: int
    #: Of those, how many were acknowledged: the messages the strict rule actually vouches for.
    checked_acknowledged: int
    #: Acknowledged UUIDs the logging service never logged as storing that message.
    uuid_mismatches: int
    examples: dict[str, list[str]]

    @property
    def failed(self) -> int:
        """POSTs not acknowledged, stored or not."""
        return self.attempted - self.acknowledged


def tally(ops: Sequence[PostOp], stored: Sequence[str], *, strict_since: float | None = None,
          stored_uuids: Mapping[str, set[str]] | None = None) -> Tally:
    """Judge every POST in ``ops`` against the final contents of the store, ``stored``.

    With ``strict_since`` (the time the last logging restart completed), only
    POSTs first sent at or after it must survive; an acknowledged message sent
    before it and absent now is counted as ``lost_with_logging_restart``.
    ``stored_uuids`` maps a UUID to the messages the logging service logged as
    stored under it; without it, UUIDs are not checked.
    """
    counts = Counter(stored)
    sent = {op.text for op in ops}
    examples: dict[str, list[str]] = {}

    def example(kind: str, text: str) -> None:
        found = examples.setdefault(kind, [])
        if len(found) < EXAMPLES:
            found.append(text)

    duplicated = [text for text, n in counts.items() if n > 1]
    unexpected = [text for text in counts if text not in sent]
    for text in duplicated:
        example("duplicated", text)
    for text in unexpected:
        example("unexpected", text)
    lost = lost_restart = indeterminate = failed_absent = checked = checked_acks = mismatches = 0
    for op in ops:
        strict = strict_since is None or op.started >= strict_since
        checked += strict
        checked_acks += strict and op.acknowledged
        present = counts.get(op.text, 0) > 0
        if op.acknowledged:
            if not present and strict:
                lost += 1
                example("lost", op.text)
            elif not present:
                lost_restart += 1
            if stored_uuids is not None and op.text not in stored_uuids.get(op.uuid or "", set()):
                mismatches += 1
                example("uuid_mismatch", f"{op.uuid} {op.text}")
        elif present:
            indeterminate += 1
        else:
            failed_absent += 1
    return Tally(
        attempted=len(ops), acknowledged=sum(op.acknowledged for op in ops), lost=lost,
        duplicated=len(duplicated), unexpected=len(unexpected), indeterminate=indeterminate,
        failed_and_absent=failed_absent, lost_with_logging_restart=lost_restart, checked=checked,
        checked_acknowledged=checked_acks,
        uuid_mismatches=mismatches, examples=examples,
    )


@dataclass
class Report:
    """Everything one soak run found; ``passed`` when ``problems`` is empty."""

    seed: int
    duration: float
    concurrency: int
    kill_logging: bool
    elapsed: float
    #: The facade's retry and breaker settings during the run.
    settings: dict[str, float]
    tally: Tally
    gets: GetStats
    #: The final client outcome of every POST, by kind.
    outcomes: dict[str, int]
    faults: dict[str, Any]
    evidence: dict[str, Any]
    readback: dict[str, Any]
    #: Exit status and seconds taken by each service on the final SIGTERM.
    shutdown: dict[str, dict[str, float]]
    log_dir: str
    #: When the load started (UTC, as in the services' logs); timeline times count from there.
    load_started_utc: str
    timeline: list[tuple[float, str]]
    problems: list[str]

    @property
    def passed(self) -> bool:
        """Whether the run found nothing wrong."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        data = asdict(self)
        data["tally"]["failed"] = self.tally.failed
        data["passed"] = self.passed
        return data

    def render(self) -> str:
        """A human-readable summary."""
        t, g, f, e = self.tally, self.gets, self.faults, self.evidence
        lines = [
            f"soak: {self.duration:g} s of load, {self.concurrency} clients, seed {self.seed}"
            f"{', logging kills on' if self.kill_logging else ''} ({self.elapsed:.1f} s in all)",
            "facade: " + ", ".join(f"{k.upper()}={v:g}" for k, v in self.settings.items()),
            "faults: network phases " + ", ".join(f"{k} x{v}" for k, v in sorted(f["phases"].items())),
            f"        proxy forwarded {f['proxy_forwarded']}, dropped replies {f['proxy_dropped']}, "
            f"503s injected {f['proxy_errored']}, upstream unreachable {f['proxy_upstream_failures']}",
            f"        messages SIGKILLed {f['messages_kills']}x, logging SIGKILLed {f['logging_kills']}x",
            "",
            f"POST attempted           {t.attempted:>8}",
            f"  acknowledged (200)     {t.acknowledged:>8}",
            f"  lost                   {t.lost:>8}",
            f"  duplicated             {t.duplicated:>8}",
            f"  unexpected             {t.unexpected:>8}",
            f"  indeterminate          {t.indeterminate:>8}   (not acknowledged, stored anyway)",
            f"  failed and absent      {t.failed_and_absent:>8}",
        ]
        if self.kill_logging:
            lines += [
                f"  lost with logging restart {t.lost_with_logging_restart:>5}   (acknowledged before the "
                "last logging restart: in-memory store, lost by design)",
                f"  held to the strict rule {t.checked:>7}   (sent after the last logging restart; "
                f"{t.checked_acknowledged} acknowledged)",
            ]
        lines += [
            f"  uuid mismatches        {t.uuid_mismatches:>8}",
            "  client outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            f"GET attempted            {g.attempted:>8}   (ok {g.ok}, degraded without messages "
            f"{g.degraded}, failed {g.failed}, unexpected texts {g.unexpected_texts})",
            f"stored at the end        {self.readback['stored']:>8}   (paged read through the facade "
            f"{self.readback['via_facade']})",
            "",
            f"evidence: facade retried logging calls {e['facade_retries']}x, breaker opened "
            f"{e['breaker_opened']}, logging ignored {e['duplicates_ignored']} duplicate deliveries",
            f"          error-level log lines {e['error_lines']}, tracebacks {e['tracebacks']}",
            "shutdown: " + ", ".join(f"{name} exit {s['exit']:g} in {s['seconds']:.1f} s"
                                     for name, s in self.shutdown.items()),
            f"logs: {self.log_dir}",
        ]
        for kind, found in self.tally.examples.items():
            lines.append(f"examples of {kind}: {', '.join(found)}")
        lines.append("")
        if self.passed:
            lines.append("PASS: nothing lost, duplicated or unexpected")
        else:
            lines += ["FAIL:", *(f"  - {problem}" for problem in self.problems)]
        return "\n".join(lines)


async def run_soak(config: SoakConfig) -> Report:
    """Run one soak as ``config`` says and return its report; all processes are stopped on return."""
    config.validate()
    started = time.monotonic()
    log_dir = config.log_dir if config.log_dir is not None else Path(tempfile.mkdtemp(prefix="soak-"))
    cluster = Cluster(log_dir, env=config.service_env)
    settings = Settings.from_env(cluster.env())
    proxy = SoakProxy(cluster.url("logging"), seed=config.seed)
    rng = random.Random(config.seed)
    state = LoadState()
    chaos = ChaosState(started=started)  # restarted when the load starts
    shutdown: dict[str, dict[str, float]] = {}
    load_started_utc = ""
    try:
        await asyncio.to_thread(_start_backends, cluster)
        await proxy.start()
        cluster.logging_url = proxy.url
        await asyncio.to_thread(cluster.start, "facade")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()
            lock = asyncio.Lock()
            slow_delay = settings.rpc_timeout * 1.5
            chaos.started = time.monotonic()
            load_started_utc = datetime.now(UTC).isoformat(timespec="milliseconds")
            async with asyncio.TaskGroup() as group:
                for index in range(config.concurrency):
                    group.create_task(_client(index, config, session, cluster.facade_url, state, stop))
                group.create_task(_network_chaos(proxy, random.Random(rng.random()), config, slow_delay,
                                                 stop, chaos))
                group.create_task(_messages_chaos(cluster, lock, random.Random(rng.random()), config,
                                                  stop, chaos))
                if config.kill_logging:
                    group.create_task(_logging_chaos(cluster, lock, random.Random(rng.random()), config,
                                                     stop, chaos))
                if config.progress_every > 0:
                    group.create_task(_progress(config, state, chaos, stop))
                await asyncio.sleep(config.duration)
                stop.set()
            chaos.note("load stopped, faults cleared")
            proxy.clear()
            await proxy.resume()
            await _quiesce(proxy, settle=settings.retry_deadline + slow_delay + 0.5)
            stored = await read_store(session, cluster.url("logging"), config.request_timeout)
            via_facade = await _read_via_facade(session, cluster.facade_url, config.request_timeout)
    finally:
        shutdown = await asyncio.to_thread(_stop_all, cluster)
        await proxy.refuse()  # cancels forwards still waiting out a delay, instead of awaiting them
        await proxy.stop()

    evidence, stored_uuids = _evidence(cluster)
    result = tally(state.ops, stored, strict_since=chaos.last_logging_restart, stored_uuids=stored_uuids)
    readback = {"stored": len(stored),
                "via_facade": "unavailable" if via_facade is None
                else "identical" if via_facade == stored else "DIFFERENT"}
    report = Report(
        seed=config.seed, duration=config.duration, concurrency=config.concurrency,
        kill_logging=config.kill_logging, elapsed=round(time.monotonic() - started, 2),
        settings={name: float(getattr(settings, name)) for name in SETTINGS_SHOWN}, tally=result,
        gets=state.gets, outcomes=dict(Counter(op.outcome for op in state.ops)),
        faults={"phases": dict(chaos.phases), "proxy_received": dict(proxy.received),
                "proxy_forwarded": proxy.counts.forwarded,
                "proxy_dropped": proxy.counts.dropped, "proxy_errored": proxy.counts.errored,
                "proxy_upstream_failures": proxy.upstream_failures,
                "messages_kills": chaos.messages_kills, "logging_kills": chaos.logging_kills},
        evidence=evidence, readback=readback, shutdown=shutdown, log_dir=str(log_dir),
        load_started_utc=load_started_utc, timeline=chaos.timeline, problems=[],
    )
    report.problems = _problems(report)
    return report


def _problems(report: Report) -> list[str]:
    """Why ``report`` fails (empty when it passes)."""
    t = report.tally
    problems = []
    if t.lost:
        problems.append(f"{t.lost} acknowledged messages are not stored")
    if t.duplicated:
        problems.append(f"{t.duplicated} messages are stored more than once")
    if t.unexpected:
        problems.append(f"{t.unexpected} stored messages were never sent")
    if t.uuid_mismatches:
        problems.append(f"{t.uuid_mismatches} acknowledged UUIDs were never logged as storing their message")
    if report.gets.unexpected_texts:
        problems.append(f"GET pages showed {report.gets.unexpected_texts} texts no client had sent")
    if report.readback["via_facade"] != "identical":
        problems.append(f"the paged read through the facade is {report.readback['via_facade']} "
                        "from the logging service's own read")
    if t.checked_acknowledged == 0:
        problems.append("no message held to the strict rule was acknowledged: the run checked nothing")
    return problems


def _start_backends(cluster: Cluster) -> None:
    """Start logging and messages together and wait until both answer."""
    for name in ("logging", "messages"):
        cluster.start(name, wait=False)
    for name in ("logging", "messages"):
        wait_until_healthy(cluster.url(name))


def _stop_all(cluster: Cluster) -> dict[str, dict[str, float]]:
    """SIGTERM every running service (facade first), SIGKILL any still up after 10 s; report each."""
    results: dict[str, dict[str, float]] = {}
    for name in ("facade", "messages", "logging"):
        proc = cluster.procs.pop(name, None)
        if proc is None:
            continue
        began = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        results[name] = {"exit": code, "seconds": round(time.monotonic() - began, 2)}
    return results


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; return whether it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _client(index: int, config: SoakConfig, session: aiohttp.ClientSession, facade_url: str,
                  state: LoadState, stop: asyncio.Event) -> None:
    """One client: POST unique messages (sometimes GET a page) until ``stop``."""
    rng = random.Random(f"{config.seed}:client:{index}")
    seq = 0
    while not stop.is_set():
        if rng.random() < config.get_ratio:
            pause = await _get_page(session, facade_url, rng, state, config.request_timeout)
        else:
            seq += 1
            op = PostOp(text=f"soak-{config.seed}-c{index:03d}-{seq:07d}", started=time.monotonic())
            state.record(op)
            pause = await post_message(session, facade_url, op, timeout=config.request_timeout,
                                       retries=config.client_retries, rng=rng)
            state.acknowledged += op.acknowledged
        if pause:
            await asyncio.sleep(rng.uniform(0.0, pause))


async def post_message(session: aiohttp.ClientSession, facade_url: str, op: PostOp, *, timeout: float,
                       retries: int = 0, rng: random.Random | None = None) -> float:
    """POST ``op.text`` to the facade, resending up to ``retries`` times on failure.

    Resends carry an ``Idempotency-Key`` derived from the text, so they land
    on the same UUID. Records the outcome on ``op`` and returns how long the
    caller may pause before its next request (0 after a success).
    """
    rng = rng or random.Random()
    headers = {"Idempotency-Key": op.text} if retries else {}
    pause = 0.0
    for attempt in range(retries + 1):
        op.attempts += 1
        op.outcome, op.uuid, pause = await _post_once(session, facade_url, op.text, headers, timeout)
        if op.acknowledged or attempt == retries:
            break
        await asyncio.sleep(rng.uniform(0.0, pause))
    op.ended = time.monotonic()
    return pause


async def _post_once(session: aiohttp.ClientSession, facade_url: str, text: str,
                     headers: Mapping[str, str], timeout: float) -> tuple[str, str | None, float]:
    """One POST: ``(outcome, uuid, pause)``."""
    try:
        async with session.post(f"{facade_url}/facade", json={"msg": text}, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            status = resp.status
            raw = await resp.read()
            retry_after = resp.headers.get("Retry-After")
    except TimeoutError:
        return "timeout", None, MAX_PAUSE
    except aiohttp.ClientError:
        return "connection-error", None, MAX_PAUSE / 2
    if status != 200:
        return f"http-{status}", None, _pause_for(retry_after)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "bad-reply", None, MAX_PAUSE / 2
    uuid = body.get("uuid") if isinstance(body, dict) else None
    if body.get("status") != "success" or not isinstance(uuid, str):
        return "bad-reply", None, MAX_PAUSE / 2
    return "ok", uuid, 0.0


def _pause_for(retry_after: str | None) -> float:
    """How long to back off after a failure: the server's Retry-After, capped, or a short default."""
    try:
        return min(MAX_PAUSE, float(retry_after)) if retry_after else 0.25
    except ValueError:
        return 0.25


async def _get_page(session: aiohttp.ClientSession, facade_url: str, rng: random.Random,
                    state: LoadState, timeout: float) -> float:
    """GET a small page at a random offset; check it holds only texts some client sent."""
    state.gets.attempted += 1
    offset = rng.randrange(state.acknowledged + 1)
    try:
        async with session.get(f"{facade_url}/facade", params={"offset": offset, "limit": 20},
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            status = resp.status
            raw = await resp.read()
            retry_after = resp.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError):
        state.gets.failed += 1
        return MAX_PAUSE / 2
    try:
        body = orjson.loads(raw) if status == 200 else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("logs"), list):
        state.gets.failed += 1
        return _pause_for(retry_after)
    state.gets.ok += 1
    state.gets.degraded += "messages" in body.get("unavailable", ())
    state.gets.unexpected_texts += sum(text not in state.sent for text in body["logs"])
    return 0.0


async def _apply_phase(proxy: SoakProxy, phase: str, slow_delay: float) -> None:
    """Put the logging network path into ``phase``."""
    proxy.clear()
    if phase == "refuse":
        await proxy.refuse()
        return
    await proxy.resume()
    if phase == "slow":
        proxy.delay = slow_delay  # every attempt outlives RPC_TIMEOUT; the write still lands later
    elif phase == "errors":
        proxy.error_rate = ERROR_RATE
    elif phase == "drops":
        proxy.drop_rate = DROP_RATE
    elif phase == "mixed":
        proxy.delay = slow_delay / 5
        proxy.error_rate = ERROR_RATE / 2
        proxy.drop_rate = DROP_RATE / 2


def phase_cycle(phases: Sequence[str], rng: random.Random) -> list[str]:
    """One cycle of network phases: every fault once, in random order, each followed by ``clean``
    (when ``clean`` is one of ``phases``) so that every fault is also seen to heal."""
    faults = [phase for phase in phases if phase != "clean"]
    cycle = rng.sample(faults, len(faults))
    if "clean" not in phases:
        return cycle
    return [step for fault in cycle for step in (fault, "clean")] or ["clean"]


async def _network_chaos(proxy: SoakProxy, rng: random.Random, config: SoakConfig, slow_delay: float,
                         stop: asyncio.Event, chaos: ChaosState) -> None:
    """Cycle the logging network path through the phases, in a new shuffled order each cycle."""
    while not stop.is_set():
        for phase in phase_cycle(config.phases, rng):
            await _apply_phase(proxy, phase, slow_delay)
            chaos.phase = proxy.phase = phase
            chaos.phases[phase] += 1
            chaos.note(f"network {phase}")
            if await _wait(stop, rng.uniform(config.phase_min, config.phase_max)):
                break
    proxy.clear()
    await proxy.resume()


async def _messages_chaos(cluster: Cluster, lock: asyncio.Lock, rng: random.Random, config: SoakConfig,
                          stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL the messages service every so often and restart it after a short while."""
    while not await _wait(stop, rng.uniform(0.5, 1.5) * config.kill_messages_every):
        async with lock:
            await asyncio.to_thread(cluster.kill, "messages")
        chaos.messages_kills += 1
        chaos.note("messages SIGKILL")
        await asyncio.sleep(rng.uniform(0.1, config.messages_downtime))
        async with lock:
            await asyncio.to_thread(cluster.start, "messages")
        chaos.note("messages restarted")


async def _logging_chaos(cluster: Cluster, lock: asyncio.Lock, rng: random.Random, config: SoakConfig,
                         stop: asyncio.Event, chaos: ChaosState) -> None:
    """SIGKILL and restart the logging service, never in the second half of the run.

    The second half is kept for messages that must all survive: those sent
    after the last restart completed.
    """
    last_kill = chaos.started + config.duration * 0.5
    while not await _wait(stop, rng.uniform(0.5, 1.5) * config.kill_logging_every):
        if time.monotonic() > last_kill:
            break
        async with lock:
            await asyncio.to_thread(cluster.kill, "logging")
            chaos.logging_kills += 1
            chaos.note("logging SIGKILL")
            await asyncio.to_thread(cluster.start, "logging")
        chaos.last_logging_restart = time.monotonic()
        chaos.note("logging restarted (empty store)")
    await stop.wait()


async def _progress(config: SoakConfig, state: LoadState, chaos: ChaosState, stop: asyncio.Event) -> None:
    """A progress line on stderr every ``config.progress_every`` seconds."""
    while not await _wait(stop, config.progress_every):
        elapsed = time.monotonic() - chaos.started
        print(f"[{elapsed:6.1f} s] POSTs {len(state.ops)}, acknowledged {state.acknowledged}, "
              f"GETs {state.gets.attempted}, network {chaos.phase}, messages kills {chaos.messages_kills}",
              file=sys.stderr, flush=True)


async def _quiesce(proxy: SoakProxy, settle: float, patience: float = 30.0) -> None:
    """Wait ``settle`` seconds (the facade's retry deadline, plus the proxy's delay), then until no
    forward is in flight, but no longer than ``patience`` seconds in all."""
    await asyncio.sleep(settle)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proxy.idle.wait(), max(0.0, patience - settle))


async def read_store(session: aiohttp.ClientSession, logging_url: str, timeout: float = 5.0,
                     patience: float = 20.0) -> list[str]:
    """Every stored message, from the logging service itself (POST /rpc/messages {})."""
    deadline = time.monotonic() + patience
    while True:
        try:
            async with session.post(f"{logging_url}/rpc/messages", json={},
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status == 200:
                    result = orjson.loads(await resp.read())["result"]
                    return [str(text) for text in result]
        except (TimeoutError, aiohttp.ClientError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not read the store from {logging_url} within {patience} s")
        await asyncio.sleep(0.25)


async def _read_via_facade(session: aiohttp.ClientSession, facade_url: str, timeout: float,
                           patience: float = 20.0) -> list[str] | None:
    """Every stored message through the public API, page by page; None if the facade would not answer."""
    deadline = time.monotonic() + patience
    texts: list[str] = []
    while True:
        page: list[str] | None = None
        try:
            async with session.get(f"{facade_url}/facade", params={"offset": len(texts), "limit": PAGE},
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status == 200:
                    page = [str(text) for text in orjson.loads(await resp.read())["logs"]]
        except (TimeoutError, aiohttp.ClientError):
            pass
        if page is not None:
            texts.extend(page)
            if len(page) < PAGE:
                return texts
            continue
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.25)  # the breaker may still be open after the last faults


def logged_uuids(lines: Sequence[Mapping[str, object]]) -> dict[str, set[str]]:
    """Every UUID the logging service logged as stored, with the message(s) stored under it.

    ``lines`` are its JSON log lines, across restarts; a UUID stored again by
    a restarted process (its first store was lost) lists the same message.
    """
    stored_uuids: dict[str, set[str]] = {}
    for line in lines:
        if line.get("event") == "message stored":
            stored_uuids.setdefault(str(line.get("uuid")), set()).add(str(line.get("msg")))
    return stored_uuids


def _evidence(cluster: Cluster) -> tuple[dict[str, Any], dict[str, set[str]]]:
    """What the services' logs show happened, and every (uuid -> messages) the logging service stored."""
    facade = cluster.log_lines("facade")
    logging_lines = cluster.log_lines("logging")
    stored_uuids = logged_uuids(logging_lines)
    breaker_opened: Counter[str] = Counter(
        str(line.get("breaker")) for line in facade
        if line.get("event") == "circuit breaker state changed" and line.get("new_state") == "open")
    evidence = {
        "facade_retries": sum(line.get("event") == "retrying call"
                              and line.get("downstream") == "logging" for line in facade),
        "breaker_opened": dict(breaker_opened),
        "degraded_gets_logged": sum(line.get("event") == "messages service unavailable, answering without it"
                                    for line in facade),
        "stored_logged": sum(line.get("event") == "message stored" for line in logging_lines),
        "duplicates_ignored": sum(line.get("event") == "duplicate message ignored" for line in logging_lines),
        "error_lines": {name: sum(line.get("level") in ("error", "critical")
                                  for line in cluster.log_lines(name))
                        for name in ("facade", "logging", "messages")},
        "tracebacks": {name: cluster.raw_log(name).count("Traceback")
                       for name in ("facade", "logging", "messages")},
    }
    return evidence, stored_uuids


def parse_args(argv: Sequence[str] | None = None) -> tuple[SoakConfig, bool]:
    """The soak's command line: ``(config, as_json)``."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak",
        description="Chaos soak: the three real services under load while their network and processes "
                    "fail; checks that no acknowledged message is lost, duplicated or invented.")
    defaults = SoakConfig()
    parser.add_argument("--duration", type=float, default=defaults.duration,
                        help="seconds of load and faults (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help="concurrent clients (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of every random choice (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout,
                        help="client bound on each request, seconds (default: %(default)s)")
    parser.add_argument("--get-ratio", type=float, default=defaults.get_ratio,
                        help="share of client operations that are GETs (default: %(default)s)")
    parser.add_argument("--client-retries", type=int, default=defaults.client_retries,
                        help="resend a failed POST this many times with an Idempotency-Key "
                             "(default: %(default)s)")
    parser.add_argument("--phases", default=",".join(defaults.phases),
                        help="network phases to cycle through, comma-separated (default: %(default)s)")
    parser.add_argument("--phase-min", type=float, default=defaults.phase_min,
                        help="shortest network fault phase, seconds (default: %(default)s)")
    parser.add_argument("--phase-max", type=float, default=defaults.phase_max,
                        help="longest network fault phase, seconds (default: %(default)s)")
    parser.add_argument("--kill-messages-every", type=float, default=defaults.kill_messages_every,
                        help="mean seconds between SIGKILLs of messages (default: %(default)s)")
    parser.add_argument("--messages-downtime", type=float, default=defaults.messages_downtime,
                        help="longest time messages stays down, seconds (default: %(default)s)")
    parser.add_argument("--kill-logging", action="store_true",
                        help="also SIGKILL and restart the logging service; what it loses is counted "
                             "apart as lost_with_logging_restart")
    parser.add_argument("--kill-logging-every", type=float, default=defaults.kill_logging_every,
                        help="mean seconds between SIGKILLs of logging (default: %(default)s)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the services, e.g. RPC_TIMEOUT=0.5 or BREAKER_RESET_TIMEOUT=2 "
                             "(repeatable; default: the services' own defaults)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where the services write their JSON logs (default: a new temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    service_env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env takes NAME=VALUE, not {item!r}")
        service_env[name.strip().upper()] = value
    config = SoakConfig(
        duration=args.duration, concurrency=args.concurrency, seed=args.seed,
        request_timeout=args.request_timeout, get_ratio=args.get_ratio, client_retries=args.client_retries,
        phases=tuple(name.strip() for name in args.phases.split(",") if name.strip()),
        phase_min=args.phase_min, phase_max=args.phase_max, kill_messages_every=args.kill_messages_every,
        messages_downtime=args.messages_downtime, kill_logging=args.kill_logging,
        kill_logging_every=args.kill_logging_every, service_env=service_env, log_dir=args.log_dir,
        progress_every=0.0 if args.quiet else 10.0,
    )
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak from the command line; 0 on a pass, 1 on a fail."""
    config, as_json = parse_args(argv)
    try:
        report = asyncio.run(run_soak(config))
    except KeyboardInterrupt:
        print("soak interrupted; every service it started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a restart that failed, a store that could not be read...
        causes = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        for cause in causes:
            print(f"soak aborted: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
