"""A small library for resilient aiohttp services: Nameko-style RPC over HTTP, call policies
(retry, circuit breaker, budgets, hedging, limits), observability and the shared HTTP runtime.

Its rooms, one per job:

- ``resilience.rpc``: service classes, ``@rpc``, dependencies and ``Config``, the server,
  the client proxy with group commit, request signing, and events (``EventDispatcher``,
  ``@event_handler``) over NATS JetStream;
- ``resilience.policies``: retry strategies, the breaker and its window, the retry budget,
  hedging, the concurrency limit, the balancer, and the pipeline that composes them;
- ``resilience.observability``: structlog configuration, correlation and trace context, the
  access log, Prometheus metrics;
- ``resilience.runtime``: bodies read in time, JSON, bounded replies, loop lag, the runner;
- ``resilience.settings``: settings pieces read from the environment;
- ``resilience.testing``: helpers to test services built on it.

The names below are its public API.
"""

from resilience.errors import (
    CircuitOpen,
    Conflict,
    ExpectedError,
    InvalidArgument,
    MethodNotFound,
    Overloaded,
    RemoteError,
    ServiceUnavailable,
    is_refusal,
    remote_error,
)
from resilience.observability.access import access_log_middleware
from resilience.observability.correlation import (
    CORRELATION_HEADER,
    TRACEPARENT,
    TRACESTATE,
    VALID_CORRELATION_ID,
    correlation_middleware,
)
from resilience.observability.logs import configure_logging, get_logger
from resilience.observability.metrics import CountsCollector, PolicyCollector, ValueCollector, setup_metrics
from resilience.policies.balancer import Balancer, Target
from resilience.policies.breaker import AsyncCircuitBreaker, BreakerRule
from resilience.policies.budget import RetryBudget
from resilience.policies.hedging import Hedging, LatencyTracker
from resilience.policies.limit import ConcurrencyLimit
from resilience.policies.pipeline import CallPolicy, downstream_policies
from resilience.policies.window import Clock
from resilience.rpc.batching import Coalescer, Pending
from resilience.rpc.events import (
    BROADCAST,
    SERVICE_POOL,
    EventBus,
    EventConsumer,
    EventDispatcher,
    event_handler,
    event_handlers,
)
from resilience.rpc.proxy import RpcProxy
from resilience.rpc.server import rpc_app
from resilience.rpc.service import Config, Dependency, build_service, dispatch, rpc
from resilience.rpc.signing import derived_key, signer_for
from resilience.rpc.transport import readiness_probe
from resilience.runtime.lag import LoopLag
from resilience.runtime.runner import run_main
from resilience.runtime.web import (
    CLOSE_ON_UNREAD_BODY,
    BadRequest,
    Handler,
    body_deadline,
    json_response,
    read_json,
    reply_budget,
    retry_after_header,
)
from resilience.settings import (
    CallPolicySettings,
    EnvSettings,
    EventSettings,
    ServerSettings,
    SettingsError,
    at_least,
    between,
    is_http_url,
    share,
)

__all__ = [
    "BROADCAST",
    "CLOSE_ON_UNREAD_BODY",
    "CORRELATION_HEADER",
    "SERVICE_POOL",
    "TRACEPARENT",
    "TRACESTATE",
    "VALID_CORRELATION_ID",
    "AsyncCircuitBreaker",
    "BadRequest",
    "Balancer",
    "BreakerRule",
    "CallPolicy",
    "CallPolicySettings",
    "CircuitOpen",
    "Clock",
    "Coalescer",
    "ConcurrencyLimit",
    "Config",
    "Conflict",
    "CountsCollector",
    "Dependency",
    "EnvSettings",
    "EventBus",
    "EventConsumer",
    "EventDispatcher",
    "EventSettings",
    "ExpectedError",
    "Handler",
    "Hedging",
    "InvalidArgument",
    "LatencyTracker",
    "LoopLag",
    "MethodNotFound",
    "Overloaded",
    "Pending",
    "PolicyCollector",
    "RemoteError",
    "RetryBudget",
    "RpcProxy",
    "ServerSettings",
    "ServiceUnavailable",
    "SettingsError",
    "Target",
    "ValueCollector",
    "access_log_middleware",
    "at_least",
    "between",
    "body_deadline",
    "build_service",
    "configure_logging",
    "correlation_middleware",
    "derived_key",
    "dispatch",
    "downstream_policies",
    "event_handler",
    "event_handlers",
    "get_logger",
    "is_http_url",
    "is_refusal",
    "json_response",
    "read_json",
    "readiness_probe",
    "remote_error",
    "reply_budget",
    "retry_after_header",
    "rpc",
    "rpc_app",
    "run_main",
    "setup_metrics",
    "share",
    "signer_for",
]
