"""The clustered soak (``--cluster``): its fault schedule, its verdict, and a short real run on Redis.

The short run starts a real redis-server (the shipped ``redis.conf``), three
logging replicas on it, messages and the facade over the replicas, with the
shipped settings, and SIGKILLs replicas and redis-server under load. Nothing
acknowledged may be lost, those acknowledged before the Redis restart included.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from scripts.soak import PostOp, SoakConfig, parse_args, run_soak, tally
from scripts.soak.config import MIN_REPLICA_ROUNDS
from scripts.soak.faults import REDIS, ChaosState, missing_faults, round_victims
from scripts.soak.load import LoadState
from scripts.soak.readback import breaker_label
from scripts.soak.run import until_something_checked
from scripts.soak.timeline import outage_spans
from scripts.soak.verdict import messages_verdict, problems
from tests.test_soak import SHIPPED, explain

REPLICAS = ("logging1", "logging2", "logging3")
CLUSTER = SoakConfig(duration=6.0, cluster=True, kill_replica_every=1.5, kill_redis_every=2.0)


def acked(text: str, *, started: float, ended: float) -> PostOp:
    """A POST sent at ``started`` whose client was told at ``ended`` that it is stored."""
    return PostOp(text=text, started=started, attempts=1, outcome="ok", uuid=f"uuid-{text}", ended=ended)


def test_the_second_round_and_every_third_after_it_kill_two_replicas_at_once() -> None:
    """Rounds 1, 4, 7... kill two distinct replicas, the others one: never all three at once."""
    rng = random.Random(1)

    sizes = [len(round_victims(REPLICAS, index, rng)) for index in range(8)]
    pair = round_victims(REPLICAS, 1, rng)

    assert sizes == [1, 2, 1, 1, 2, 1, 1, 2]
    assert len(set(pair)) == 2
    assert set(pair) <= set(REPLICAS)


def test_outages_of_several_processes_are_spanned_by_name() -> None:
    """Overlapping kills of two replicas and redis-server each get their span; one never restarted
    lasts until the end."""
    notes = [(1.0, "logging1 SIGKILL"), (1.0, "logging3 SIGKILL"), (1.5, "redis-server SIGKILL"),
             (1.8, "logging1 restarted"), (1.9, "redis-server restarted (append-only file reloaded)"),
             (2.0, "logging3 restarted"), (3.0, "logging2 SIGKILL")]

    assert outage_spans(notes, end=4.0) == {
        "logging1": [(1.0, 1.8, "down")], "logging2": [(3.0, 4.0, "down")],
        "logging3": [(1.0, 2.0, "down")], "redis-server": [(1.5, 1.9, "down")]}


def test_breakers_are_named_after_their_replica() -> None:
    """A replica's breaker shows the replica's name instead of its address; others are unchanged."""
    aliases = {"127.0.0.1:40123": "logging2"}

    assert breaker_label("logging.write@127.0.0.1:40123", aliases) == "logging.write@logging2"
    assert breaker_label("messages.read", aliases) == "messages.read"


def test_tally_counts_what_was_acknowledged_before_the_redis_kill() -> None:
    """POSTs whose client was told before the last redis-server SIGKILL are counted, with how many
    are stored; one of them missing is lost, like any other."""
    ops = [acked("kept", started=0.5, ended=0.9), acked("gone", started=0.6, ended=1.0),
           acked("after", started=1.5, ended=2.5)]

    result = tally(ops, ["kept", "after"], store_killed_at=2.0, restarted_at=1.2)

    assert result.store_killed
    assert (result.before_store_kill, result.before_store_kill_stored) == (2, 1)
    assert result.lost == 1
    assert result.examples["lost"] == ["gone"]
    assert result.after_last_restart == 1


def test_a_cluster_run_fails_without_what_it_must_show() -> None:
    """A redis-server kill with nothing acknowledged before it, no acknowledgement after the last
    restart, or a fault that never came each fail the run."""
    ops = [acked("late", started=3.0, ended=3.5)]
    result = tally(ops, ["late"], store_killed_at=2.0, restarted_at=4.0)

    found = problems(result, LoadState().gets, "identical", ["a redis-server SIGKILL"])

    assert found == [
        "a redis-server SIGKILL never happened: the run cannot vouch for surviving it",
        "no message was acknowledged before the last redis-server SIGKILL: the run checked nothing "
        "across a Redis restart",
        "no POST sent after the last restart was acknowledged: the run did not show that the system "
        "recovered"]


def test_the_faults_a_cluster_run_needs() -> None:
    """A cluster run needs a replica kill, two replicas down at once, a redis-server kill and a
    kill of the event stream's leader."""
    chaos = ChaosState(started=0.0)
    before = missing_faults(CLUSTER, chaos)
    chaos.replica_rounds, chaos.pair_rounds, chaos.kills[REDIS], chaos.kills["nats2"] = 2, 1, 1, 1

    assert before == ["a logging replica SIGKILL", "two logging replicas SIGKILLed at once",
                      "a redis-server SIGKILL", "a SIGKILL of the event stream's leader"]
    assert missing_faults(CLUSTER, chaos) == []
    assert missing_faults(SoakConfig(), ChaosState(started=0.0)) == []


