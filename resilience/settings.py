"""Settings: read once from the environment into one frozen, typed object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


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
    log_format: str = "auto"
    log_level: str = "info"
    # Retry (facade -> logging): bounded attempts AND a bounded total time.
    retry_attempts: int = 5
    retry_deadline: float = 3.0
    retry_backoff_base: float = 0.05
    retry_backoff_max: float = 1.0
    rpc_timeout: float = 1.0
    # Circuit breaker, one per downstream service.
    breaker_fail_max: int = 5
    breaker_reset_timeout: float = 5.0
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
            "retry_attempts", "retry_deadline", "rpc_timeout", "breaker_fail_max",
            "breaker_reset_timeout", "max_body_bytes", "max_msg_chars",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive, not {getattr(self, name)}")
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(f"LOG_FORMAT must be auto, json or console, not {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise SettingsError("LOG_LEVEL must be debug, info, warning, error or critical, "
                                f"not {self.log_level!r}")
        for name in ("logging_url", "messages_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise SettingsError(f"{name.upper()} must be an http:// or https:// URL")


def _parse(name: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {parser.__name__}") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    field.name: {"int": int, "float": float}.get(str(field.type), str) for field in fields(Settings)
}
