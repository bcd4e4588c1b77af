"""What one soak run does: ``SoakConfig``, its defaults and its bounds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from facade.settings import FacadeSettings
from logging_service.settings import LoggingSettings
from resilience import SettingsError

#: The states the logging network path cycles through, each held for a random while.
PHASES = ("clean", "refuse", "slow", "errors", "drops", "mixed")
#: Each kill of a service comes uniform(*KILL_JITTER) times its mean interval after the last one.
KILL_JITTER = (0.5, 1.5)
#: The logging service is killed only in this first share of the run: the rest is kept for
#: messages that must all survive, those sent after the last restart.
LOGGING_KILLS_UNTIL = 0.5
#: Logging replicas and messages instances in the clustered run, as in Procfile.cluster.
REPLICAS = 3
MESSAGES = 2
#: In the clustered run, replica kills come in rounds: the second round, and every third after
#: it, SIGKILLs two replicas at once (the facade still has the third); the others one.
PAIR_ROUND_EVERY = 3
#: Rounds every clustered run goes through, so that it always has one of two replicas at once.
MIN_REPLICA_ROUNDS = 2


@dataclass(frozen=True)
class SoakConfig:
    """What one soak run does. Every random choice derives from ``seed``."""

    duration: float = 60.0
    concurrency: int = 16
    seed: int = 1
    #: Client-side bound on each request (the facade's own retry deadline is 3 s).
    request_timeout: float = 5.0
    #: Share of client operations that are GET /facade (a small page) instead of a POST.
    get_ratio: float = 0.1
    #: Times a client resends a failed POST with the same Idempotency-Key (0: never).
    client_retries: int = 0
    #: The network phases to cycle through (a subset of ``PHASES``).
    phases: tuple[str, ...] = PHASES
    #: Each network phase lasts uniform(phase_min, phase_max) seconds.
    phase_min: float = 2.0
    phase_max: float = 5.0
    #: Mean seconds between SIGKILLs of the messages service.
    kill_messages_every: float = 5.0
    #: It stays down up to this many seconds before it is restarted.
    messages_downtime: float = 1.0
    #: Also SIGKILL and restart the logging service (its in-memory store goes with it).
    kill_logging: bool = False
    #: Mean seconds between SIGKILLs of the logging service, with ``kill_logging``.
    kill_logging_every: float = 20.0
    #: Run the cluster of Procfile.cluster instead: redis-server, ``REPLICAS`` logging replicas
    #: on it, three NATS servers, two messages instances on their event stream and the facade
    #: over all of them, and kill replicas, redis-server, the stream's leader and messages.
    cluster: bool = False
    #: Mean seconds between rounds of replica SIGKILLs, with ``cluster``.
    kill_replica_every: float = 10.0
    #: A killed replica stays down up to this many seconds before it is restarted.
    replica_downtime: float = 1.0
    #: Mean seconds between SIGKILLs of redis-server, with ``cluster``.
    kill_redis_every: float = 20.0
    #: A killed redis-server stays down up to this many seconds before it is restarted.
    redis_downtime: float = 1.0
    #: Mean seconds between SIGKILLs of the event stream's leader, with ``cluster``.
    kill_nats_every: float = 15.0
    #: A killed NATS server stays down up to this many seconds before it is restarted.
    nats_downtime: float = 1.0
    #: Extra environment for the services (``{"RPC_TIMEOUT": "0.5"}``), on top of their defaults.
    service_env: Mapping[str, str] = field(default_factory=dict)
    #: Where the services write their JSON logs (default: a new temporary directory).
    log_dir: Path | None = None
    #: Where to draw the timeline picture (PNG; default: ``timeline.png`` in ``log_dir``).
    plot: Path | None = None
    #: Print a progress line to stderr every ``progress_every`` seconds (0: never).
    progress_every: float = 0.0

    def validate(self) -> None:
        """Raise ValueError for settings that cannot make a bounded, meaningful run."""
        if not 0 < self.duration <= 24 * 3600:
            raise ValueError(f"duration must be more than 0 and at most 86400 seconds, not {self.duration:g}")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError("concurrency must be between 1 and 1024")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if not 0 <= self.get_ratio < 1:
            raise ValueError("get_ratio must be in [0, 1)")
        if not 0 <= self.client_retries <= 10:
            raise ValueError("client_retries must be between 0 and 10")
        if not self.phases or not set(self.phases) <= set(PHASES):
            raise ValueError(f"phases must be some of {', '.join(PHASES)}")
        if not 0 < self.phase_min <= self.phase_max:
            raise ValueError("need 0 < phase_min <= phase_max")
        if self.kill_messages_every <= 0 or self.messages_downtime <= 0:
            raise ValueError("kill_messages_every and messages_downtime must be positive")
        if self.kill_logging_every <= 0:
            raise ValueError("kill_logging_every must be positive")
        shortest = KILL_JITTER[1] * self.kill_logging_every / LOGGING_KILLS_UNTIL
        if self.kill_logging and self.duration < shortest:
            # Otherwise the first kill may not come before kills stop: a run that reports on a
            # logging restart that never happened.
            raise ValueError(
                f"kill_logging needs a duration of at least {shortest:g} s with kill_logging_every "
                f"{self.kill_logging_every:g} s (the first kill comes up to {KILL_JITTER[1]:g} x that "
                f"in, and kills stop at {LOGGING_KILLS_UNTIL:.0%} of the run): lengthen the duration "
                "or shorten kill_logging_every")
        if self.cluster:
            self._validate_cluster()
        try:
            for settings_type in (FacadeSettings, LoggingSettings):
                settings_type.from_env(dict(self.service_env))
        except SettingsError as exc:
            raise ValueError(f"service environment: {exc}") from None

    def _validate_cluster(self) -> None:
        """The clustered run's own bounds: its faults must all be due within the duration."""
        if self.kill_logging:
            raise ValueError("kill_logging is for the in-memory logging service; the cluster "
                             "kills its logging replicas anyway")
        if min(self.kill_replica_every, self.replica_downtime, self.kill_redis_every,
               self.redis_downtime, self.kill_nats_every, self.nats_downtime) <= 0:
            raise ValueError("kill_replica_every, replica_downtime, kill_redis_every, "
                             "redis_downtime, kill_nats_every and nats_downtime must be positive")
        shortest = KILL_JITTER[1] * max(MIN_REPLICA_ROUNDS * self.kill_replica_every,
                                        self.kill_redis_every, self.kill_nats_every)
        if self.duration < shortest:
            # Otherwise a run may end before its first redis-server kill or its first round of two
            # replicas at once: it would report on faults that never happened.
            raise ValueError(
                f"cluster needs a duration of at least {shortest:g} s with kill_replica_every "
                f"{self.kill_replica_every:g} s, kill_redis_every {self.kill_redis_every:g} s and "
                f"kill_nats_every {self.kill_nats_every:g} s (the first redis-server and NATS "
                f"leader kills and the {MIN_REPLICA_ROUNDS} first rounds of replica "
                f"kills come up to {KILL_JITTER[1]:g} x those in): lengthen the duration or shorten "
                "the intervals")
