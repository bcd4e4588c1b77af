"""Call policies, each a small object on an injected clock: retry strategies, the circuit breaker
and its window, the retry budget, hedging, the concurrency limit, the balancer, and the pipeline
that composes them."""