def test_a_messages_instance_that_lost_or_doubled_a_message_fails_the_run() -> None:
    """Each messages instance is judged as the store is: every acknowledged message once."""
    ops = [acked("one", started=1.0, ended=1.1), acked("two", started=1.0, ended=1.2)]
    kept = {"messages1": messages_verdict(ops, ["one", "two"]),
            "messages2": messages_verdict(ops, ["one", "one", "ghost"])}
    result = tally(ops, ["one", "two"])

    assert kept["messages1"] == {"kept": 2, "lost": 0, "duplicated": 0, "unexpected": 0}
    assert problems(result, LoadState().gets, "identical", messages=kept) == [
        "messages2: 1 acknowledged messages are not kept", "messages2: 1 messages are kept more than once",
        "messages2: 1 kept messages were never sent"]


def test_only_a_restart_on_the_write_path_moves_the_last_restart() -> None:
    """A replica or redis-server serving again is the last restart; messages coming back is not."""
    chaos = ChaosState(started=0.0)
    chaos.killed("messages")
    chaos.restarted("messages")
    unmoved = chaos.last_restart
    chaos.down.add("logging2")
    chaos.killed("logging2")
    down = set(chaos.down)
    chaos.restarted("logging2")

    assert unmoved is None
    assert down == {"logging2"}
    assert chaos.down == set()
    assert chaos.last_restart is not None
    assert chaos.kills == Counter({"messages": 1, "logging2": 1})
    assert chaos.replica_kills == 1


async def test_cluster_load_goes_on_until_the_faults_came_and_a_later_post_is_acknowledged() -> None:
    """Past its duration, a cluster run stops its load only once every fault it needs has happened,
    nothing is down, and a POST sent after the last restart has been acknowledged."""
    state = LoadState()
    chaos = ChaosState(started=0.0, replica_rounds=2, pair_rounds=1, down={REDIS}, last_restart=10.0)
    chaos.kills["nats3"] += 1
    waiting = asyncio.create_task(until_something_checked(CLUSTER, state, chaos))
    await asyncio.sleep(0)

    state.finish(acked("while redis is down", started=11.0, ended=11.5))
    await asyncio.sleep(0)
    waited_while_down = not waiting.done()
    chaos.kills[REDIS] += 1
    chaos.restarted(REDIS)
    state.finish(acked("before the restart", started=11.0, ended=12.0))
    await asyncio.sleep(0)
    waited_for_a_later_post = not waiting.done()
    state.finish(acked("after the restart", started=(chaos.last_restart or 0) + 0.1, ended=13.0))
    await asyncio.wait_for(waiting, 1.0)

    assert waited_while_down
    assert waited_for_a_later_post


