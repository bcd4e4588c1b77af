"""The benchmark: what the resilient three-service path costs against a bare aiohttp handler.

Run from the repository root::

    python -m bench            # about 4 minutes, prints the tables
    python -m bench --quick    # a smoke run, about a minute
    python -m bench --write    # also rewrites the results in docs/benchmark.md

Modules, one job each:

- ``__main__``: options, the run, printing and writing the report;
- ``run``: starts the processes, runs the phases (in memory, then on Redis), stops everything;
- ``bare``: the bare one-hop handler, and its process (``python -m bench.bare``);
- ``load``: wrk (``wrk.lua``) or, without wrk, the bundled aiohttp generator (``python -m bench.load``);
- ``storage``: memory per stored message (logging's RSS; Redis's ``used_memory``), GET latency;
- ``wrapper``: the resilience wrapper's cost per call against a raw aiohttp call;
- ``results``: the plan, the machine and the figures, as plain data;
- ``report``: the targets' verdicts and the Markdown tables;
- ``profile``: py-spy on every service under the same load (``python -m bench.profile``).
"""
