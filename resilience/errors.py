"""Errors that cross service boundaries, and how the client side classifies them.

Expected errors are the caller's fault (bad arguments, conflicts): they are
declared on an ``@rpc`` method, travel as data with a 4xx status, are
re-raised by the proxy as the same type, and are never retried nor counted
by a circuit breaker. Everything else a remote method raises arrives as
``RemoteError``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pybreaker


class ExpectedError(Exception):
    """Base of errors a remote method may declare; subclasses register by name."""

    status: ClassVar[int] = 400
    registry: ClassVar[dict[str, type[ExpectedError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ExpectedError.registry[cls.__name__] = cls


class InvalidArgument(ExpectedError):
    """The arguments of a call are missing, of the wrong type or out of range."""

    status = 400


class Conflict(ExpectedError):
    """The call contradicts state the service already holds."""

    status = 409


class MethodNotFound(ExpectedError):
    """The service has no RPC method of that name."""

    status = 404


class RemoteError(Exception):
    """A remote method failed with an error it did not declare."""

    def __init__(self, service: str, error_type: str, message: str, status: int) -> None:
        super().__init__(f"{service}: {error_type}: {message}")
        self.service = service
        self.error_type = error_type
        self.status = status


class ServiceUnavailable(Exception):
    """A downstream service could not be reached or answered 502/503/504.

    ``reason`` is short and safe to show a client ("ClientConnectorError",
    "HTTP 503"); ``detail`` (addresses, OS messages) is for logs only.
    ``retry_after`` is the server's Retry-After hint in seconds, when it gave one.
    """

    def __init__(self, service: str, reason: str, retry_after: float | None = None,
                 detail: str | None = None) -> None:
        super().__init__(f"{service} unavailable: {reason}" + (f" ({detail})" if detail else ""))
        self.service = service
        self.reason = reason
        self.retry_after = retry_after
        self.detail = detail


class CircuitOpen(ServiceUnavailable, pybreaker.CircuitBreakerError):
    """The circuit breaker for a service is open: the call was not attempted.

    ``retry_after`` is the time until the breaker lets a trial call through.
    """