def test_command_line_for_the_cluster() -> None:
    """--cluster and its fault options reach the configuration."""
    config, _ = parse_args(["--cluster", "--duration", "9", "--kill-replica-every", "2", "--replica-downtime",
                            "0.5", "--kill-redis-every", "3", "--redis-downtime", "0.2",
                            "--kill-nats-every", "4", "--nats-downtime", "0.3"])

    assert config.cluster
    assert (config.kill_replica_every, config.replica_downtime) == (2, 0.5)
    assert (config.kill_redis_every, config.redis_downtime) == (3, 0.2)
    assert (config.kill_nats_every, config.nats_downtime) == (4, 0.3)
    assert parse_args(["--cluster"])[0].duration == 60  # the defaults fit the default duration


@pytest.mark.parametrize(("argv", "says"), [
    (["--cluster", "--kill-logging"], "kill_logging is for the in-memory logging service"),
    (["--cluster", "--duration", "20"], "cluster needs a duration of at least 30 s"),
    (["--cluster", "--redis-downtime", "0"], "must be positive"),
    (["--cluster", "--nats-downtime", "0"], "must be positive"),
])
def test_command_line_refuses_a_cluster_run_that_cannot_show_its_faults(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A cluster run that mixes in --kill-logging, is too short for its faults, or has a downtime of
    nothing is refused with a usage error saying why."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)

    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.e2e
async def test_short_cluster_soak_loses_nothing_acknowledged_across_replica_redis_and_nats_kills(
        tmp_path: Path) -> None:
    """A 6 s soak on redis-server, three replicas, three NATS servers and two messages instances,
    with replicas (two at once too), redis-server, the event stream's leader and messages instances
    SIGKILLed and restarted: every acknowledged message, those acknowledged before the Redis restart
    included, is stored exactly once and kept once by each messages instance, and POSTs sent after
    the last restart are acknowledged."""
    config = SoakConfig(duration=6.0, concurrency=4, seed=2, cluster=True, kill_replica_every=1.5,
                        replica_downtime=0.3, kill_redis_every=2.0, redis_downtime=0.3,
                        kill_nats_every=2.0, nats_downtime=0.3,
                        kill_messages_every=3.0, messages_downtime=0.3, service_env=SHIPPED,
                        log_dir=tmp_path)

    report = await run_soak(config)

    t, faults = report.tally, report.faults
    # The faults happened.
    assert faults["replica_rounds"] >= MIN_REPLICA_ROUNDS, explain(report)
    assert faults["pair_rounds"] >= 1, explain(report)
    assert faults["kills"][REDIS] >= 1, explain(report)
    assert sum(n for name, n in faults["kills"].items() if name.startswith("nats")) >= 1, explain(report)
    assert report.evidence["store_unreachable_logged"] > 0, explain(report)  # the replicas felt it
    # Messages acknowledged by the Redis that was killed are held to the strict rule, and all stored.
    assert t.checked == t.attempted, explain(report)
    assert 0 < t.before_store_kill == t.before_store_kill_stored, explain(report)
    assert (t.lost, t.duplicated, t.unexpected, t.uuid_mismatches) == (0, 0, 0, 0), explain(report)
    assert (t.after_last_restart or 0) > 0, explain(report)
    assert report.readback["via_facade"] == "identical", explain(report)
    for name in ("messages1", "messages2"):
        kept = report.messages[name]
        assert (kept["lost"], kept["duplicated"], kept["unexpected"]) == (0, 0, 0), explain(report)
        assert kept["kept"] >= t.acknowledged, explain(report)
    assert report.passed, explain(report)
    assert {name: s["exit"] for name, s in report.shutdown.items()} == {
        "facade": 0, "messages1": 0, "messages2": 0, "logging1": 0, "logging2": 0, "logging3": 0,
        REDIS: 0}
    assert sum(report.evidence["tracebacks"].values()) == 0, explain(report)
