"""Chaos soak: the three real services under concurrent load while their network and processes fail.

::

    python -m scripts.soak                       # 60 s, 16 clients, seed 1
    python -m scripts.soak --duration 10 --json  # the report as JSON on stdout
    python -m scripts.soak --kill-logging        # also kill the logging service (loses its memory)
    python -m scripts.soak --cluster             # Procfile.cluster's topology: kill replicas and Redis

The facade's ``LOGGING_URL`` points at a fault proxy in front of the logging
service. For ``--duration`` seconds, ``--concurrency`` clients POST messages
with unique texts (and now and then GET a page) while the soak cycles the
logging network path through faults (connections refused, delays beyond
``RPC_TIMEOUT``, 503s, replies dropped after the write) and SIGKILLs and
restarts the messages service again and again (the load goes on past
``--duration``, for at most 30 s, until a POST held to the strict rule below
has been acknowledged, so that a run always vouches for something). Then it
clears the faults, waits until nothing is in flight, reads the store back
and checks it, Jepsen-style, against what each client was told:

- lost: acknowledged (200 success) but not stored;
- duplicated: stored more than once;
- unexpected: stored but never sent;
- indeterminate: not acknowledged (503, timeout, ...) but stored anyway (allowed);
- failed and absent: not acknowledged and not stored (allowed).

The run passes when nothing is lost, duplicated or unexpected, and every
acknowledged UUID was logged as storing its message (exit status 0); it fails
otherwise (exit status 1). ``--kill-logging`` also kills the logging service,
whose in-memory store goes with it: what that loses is counted apart, and the
strict rule then applies to the messages sent after the last restart.

``--cluster`` runs the topology of Procfile.cluster instead (``topology.py``):
a redis-server with the shipped ``redis.conf`` (AOF, ``appendfsync always``),
three logging replicas on it, messages, and the facade over the replicas'
``LOGGING_URLS``, with no proxy. The faults are SIGKILLs: of replicas, in
rounds of one or (at least once) two at once, of redis-server, and of
messages. Nothing acknowledged may be lost there, whatever was killed: the
strict rule holds every POST, those acknowledged before a Redis restart too,
and the run fails if a fault it is there to survive never happened.

Every random choice comes from ``--seed``. Only loopback addresses are used,
every loop is bounded, and every process the soak started is stopped before
it returns.
"""

from __future__ import annotations

from .cli import main, parse_args
from .config import PHASES, SoakConfig
from .faults import phase_cycle
from .load import GetStats, PostOp, post_message
from .proxy import SoakProxy
from .readback import logged_uuids, read_store
from .report import Report
from .run import run_soak
from .topology import InMemory, OnRedis, topology_for
from .verdict import Tally, tally

__all__ = [
    "PHASES",
    "GetStats",
    "InMemory",
    "OnRedis",
    "PostOp",
    "Report",
    "SoakConfig",
    "SoakProxy",
    "Tally",
    "logged_uuids",
    "main",
    "parse_args",
    "phase_cycle",
    "post_message",
    "read_store",
    "run_soak",
    "tally",
    "topology_for",
]
