"""Errors that cross service boundaries, and how the client side classifies them.

Expected errors are the caller's fault (bad arguments, conflicts): they are
declared on an ``@rpc`` method, travel as data with a 4xx status, are
re-raised by the proxy as the same type, and are never retried nor counted
by a circuit breaker. Everything else a remote method raises arrives as
``RemoteError``.

A type crosses the wire only if it was registered with ``@remote_error``,
under its qualified path (``module.QualName``), as nameko's
``deserialize_to_instance`` does: two classes of the same name in different
modules never replace each other. So it lives in a module both sides import
(the server's interface), and the caller rebuilds it from its message alone.
"""

from __future__ import annotations

import inspect
from typing import ClassVar, TypeVar

E = TypeVar("E", bound="type[ExpectedError]")

_REGISTRY: dict[str, type[ExpectedError]] = {}


def error_path(cls: type[BaseException]) -> str:
    """The qualified name an error type is known by on the wire."""
    return f"{cls.__module__}.{cls.__qualname__}"


def remote_error(cls: E) -> E:
    """Register ``cls`` so a proxy re-raises it as its own type, as ``cls(message)``.

    Raises ``TypeError`` when its constructor cannot take the message alone
    (say what the caller needs in the message), or when another class holds
    its path already.
    """
    path = error_path(cls)
    if path in _REGISTRY and _REGISTRY[path] is not cls:
        raise TypeError(f"an error type is already registered as {path}")
    try:
        inspect.signature(cls).bind("message")
    except ValueError:  # no signature in Python: BaseException's own, which takes any arguments
        pass
    except TypeError:
        raise TypeError(f"{path} cannot be rebuilt from its message: a remote error's "
                        "constructor must take the message as its one argument") from None
    _REGISTRY[path] = cls
    return cls


def registered_error(path: str) -> type[ExpectedError] | None:
    """The error type registered under ``path``, if any."""
    return _REGISTRY.get(path)


class ExpectedError(Exception):
    """Base of errors a remote method may declare (register subclasses with ``@remote_error``)."""

    status: ClassVar[int] = 400


@remote_error
class InvalidArgument(ExpectedError):
    """The arguments of a call are missing, of the wrong type or out of range."""

    status = 400


@remote_error
class Conflict(ExpectedError):
    """The call contradicts state the service already holds."""

    status = 409


@remote_error
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


def is_refusal(exc: BaseException | None) -> bool:
    """Whether the downstream answered and refused the call (a 4xx: a signature, a method, an
    argument it does not take). It is up; the services disagree, which no waiting will mend."""
    return isinstance(exc, RemoteError) and 400 <= exc.status < 500


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


class CircuitOpen(ServiceUnavailable):
    """The circuit breaker for a service is open: the call was not attempted.

    ``retry_after`` is the time until the breaker lets a trial call through.
    """


class Overloaded(ServiceUnavailable):
    """Too many calls to a service are in flight already: refused at once, without any network.

    Not retried (it would only queue again) and no outcome for a breaker (the
    service did nothing wrong).
    """
