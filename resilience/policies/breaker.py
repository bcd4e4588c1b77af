"""A circuit breaker for coroutines that trips on a failure RATE, with pybreaker as its state machine.

Why a rate: a breaker that counts *consecutive* failures turns a lossy but
working link into an outage under concurrency. At full speed, runs of five
failures on a 10 % lossy link are routine (many calls end at once), so it
opens again and again although nine calls in ten succeed; at low traffic it
is wrong the other way (one request's own retries open it). resilience4j
opens on the failure share over a sliding window once the window holds a
minimum number of calls, and on a slow-call share; Polly v8 replaced its
consecutive-count breaker with ``FailureRatio`` over a ``SamplingDuration``
with a ``MinimumThroughput``. This breaker does the same (``BreakerRule``).

Why not ``pybreaker.CircuitBreaker.calling()`` around the await: pybreaker
has no asyncio support (``breaker.call(coro_fn)`` counts every call a
success), ``calling()`` has no neutral exit for a cancellation, it counts
consecutive failures only, its half-open state lets every concurrent caller
through and reopens on the first failed trial, and it keeps its own wall
clock (``opened_at``) that a late outcome could half-open behind our back.

So admission, the window and the rule live here, on one injected clock; the
state lives in pybreaker, driven through its public transitions (``open()``,
``half_open()``) and, for a successful trial, ``calling()``, whose
``success_threshold`` closes the breaker. Its listeners report every change.
pybreaker is never asked to decide anything on its own clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pybreaker

from resilience.errors import CircuitOpen, ExpectedError, Overloaded, is_refusal
from resilience.observability.logs import get_logger
from resilience.policies.window import Clock, SlidingWindow

log = get_logger("resilience.policies.breaker")

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
STATES = (CLOSED, OPEN, HALF_OPEN)
# Calls by outcome, as resilience4j counts them ("ignored": no outcome for the breaker).
OUTCOMES = ("successful", "failed", "ignored", "not_permitted")


@dataclass(frozen=True, slots=True)
class BreakerRule:
    """When a breaker opens, how long it stays open, and how it closes again.

    Closed, it opens when, over the last ``window`` seconds holding at least
    ``min_calls`` calls, failures reach ``failure_rate`` of the calls or calls
    slower than ``slow_call_duration`` reach ``slow_call_rate``. Over the
    newest ``fast_window`` seconds it opens when the same shares are reached
    beyond reasonable doubt: when even the lower bound of the share's 99.9 %
    Wilson score interval reaches the rate. So a crash under load trips it in
    about ``fast_window`` (ten failures in a row suffice; the long window alone
    would wait for its successes to age out), while the chance runs of a
    lossy link never do (at 30 % loss, 10 of 10 failed has odds of 6 in a million).
    The failures since the last success are judged by the same bound
    (``streak_verdict``). Only a failure is judged: a success, however slow,
    never opens it.

    Open for ``open_duration`` seconds, times the number of openings in a
    row, at most ``open_duration_max`` (Envoy's ejection time grows alike).
    Half-open, it admits up to ``trial_calls`` trials; it reopens once the
    failed ones reach ``failure_rate`` of ``trial_calls`` and closes once the
    rest have succeeded.
    """

    failure_rate: float = 0.5
    slow_call_rate: float = 0.8
    slow_call_duration: float = 0.5
    window: float = 10.0
    min_calls: int = 20
    fast_window: float = 1.0
    open_duration: float = 5.0
    open_duration_max: float = 60.0
    trial_calls: int = 3

    @property
    def trial_failures_to_reopen(self) -> int:
        """Failed trials that reopen a half-open breaker."""
        return max(1, math.ceil(self.failure_rate * self.trial_calls - 1e-9))

    @property
    def trial_successes_to_close(self) -> int:
        """Successful trials that close it: enough that the failures can no longer reach the rate."""
        return self.trial_calls - self.trial_failures_to_reopen + 1

    def verdict(self, calls: int, failures: int, slow: int) -> str | None:
        """Why these counts over the window open the breaker, or ``None`` if they do not."""
        if calls < self.min_calls:
            return None
        if failures >= self.failure_rate * calls:
            return f"{failures} of {calls} calls failed"
        if slow >= self.slow_call_rate * calls:
            return f"{slow} of {calls} calls took {self.slow_call_duration} s or more"
        return None

    def streak_verdict(self, failures_in_a_row: int) -> str | None:
        """Why the failures since the last success open the breaker, or ``None``.

        Successes from before a fault dilute both windows: a downstream gone slow
        fails a few tries per timeout, too few for the fast window and too few
        against the long window's earlier successes. The failures since the last
        success are a span of their own, judged by the same bound as the fast
        window: ten in a row at a rate of one half.
        """
        if wilson_lower_bound(failures_in_a_row, failures_in_a_row) >= self.failure_rate:
            return f"{failures_in_a_row} calls in a row failed"
        return None

    def fast_verdict(self, calls: int, failures: int, slow: int) -> str | None:
        """Why these counts over the newest seconds open the breaker, or ``None``."""
        if wilson_lower_bound(failures, calls) >= self.failure_rate:
            return f"{failures} of {calls} calls failed in the last {self.fast_window} s"
        if wilson_lower_bound(slow, calls) >= self.slow_call_rate:
            return (f"{slow} of {calls} calls took {self.slow_call_duration} s or more "
                    f"in the last {self.fast_window} s")
        return None


# z of a one-sided 99.9 % interval.
FAST_WINDOW_Z = 3.09


def wilson_lower_bound(hits: int, calls: int, z: float = FAST_WINDOW_Z) -> float:
    """The lower bound of the Wilson score interval of the share ``hits / calls`` (0 with no calls).

    (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), Wilson (1927); with
    every call a hit it is n / (n + z²). Unlike the bare share, it stays low
    for a few calls: it asks how large the share surely is, not what it looks like.
    """
    if calls <= 0:
        return 0.0
    n, p, z2 = calls, hits / calls, z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(max(0.0, p * (1 - p) / n + z2 / (4 * n * n)))
    return (centre - spread) / (1 + z2 / n)


class AsyncCircuitBreaker:
    """Guards the calls of one kind to one downstream ``service`` (``name`` says which).

    ``with breaker.guard(): await call()`` raises ``CircuitOpen`` before the
    block runs when the breaker refuses. ``ExpectedError`` (the caller's
    fault), ``Overloaded`` (refused before any network) and a refusal by the
    downstream (``is_refusal``) are no outcome, and so is a cancellation. A
    call admitted under one state has no say in the next: its outcome is
    ignored once the state has changed. With a ``probe``, an open breaker asks
    it every ``probe_interval`` (on ``sleep``) whether the downstream is
    healthy, and half-opens at the first yes.
    """

    def __init__(self, name: str, *, service: str | None = None, rule: BreakerRule | None = None,
                 clock: Clock = time.monotonic, probe: Callable[[], Awaitable[bool]] | None = None,
                 probe_interval: float = 0.5,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.name = name
        self.probe = probe
        self.probe_interval = probe_interval
        self._sleep = sleep
        self._probing: asyncio.Task[None] | None = None
        self.service = service or name
        self.rule = rule or BreakerRule()
        self.calls = dict.fromkeys(OUTCOMES, 0)
        self._clock = clock
        # Slices of half the fast window: the fast sum spans between a half and a whole of it.
        self._window = SlidingWindow(self.rule.window, self.rule.fast_window / 2, 3, clock)
        self._epoch = 0  # bumped by every transition
        self._open_until = 0.0
        self._openings_in_a_row = 0
        self._reason = ""
        self._trials_in_flight = 0
        self._trial_failures = 0
        self._failures_in_a_row = 0
        self._breaker = pybreaker.CircuitBreaker(
            # The rate rule opens it, never pybreaker's consecutive count (it is never fed).
            fail_max=sys.maxsize,
            reset_timeout=self.rule.open_duration,
            success_threshold=self.rule.trial_successes_to_close,
            listeners=[_TransitionListener(self)],
            name=name,
        )

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        return str(self._breaker.current_state)

    def failure_rate(self) -> float | None:
        """The failure share over the window, ``None`` while it holds no call."""
        calls, failures, _ = self._window.sums()
        return failures / calls if calls else None

    def retry_after(self) -> float:
        """Seconds until an open breaker admits trial calls (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def refusing(self) -> bool:
        """Whether the breaker refuses calls now (open, not yet due for trials)."""
        return self.state == OPEN and self._clock() < self._open_until

    async def aclose(self) -> None:
        """Stop the health probes, if any are running."""
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)

    async def _probe_while_open(self, probe: Callable[[], Awaitable[bool]], epoch: int) -> None:
        """Every ``probe_interval`` while this opening lasts, ask the downstream whether it is
        healthy (Envoy's active health checking); at the first yes, half-open: a downstream
        that is back is noticed within a probe, not after the open duration."""
        while True:
            await self._sleep(self.probe_interval)
            if epoch != self._epoch:
                return
            try:
                healthy = await probe()
            except Exception:
                healthy = False
            if epoch != self._epoch:
                return
            if healthy:
                self._reason = "a health probe succeeded"
                self._breaker.half_open()
                return

    def guard(self) -> _Guard:
        """Admit one call, or raise ``CircuitOpen``; on exit the guard records the outcome."""
        trial = self._admit()
        return _Guard(self, trial, self._epoch, self._clock())

    def _admit(self) -> bool:
        """Return whether this call is a half-open trial; raise CircuitOpen if refused."""
        state = self.state
        if state == CLOSED:
            return False
        if state == OPEN:
            if self.refusing():
                self.calls["not_permitted"] += 1
                raise CircuitOpen(self.service, "circuit breaker open", retry_after=self.retry_after())
            self._reason = "the open duration passed"
            self._breaker.half_open()
        decided = self._trial_failures + self._breaker.success_counter
        if self._trials_in_flight + decided >= self.rule.trial_calls:
            self.calls["not_permitted"] += 1
            raise CircuitOpen(self.service, "circuit breaker half-open, trial calls in flight",
                              retry_after=1.0)
        self._trials_in_flight += 1
        return True

    def _finish(self, guard: _Guard, exc: BaseException | None) -> None:
        """Account for one admitted call's outcome."""
        current = guard.epoch == self._epoch
        if guard.trial and current:
            self._trials_in_flight -= 1
        if exc is not None and not isinstance(exc, Exception):
            return  # CancelledError (or exit): no outcome, neither failure nor success
        if isinstance(exc, (ExpectedError, Overloaded)) or is_refusal(exc):
            self.calls["ignored"] += 1
            return
        failed = exc is not None
        self.calls["failed" if failed else "successful"] += 1
        if current:
            # A success never opens the breaker, however slow: a downstream that answers is up,
            # and the late replies of a backlog it drains are its recovery, not a fault (Polly
            # v8 breaks only when a failure is handled). Slow calls weigh when a failure comes.
            if guard.trial:
                self._trial_outcome(failed)
            else:
                slow = self._clock() - guard.started >= self.rule.slow_call_duration
                self._window.add(1, failed, slow)
                self._failures_in_a_row = self._failures_in_a_row + 1 if failed else 0
                if failed:
                    self._check_rate()

    def _check_rate(self) -> None:
        rule = self.rule
        calls, failures, slow = self._window.sums(rule.fast_window)
        reason = rule.fast_verdict(calls, failures, slow)
        if reason is None:
            calls, failures, slow = self._window.sums()
            reason = rule.verdict(calls, failures, slow)
        if reason is None:
            reason = rule.streak_verdict(self._failures_in_a_row)
        if reason is not None:
            self._trip(reason)

    def _trial_outcome(self, failed: bool) -> None:
        if not failed:
            with self._breaker.calling():  # pybreaker counts it toward success_threshold
                pass
            return
        self._trial_failures += 1
        if self._trial_failures >= self.rule.trial_failures_to_reopen:
            self._trip(f"{self._trial_failures} of {self.rule.trial_calls} trial calls failed")

    def _trip(self, reason: str) -> None:
        self._openings_in_a_row += 1
        duration = min(self.rule.open_duration * self._openings_in_a_row, self.rule.open_duration_max)
        self._open_until = self._clock() + duration
        self._reason = reason
        self._breaker.open()

    def _changed(self, old: str | None, new: str) -> None:
        """A transition: calls admitted before it lose their say; log it."""
        self._epoch += 1
        self._trials_in_flight = 0
        self._trial_failures = 0
        self._failures_in_a_row = 0
        self._window.clear()
        details: dict[str, Any] = {}
        if self._probing is not None and self._probing is not asyncio.current_task():
            self._probing.cancel()  # a probe speaks for the opening it started under only
        if new == OPEN:
            details = {"reason": self._reason,
                       "open_for": round(self._open_until - self._clock(), 3)}
            if self.probe is not None:
                # A fresh context: the probes are not the request that opened the breaker.
                self._probing = asyncio.get_running_loop().create_task(
                    self._probe_while_open(self.probe, self._epoch), context=contextvars.Context())
        elif new == HALF_OPEN:
            details = {"reason": self._reason or "the open duration passed"}
        elif new == CLOSED:
            self._openings_in_a_row = 0
        log.warning("circuit breaker state changed", breaker=self.name, downstream=self.service,
                    old_state=old, new_state=new, **details)


class _Guard:
    """One admitted call: on exit, hands its outcome to the breaker."""

    __slots__ = ("breaker", "epoch", "started", "trial")

    def __init__(self, breaker: AsyncCircuitBreaker, trial: bool, epoch: int, started: float) -> None:
        self.breaker = breaker
        self.trial = trial
        self.epoch = epoch
        self.started = started

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.breaker._finish(self, exc)


class _TransitionListener(pybreaker.CircuitBreakerListener):
    """Hands pybreaker's state changes to the adapter."""

    def __init__(self, owner: AsyncCircuitBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._owner._changed(getattr(old_state, "name", None), new_state.name)
