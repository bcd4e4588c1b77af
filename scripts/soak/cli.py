"""The soak's command line: its options, and the exit status of a run."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import SoakConfig
from .run import run_soak


def parse_args(argv: Sequence[str] | None = None) -> tuple[SoakConfig, bool]:
    """The soak's command line: ``(config, as_json)``."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak",
        description="Chaos soak: the three real services (or the cluster on Redis) under load while "
                    "their network and processes fail; checks that no acknowledged message is lost, "
                    "duplicated or invented.")
    defaults = SoakConfig()
    parser.add_argument("--duration", type=float, default=defaults.duration,
                        help="seconds of load and faults (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help="concurrent clients (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of every random choice (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout,
                        help="client bound on each request, seconds (default: %(default)s)")
    parser.add_argument("--get-ratio", type=float, default=defaults.get_ratio,
                        help="share of client operations that are GETs (default: %(default)s)")
    parser.add_argument("--client-retries", type=int, default=defaults.client_retries,
                        help="resend a failed POST this many times with an Idempotency-Key "
                             "(default: %(default)s)")
    parser.add_argument("--phases", default=",".join(defaults.phases),
                        help="network phases to cycle through, comma-separated (default: %(default)s)")
    parser.add_argument("--phase-min", type=float, default=defaults.phase_min,
                        help="shortest network fault phase, seconds (default: %(default)s)")
    parser.add_argument("--phase-max", type=float, default=defaults.phase_max,
                        help="longest network fault phase, seconds (default: %(default)s)")
    parser.add_argument("--kill-messages-every", type=float, default=defaults.kill_messages_every,
                        help="mean seconds between SIGKILLs of messages (default: %(default)s)")
    parser.add_argument("--messages-downtime", type=float, default=defaults.messages_downtime,
                        help="longest time messages stays down, seconds (default: %(default)s)")
    parser.add_argument("--kill-logging", action="store_true",
                        help="also SIGKILL and restart the logging service; what it loses is counted "
                             "apart as lost_with_logging_restart")
    parser.add_argument("--kill-logging-every", type=float, default=defaults.kill_logging_every,
                        help="mean seconds between SIGKILLs of logging (default: %(default)s)")
    parser.add_argument("--cluster", action="store_true",
                        help="run the cluster of Procfile.cluster instead: redis-server, three logging "
                             "replicas on it, three NATS servers, two messages instances on their "
                             "event stream and the facade over all of them; SIGKILL and restart "
                             "replicas (one, or two at once), redis-server, the stream's leader and "
                             "messages instances; no network phases")
    parser.add_argument("--kill-replica-every", type=float, default=defaults.kill_replica_every,
                        help="with --cluster, mean seconds between rounds of replica SIGKILLs "
                             "(default: %(default)s)")
    parser.add_argument("--replica-downtime", type=float, default=defaults.replica_downtime,
                        help="longest time a killed replica stays down, seconds (default: %(default)s)")
    parser.add_argument("--kill-redis-every", type=float, default=defaults.kill_redis_every,
                        help="with --cluster, mean seconds between SIGKILLs of redis-server "
                             "(default: %(default)s)")
    parser.add_argument("--redis-downtime", type=float, default=defaults.redis_downtime,
                        help="longest time redis-server stays down, seconds (default: %(default)s)")
    parser.add_argument("--kill-nats-every", type=float, default=defaults.kill_nats_every,
                        help="with --cluster, mean seconds between SIGKILLs of the event stream's "
                             "leader (default: %(default)s)")
    parser.add_argument("--nats-downtime", type=float, default=defaults.nats_downtime,
                        help="longest time a killed NATS server stays down, seconds "
                             "(default: %(default)s)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the services, e.g. RPC_TIMEOUT=0.5 or BREAKER_OPEN_DURATION=2 "
                             "(repeatable; default: the services' own defaults)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where the services write their JSON logs (default: a new temporary directory)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="where to draw the timeline picture, a PNG (default: timeline.png in the "
                             "log directory; needs the plots extra)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    service_env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env takes NAME=VALUE, not {item!r}")
        service_env[name.strip().upper()] = value
    config = SoakConfig(
        duration=args.duration, concurrency=args.concurrency, seed=args.seed,
        request_timeout=args.request_timeout, get_ratio=args.get_ratio, client_retries=args.client_retries,
        phases=tuple(name.strip() for name in args.phases.split(",") if name.strip()),
        phase_min=args.phase_min, phase_max=args.phase_max, kill_messages_every=args.kill_messages_every,
        messages_downtime=args.messages_downtime, kill_logging=args.kill_logging,
        kill_logging_every=args.kill_logging_every, cluster=args.cluster,
        kill_replica_every=args.kill_replica_every, replica_downtime=args.replica_downtime,
        kill_redis_every=args.kill_redis_every, redis_downtime=args.redis_downtime,
        kill_nats_every=args.kill_nats_every, nats_downtime=args.nats_downtime,
        service_env=service_env, log_dir=args.log_dir,
        plot=args.plot, progress_every=0.0 if args.quiet else 10.0,
    )
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak from the command line; 0 on a pass, 1 on a fail."""
    config, as_json = parse_args(argv)
    try:
        report = asyncio.run(run_soak(config))
    except KeyboardInterrupt:
        print("soak interrupted; every service it started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a restart that failed, a store that could not be read...
        causes = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        for cause in causes:
            print(f"soak aborted: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render())
    return 0 if report.passed else 1

