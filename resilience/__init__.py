"""Shared by the three services: Nameko-style RPC over HTTP, the retry and
circuit-breaker policy, correlation IDs and log configuration."""

from .breaker import AsyncCircuitBreaker
from .errors import (
    CircuitOpen,
    Conflict,
    ExpectedError,
    InvalidArgument,
    MethodNotFound,
    RemoteError,
    ServiceUnavailable,
)
from .policy import CallPolicy
from .proxy import RpcProxy
from .rpc import Config, Dependency, build_service, dispatch, rpc
from .server import rpc_app
from .settings import Settings, SettingsError

__all__ = [
    "AsyncCircuitBreaker",
    "CallPolicy",
    "CircuitOpen",
    "Config",
    "Conflict",
    "Dependency",
    "ExpectedError",
    "InvalidArgument",
    "MethodNotFound",
    "RemoteError",
    "RpcProxy",
    "ServiceUnavailable",
    "Settings",
    "SettingsError",
    "build_service",
    "dispatch",
    "rpc",
    "rpc_app",
]
