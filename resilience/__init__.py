"""Shared by the three services: Nameko-style RPC over HTTP, the retry and
circuit-breaker policy, correlation IDs and log configuration."""

from .breaker import AsyncCircuitBreaker, BreakerRule
from .budget import RetryBudget
from .bulkhead import ConcurrencyLimit
from .errors import (
    CircuitOpen,
    Conflict,
    ExpectedError,
    InvalidArgument,
    MethodNotFound,
    Overloaded,
    RemoteError,
    ServiceUnavailable,
)
from .policy import CallPolicy, downstream_policies
from .proxy import RpcProxy
from .rpc import Config, Dependency, build_service, dispatch, rpc
from .server import rpc_app
from .settings import Settings, SettingsError

__all__ = [
    "AsyncCircuitBreaker",
    "BreakerRule",
    "CallPolicy",
    "CircuitOpen",
    "ConcurrencyLimit",
    "Config",
    "Conflict",
    "Dependency",
    "ExpectedError",
    "InvalidArgument",
    "MethodNotFound",
    "Overloaded",
    "RemoteError",
    "RetryBudget",
    "RpcProxy",
    "ServiceUnavailable",
    "Settings",
    "SettingsError",
    "build_service",
    "dispatch",
    "downstream_policies",
    "rpc",
    "rpc_app",
]
