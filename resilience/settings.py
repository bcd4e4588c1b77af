"""Settings: read once from the environment into one frozen, typed object."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")

#: ``LOGGING_STORE`` for the in-memory store; anything else is a Redis URL of these schemes.
MEMORY_STORE = "memory"
REDIS_SCHEMES = ("redis", "rediss", "unix")


class SettingsError(ValueError):
    """An environment variable holds a value the services cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the three services read from the environment.

    Each field is read from the environment variable of the same name in
    upper case (``facade_port`` from ``FACADE_PORT``); see the README's
    configuration table. honcho's ``PORT`` is deliberately not read, so the
    assignment's ports hold under ``honcho start``.
    """

    host: str = "127.0.0.1"
    facade_port: int = 5000
    logging_port: int = 5001
    messages_port: int = 5002
    logging_url: str = "http://127.0.0.1:5001"
    messages_url: str = "http://127.0.0.1:5002"
    # Replicas of logging, comma-separated; when set, LOGGING_URL is not used.
    logging_urls: str = ""
    logging_store: str = MEMORY_STORE
    log_format: str = "auto"
    log_level: str = "info"
    # Retry (facade -> logging): bounded attempts AND a bounded total time.
    retry_attempts: int = 5
    retry_deadline: float = 3.0
    retry_backoff_base: float = 0.05
    retry_backoff_max: float = 1.0
    rpc_timeout: float = 1.0
    # Retry budget per downstream: retries <= ratio x first attempts + floor/s, over the window.
    retry_budget_ratio: float = 0.5
    retry_budget_floor: float = 10.0
    retry_budget_window: float = 10.0
    # Circuit breaker, one per downstream and kind of call (reads, writes); see BreakerRule.
    breaker_failure_rate: float = 0.5
    breaker_slow_call_rate: float = 0.8
    breaker_slow_call_duration: float = 0.5
    breaker_window: float = 10.0
    breaker_min_calls: int = 20
    breaker_fast_window: float = 1.0
    breaker_open_duration: float = 5.0
    breaker_open_duration_max: float = 60.0
    breaker_trial_calls: int = 3
    # Calls in flight to one downstream; past it, 503 at once.
    max_calls_in_flight: int = 64
    # Group commit: at most this many calls, in at most this many bytes, per batch request.
    rpc_batch_max_calls: int = 64
    rpc_batch_max_bytes: int = 1 << 20
    # Input limits.
    max_body_bytes: int = 64 * 1024
    max_msg_chars: int = 10_000
    # aiohttp waits this long for in-flight requests, then cancels their bodies and may
    # wait as long again: twice it stays under honcho's 5 s grace before SIGKILL.
    shutdown_timeout: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); unset names keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = field.name.upper()
            if name in env:
                values[field.name] = _parse(name, env[name], _PARSERS[field.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError when values are present but make no sense together."""
        for name in ("facade_port", "logging_port", "messages_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name.upper()} must be between 0 and 65535, not {port}")
        positive = (
            "retry_attempts", "retry_deadline", "rpc_timeout", "retry_budget_window",
            "breaker_slow_call_duration", "breaker_window", "breaker_min_calls", "breaker_fast_window",
            "breaker_open_duration", "breaker_open_duration_max",
            "breaker_trial_calls", "max_calls_in_flight", "rpc_batch_max_calls", "rpc_batch_max_bytes",
            "max_body_bytes", "max_msg_chars",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive, not {getattr(self, name)}")
        for name in ("retry_budget_ratio", "retry_budget_floor"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must be 0 or more, not {getattr(self, name)}")
        for name in ("breaker_failure_rate", "breaker_slow_call_rate"):
            if not 0 < getattr(self, name) <= 1:
                raise SettingsError(f"{name.upper()} must be a share above 0 and at most 1, "
                                    f"not {getattr(self, name)}")
        for short, long in (("breaker_fast_window", "breaker_window"),
                            ("breaker_open_duration", "breaker_open_duration_max")):
            if getattr(self, short) > getattr(self, long):
                raise SettingsError(f"{short.upper()} must not exceed {long.upper()}")
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(f"LOG_FORMAT must be auto, json or console, not {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise SettingsError("LOG_LEVEL must be debug, info, warning, error or critical, "
                                f"not {self.log_level!r}")
        for name in ("logging_url", "messages_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise SettingsError(f"{name.upper()} must be an http:// or https:// URL")
        replicas = self.logging_replicas()
        if not all(url.startswith(("http://", "https://")) for url in replicas):
            raise SettingsError("LOGGING_URLS must be a comma-separated list of http:// or https:// URLs")
        if len(set(replicas)) != len(replicas):
            raise SettingsError("LOGGING_URLS names a replica twice")
        if self.logging_store != MEMORY_STORE and not _is_redis_url(self.logging_store):
            # The value is not echoed: a Redis URL may hold a password.
            raise SettingsError(f"LOGGING_STORE must be {MEMORY_STORE} or a redis://host:port/db URL")

    def logging_replicas(self) -> tuple[str, ...]:
        """The logging replicas the facade balances over: ``LOGGING_URLS``, else ``LOGGING_URL``."""
        listed = tuple(url.strip().rstrip("/") for url in self.logging_urls.split(",") if url.strip())
        return listed or (self.logging_url.rstrip("/"),)


def _is_redis_url(value: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in REDIS_SCHEMES and bool(parts.hostname or parts.path)


def _parse(name: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {parser.__name__}") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    field.name: {"int": int, "float": float}.get(str(field.type), str) for field in fields(Settings)
}
