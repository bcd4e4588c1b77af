"""Settings read once from the environment into frozen, typed objects: the pieces a service's
settings are built from, and the rules every value obeys."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from resilience.policies.window import MAX_SLICES

T = TypeVar("T")
N = TypeVar("N", int, float)

class SettingsError(ValueError):
    """An environment variable holds a value the services cannot use."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """The range a numeric setting must lie in (inclusive), besides being finite.

    A numeric field without ``Bounds`` in its metadata must be positive: for a
    count, a size or a duration, zero or less means nothing. Fields where zero
    is meaningful (no backoff, no grace, "let the OS pick a port") say so with
    ``at_least`` or ``between``, so a new field is checked without being listed.
    """

    minimum: float = 0.0
    maximum: float = math.inf
    positive: bool = False

    def check(self, name: str, value: float) -> None:
        """Raise SettingsError naming ``name`` if ``value`` is NaN, infinite or out of range."""
        if not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, not {value}")
        if self.positive and math.isfinite(self.maximum) and not 0 < value <= self.maximum:
            raise SettingsError(f"{name} must be above 0 and at most {self.maximum:g}, not {value}")
        if self.positive and value <= 0:
            raise SettingsError(f"{name} must be positive, not {value}")
        if math.isfinite(self.maximum) and not self.minimum <= value <= self.maximum:
            raise SettingsError(f"{name} must be between {self.minimum:g} and {self.maximum:g}, "
                                f"not {value}")
        if value < self.minimum:
            raise SettingsError(f"{name} must be {self.minimum:g} or more, not {value}")


POSITIVE = Bounds(positive=True)
_BOUNDS = "bounds"


def at_least(default: N, minimum: float) -> N:
    """A numeric field whose value may be ``minimum`` or more (finite)."""
    return field(default=default, metadata={_BOUNDS: Bounds(minimum=minimum)})


def between(default: N, minimum: float, maximum: float) -> N:
    """A numeric field whose value must lie in ``[minimum, maximum]``."""
    return field(default=default, metadata={_BOUNDS: Bounds(minimum=minimum, maximum=maximum)})


def share(default: float) -> float:
    """A numeric field that is a share of something: above 0, at most 1."""
    return field(default=default, metadata={_BOUNDS: Bounds(maximum=1.0, positive=True)})


class EnvSettings:
    """Settings read once from the environment into a frozen dataclass: the mixin of every piece.

    Each field is read from the environment variable of the same name in upper
    case (``rpc_timeout`` from ``RPC_TIMEOUT``). A service's settings are a
    frozen dataclass that inherits the pieces it needs (``ServerSettings``,
    ``CallPolicySettings``) and adds its own fields; each piece's ``validate``
    checks its own fields and calls the next. Every number must be written in
    ASCII, finite and, unless its field says otherwise (``at_least``,
    ``between``), positive.
    """

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        """Build settings from ``environ`` (default: ``os.environ``); unset names keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, parser in _parsers(cls).items():
            variable = name.upper()
            if variable in env:
                values[name] = _parse(variable, env[variable], parser)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError when a value is out of its bounds or values make no sense together."""
        parsers = _parsers(type(self))
        for spec in fields(self):  # type: ignore[arg-type]
            if parsers[spec.name] in (int, float):
                spec.metadata.get(_BOUNDS, POSITIVE).check(spec.name.upper(), getattr(self, spec.name))


S = TypeVar("S", bound=EnvSettings)


@dataclass(frozen=True)
class ServerSettings(EnvSettings):
    """What every service built on ``resilience`` reads: where it binds, how it logs, the limits
    of the requests it accepts, the RPC secret and its shutdown grace."""

    host: str = "127.0.0.1"
    log_format: str = "auto"
    log_level: str = "info"
    # Request limits: a body this large at most, arrived this many seconds after its headers.
    max_body_bytes: int = 64 * 1024
    body_read_timeout: float = 5.0
    # Group commit: at most this many calls, in at most this many bytes, per batch request
    # (what an RPC client sends and an RPC server accepts).
    rpc_batch_max_calls: int = 64
    rpc_batch_max_bytes: int = 1 << 20
    # Shared by the services to authenticate RPC; empty: loopback only. Never in a repr.
    rpc_secret: str = field(default="", repr=False)
    # aiohttp waits this long for in-flight requests, then cancels their bodies and may
    # wait as long again: twice it stays under a supervisor's grace before SIGKILL (honcho's: 5 s).
    shutdown_timeout: float = at_least(2.0, 0)

    def validate(self) -> None:
        super().validate()
        if not _is_host(self.host):
            raise SettingsError(f"HOST must be an IP address or a host name, not {self.host!r} "
                                "(0.0.0.0 binds every IPv4 interface)")
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(f"LOG_FORMAT must be auto, json or console, not {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise SettingsError("LOG_LEVEL must be debug, info, warning, error or critical, "
                                f"not {self.log_level!r}")


@dataclass(frozen=True)
class CallPolicySettings(EnvSettings):
    """How a client calls its downstream services: retry, budget, breaker, hedging and limits
    (``resilience.policies.pipeline.downstream_policies`` builds the policies from them)."""

    # Retry: bounded attempts AND a bounded total time.
    retry_attempts: int = 5
    retry_deadline: float = 3.0
    retry_backoff_base: float = at_least(0.05, 0)
    retry_backoff_max: float = at_least(1.0, 0)
    rpc_timeout: float = 1.0
    # Retry budget per downstream: retries <= ratio x first attempts + floor/s, over the window.
    retry_budget_ratio: float = at_least(0.5, 0)
    retry_budget_floor: float = at_least(10.0, 0)
    retry_budget_window: float = 10.0
    # Circuit breaker, one per downstream and kind of call (reads, writes); see BreakerRule.
    breaker_failure_rate: float = share(0.5)
    breaker_slow_call_rate: float = share(0.8)
    breaker_slow_call_duration: float = 0.5
    breaker_window: float = 10.0
    breaker_min_calls: int = 20
    breaker_fast_window: float = 1.0
    breaker_open_duration: float = 5.0
    breaker_open_duration_max: float = 60.0
    breaker_trial_calls: int = 3
    # An open breaker probes the downstream's /ready at most this often; success half-opens it.
    breaker_probe_interval: float = 0.5
    # Hedging: a try later than this quantile of recent latencies (within the delay bounds) gets
    # a backup try beside it, at most HEDGE_MAX per attempt (0: none); hedges <= ratio x
    # attempts + floor/s over RETRY_BUDGET_WINDOW.
    hedge_quantile: float = share(0.95)
    hedge_delay_min: float = 0.005
    hedge_delay_max: float = 0.25
    hedge_max: int = at_least(2, 0)
    hedge_budget_ratio: float = at_least(0.3, 0)
    hedge_budget_floor: float = at_least(10.0, 0)
    # Requests in flight at once for one RPC method to one downstream: a request leaves beside
    # those in flight only while they are all late (past the hedge delay).
    rpc_lane_requests: int = 8
    # Requests in flight to one downstream (and calls queued for batches: this x
    # rpc_batch_max_calls); past it, 503 at once.
    max_calls_in_flight: int = 64

    def validate(self) -> None:
        super().validate()
        for short, long in (("breaker_fast_window", "breaker_window"),
                            ("breaker_open_duration", "breaker_open_duration_max"),
                            ("hedge_delay_min", "hedge_delay_max"),
                            ("hedge_delay_max", "rpc_timeout")):
            if getattr(self, short) > getattr(self, long):
                raise SettingsError(f"{short.upper()} must not exceed {long.upper()}")
        # Each breaker allocates its window at start, in slices of half the fast window
        # (breaker.py): refused here, a window too long for memory is one line, not a crash.
        if self.breaker_window / (self.breaker_fast_window / 2) > MAX_SLICES:
            longest = MAX_SLICES * self.breaker_fast_window / 2
            raise SettingsError(f"BREAKER_WINDOW must be at most {MAX_SLICES / 2:g} times "
                                f"BREAKER_FAST_WINDOW ({longest:g} s), not {self.breaker_window:g}: "
                                "the breaker counts calls in slices of half BREAKER_FAST_WINDOW and "
                                f"keeps at most {MAX_SLICES} of them")


_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class EventSettings(EnvSettings):
    """Where a service's events go (``resilience.rpc.events``): the NATS servers, the JetStream
    stream and how it keeps events."""

    # NATS servers, comma-separated (nats://host:port,...); empty: the service has no events.
    nats_urls: str = ""
    events_stream: str = "events"
    # Servers that hold a copy of every event; the stream acknowledges a publish once most have it.
    events_replicas: int = between(3, 1, 5)
    # An event published again with the same ID within this many seconds is absorbed by the stream.
    events_duplicate_window: float = 120.0
    # A delivered event not acknowledged within this many seconds is delivered again.
    events_ack_wait: float = 30.0

    def validate(self) -> None:
        super().validate()
        if not all(url.startswith(("nats://", "tls://")) for url in self.nats_servers()):
            raise SettingsError("NATS_URLS must be a comma-separated list of nats:// URLs")
        if not _STREAM_NAME.fullmatch(self.events_stream):
            raise SettingsError("EVENTS_STREAM must be 1 to 64 of A-Z, a-z, 0-9, _ and -")

    def nats_servers(self) -> tuple[str, ...]:
        """The NATS servers of ``NATS_URLS`` (none: events are off)."""
        return tuple(url.strip() for url in self.nats_urls.split(",") if url.strip())


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an http:// or https:// URL."""
    return value.startswith(("http://", "https://"))


def _parse(name: str, raw: str, parser: Callable[[str], T]) -> T:
    # int() and float() read digits of every script (Arabic-Indic, full-width...): a number
    # is written in ASCII here, as every other tool that reads the same environment expects.
    if parser in (int, float) and not raw.isascii():
        raise SettingsError(f"{name}={raw!r} is not a valid {parser.__name__}: "
                            "write numbers in ASCII digits")
    try:
        return parser(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {parser.__name__}") from None


def _parsers(cls: type[EnvSettings]) -> dict[str, Callable[[str], Any]]:
    """Each field's parser, by the field's type: a field added later is parsed and checked too."""
    return {name: hint if hint in (int, float) else str
            for name, hint in typing.get_type_hints(cls).items() if not name.startswith("_")}


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_host(host: str) -> bool:
    """An IP address, or a host name (RFC 1123: dot-separated labels, the last not all digits,
    so that ``999.1.1.1`` is refused here rather than looked up as a name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        return (len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
                and not labels[-1].isdigit())
    return True
