"""The benchmark: what the resilient three-service path costs against a bare aiohttp handler.

Run from the repository root::

    python -m bench            # about 2 minutes, prints the tables
    python -m bench --quick    # a smoke run, well under a minute
    python -m bench --write    # also writes docs/benchmark.md

Modules, one job each:

- ``cli``: options, the run, printing and writing the report;
- ``plan``: how long and how hard each phase runs (``--quick`` scales it down);
- ``run``: starts the bare handler and the three services, runs the phases, stops everything;
- ``bare``: the bare one-hop handler process (``python -m bench.bare``);
- ``load``: drives one endpoint with wrk (``wrk.lua``) or, without wrk, ``loadgen``;
- ``loadgen``: a small aiohttp load generator process (``python -m bench.loadgen``);
- ``storage``: logging-service memory per message and GET latency as the store grows;
- ``wrapper``: the resilience wrapper's cost per call against a raw aiohttp call;
- ``procfs``: a process's resident memory and CPU time from ``/proc``;
- ``machine``, ``results``, ``report``: what ran where, the figures, and their tables;
- ``profile``: py-spy on every service under the same load (``python -m bench.profile``);
- ``replicas``: POST rate on Redis with 1, 2 and 3 logging replicas (``python -m bench.replicas``).
"""
