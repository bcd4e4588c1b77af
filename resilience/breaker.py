"""A circuit breaker for coroutines, built on pybreaker.

pybreaker has no asyncio support: ``breaker.call(coro_fn)`` only creates the
coroutine, so every call counts as a success. Its ``calling()`` context
manager does account for what happens inside the ``with`` block, but it has
no neutral exit: a ``CancelledError`` leaving the block counts either as a
failure (and on the Nth one is replaced by ``CircuitBreakerError``, so the
task no longer looks cancelled) or, if excluded, as a success (which closes a
half-open breaker without any trial having succeeded). Its half-open state
also lets every concurrent caller through, not one trial.

``AsyncCircuitBreaker`` therefore keeps admission to itself (open with an
injectable clock, half-open with one trial at a time) and hands every real
outcome to pybreaker through ``calling()``, which keeps pybreaker's
counting, transitions and listeners. Cancellation is the one outcome
pybreaker never hears about; a success while closed with no failure counted
is skipped too, as it would change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pybreaker
import structlog

from .errors import CircuitOpen, ExpectedError, ServiceUnavailable

log = structlog.get_logger("resilience.breaker")

Clock = Callable[[], float]


class AsyncCircuitBreaker:
    """Guard calls to one downstream ``service``: open after ``fail_max`` consecutive failures.

    While open, ``guard()`` raises ``CircuitOpen`` without running the call;
    ``reset_timeout`` seconds after opening it admits one trial call
    (half-open), which closes the breaker on success and reopens it on failure.
    ``ExpectedError`` (the caller's fault) never counts as a failure.
    """

    def __init__(
        self,
        service: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.service = service
        self._clock = clock
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            exclude=[ExpectedError],
            listeners=[_TransitionListener(self)],
            name=service,
            # Keep the caller's own exception when the failure that trips the
            # breaker is recorded; the next call gets CircuitOpen.
            throw_new_error_on_trip=False,
        )

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        return str(self._breaker.current_state)

    @property
    def fail_counter(self) -> int:
        """Consecutive failures counted while closed."""
        return int(self._breaker.fail_counter)

    def retry_after(self) -> float:
        """Seconds until an open breaker admits its trial call (0 when not open)."""
        if self.state != pybreaker.STATE_OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._breaker.reset_timeout - self._clock())

    def guard(self) -> _Guard:
        """``with breaker.guard(): await call()``: run the call under the breaker.

        Raises ``CircuitOpen`` at once, before the block runs, when the breaker refuses.
        """
        return _Guard(self, self._admit())

    def _admit(self) -> bool:
        """Return whether this call is the half-open trial; raise CircuitOpen if refused."""
        state = self.state
        if state == pybreaker.STATE_CLOSED:
            return False
        if state == pybreaker.STATE_OPEN:
            wait = self.retry_after()
            if wait > 0:
                raise CircuitOpen(self.service, "circuit breaker open", retry_after=wait)
            self._breaker.half_open()
        if self._trial_in_flight:
            raise CircuitOpen(self.service, "circuit breaker half-open, trial call in flight",
                              retry_after=1.0)
        self._trial_in_flight = True
        return True

    def _record(self, exc: Exception | None) -> None:
        """Let pybreaker account for one outcome through its own ``calling()``."""
        try:
            with self._breaker.calling():
                if exc is not None:
                    raise exc
        except pybreaker.CircuitBreakerError:
            pass  # opened meanwhile by a concurrent call: this outcome changes nothing
        except Exception as raised:
            if raised is not exc:
                raise

    def _finish(self, trial: bool, exc: BaseException | None) -> None:
        """Account for one guarded call's outcome (see ``_Guard``)."""
        if trial:
            self._trial_in_flight = False
        if exc is None:
            # Closed with nothing counted: a success changes nothing, skip the bookkeeping.
            if trial or self._breaker.fail_counter:
                self._record(None)
            return
        if not isinstance(exc, Exception):
            return  # CancelledError (or exit): no outcome, neither failure nor success
        self._record(exc)
        if self.state == pybreaker.STATE_OPEN and not isinstance(exc, ExpectedError):
            # This failure tripped the breaker (or found it tripped): say so, so the
            # retry loop ends now instead of sleeping before a refused attempt.
            reason = exc.reason if isinstance(exc, ServiceUnavailable) else type(exc).__name__
            raise CircuitOpen(self.service, f"circuit breaker open after {reason}",
                              retry_after=self.retry_after()) from exc

    def _opened(self) -> None:
        self._opened_at = self._clock()


class _Guard:
    """One admitted call: on exit, hands its outcome to the breaker."""

    __slots__ = ("_breaker", "_trial")

    def __init__(self, breaker: AsyncCircuitBreaker, trial: bool) -> None:
        self._breaker = breaker
        self._trial = trial

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._breaker._finish(self._trial, exc)


class _TransitionListener(pybreaker.CircuitBreakerListener):
    """Logs every state change and stamps the opening time with the breaker's clock."""

    def __init__(self, owner: AsyncCircuitBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        opened = new_state.name == pybreaker.STATE_OPEN
        if opened:
            self._owner._opened()
        log.warning(
            "circuit breaker state changed",
            breaker=self._owner.service,
            old_state=getattr(old_state, "name", None),
            new_state=new_state.name,
            **({"reset_timeout": cb.reset_timeout} if opened else {}),
        )
