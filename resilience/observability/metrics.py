"""Prometheus metrics: ``GET /metrics`` on every service, in the Prometheus text format.

Each app has a registry of its own (so several apps in one process, as in
the tests, never share series). Requests are counted as the access log
middleware answers them (its ``OBSERVERS``); the
resilience parts already keep counts of what they do (a breaker's calls by
outcome, a budget's refusals, a policy's retries), so a collector reads
those at scrape time instead of touching the hot path. Names follow
Prometheus' rules (``_total``, ``_seconds``, base units) and, for the breaker
and retries, resilience4j's metric names and kinds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from resilience.observability.access import OBSERVERS
from resilience.policies.breaker import OUTCOMES, STATES
from resilience.policies.pipeline import RETRY_OUTCOMES, CallPolicy

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
# Request latency buckets, in seconds: a millisecond to the retry deadline and past it.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def setup_metrics(app: web.Application, collectors: Iterable[Collector] = (),
                  refresh: Callable[[], Awaitable[None]] | None = None) -> CollectorRegistry:
    """Give ``app`` a registry, request counts (from the access log middleware) and ``GET /metrics``.

    ``refresh`` runs before each scrape, for values that take I/O to read (the
    size of a store on a server).
    """
    registry = CollectorRegistry()
    requests = Counter("http_requests", "HTTP requests answered, by route, method and status",
                       ["route", "method", "status"], registry=registry)
    latency = Histogram("http_request_duration_seconds", "Time to answer an HTTP request",
                        ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
    for collector in collectors:
        registry.register(collector)

    def count(request: web.Request, status: int | None, seconds: float) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        requests.labels(route, request.method, "cancelled" if status is None else str(status)).inc()
        latency.labels(route, request.method).observe(seconds)

    serve = make_aiohttp_handler(registry)

    async def metrics(request: web.Request) -> web.StreamResponse:
        if refresh is not None:
            await refresh()
        return await serve(request)

    app.setdefault(OBSERVERS, []).append(count)
    app.router.add_get("/metrics", metrics)
    app[REGISTRY] = registry
    return registry


class PolicyCollector(Collector):
    """The breakers, retries, budgets and limits of a service's call policies, read at scrape time."""

    def __init__(self, policies: Callable[[], Iterable[CallPolicy]]) -> None:
        if not callable(policies):  # a list given here would fail only at the first scrape
            raise TypeError("PolicyCollector takes a function returning the policies, "
                            "as PolicyCollector(lambda: policies)")
        self._policies = policies

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("circuitbreaker_state", "1 for the state each breaker is in",
                                  labels=["name", "state"])
        calls = CounterMetricFamily("circuitbreaker_calls", "Calls through each breaker, by outcome",
                                    labels=["name", "kind"])
        rate = GaugeMetricFamily("circuitbreaker_failure_rate",
                                 "Share of failed calls in each breaker's window (-1 while empty)",
                                 labels=["name"])
        retries = CounterMetricFamily("retry_calls", "Calls by whether they were retried and succeeded",
                                      labels=["name", "kind"])
        refused = CounterMetricFamily("retry_budget_refused",
                                      "Retries the retry budget refused", labels=["downstream"])
        hedges = CounterMetricFamily("hedge_calls", "Hedged tries: sent, won (answered first), "
                                     "refused by the hedge budget", labels=["name", "kind"])
        shed = CounterMetricFamily("downstream_calls_shed",
                                   "Calls refused at once: too many in flight to the downstream",
                                   labels=["downstream"])
        seen: set[int] = set()
        for policy in self._policies():
            for breaker in policy.breakers:
                for name in STATES:
                    state.add_metric([breaker.name, name], 1.0 if breaker.state == name else 0.0)
                for kind in OUTCOMES:
                    calls.add_metric([breaker.name, kind], breaker.calls[kind])
                failure_rate = breaker.failure_rate()
                rate.add_metric([breaker.name], -1.0 if failure_rate is None else failure_rate)
            for kind in RETRY_OUTCOMES:
                retries.add_metric([policy.name, kind], policy.outcomes[kind])
            if policy.hedging is not None:
                for kind in ("sent", "won", "refused"):
                    hedges.add_metric([policy.name, kind], getattr(policy.hedging, kind))
            for part, family in ((policy.budget, refused), (policy.limit, shed)):
                if part is not None and id(part) not in seen:
                    seen.add(id(part))
                    family.add_metric([policy.service], part.refused)
        yield from (state, calls, rate, retries, hedges, refused, shed)


class CountsCollector(Collector):
    """Counters a service keeps as plain numbers (a ``Mapping`` read at scrape time)."""

    def __init__(self, name: str, documentation: str, label: str,
                 counts: Callable[[], Mapping[str, int]]) -> None:
        self._name, self._documentation, self._label, self._counts = name, documentation, label, counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in sorted(self._counts().items()):
            family.add_metric([value], count)
        yield family


class ValueCollector(Collector):
    """A gauge whose value is read at scrape time."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self._name, self._documentation, self._value = name, documentation, value

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation, value=self._value())
