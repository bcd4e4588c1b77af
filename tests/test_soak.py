"""The chaos soak: its Jepsen-style verdict, its command line, and short real runs.

The short runs start the three real processes, put the fault proxy in front
of the logging service and kill the messages service, so each asserts both
that nothing acknowledged went missing and that the faults really happened
(a soak that injected nothing would pass for nothing).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from scripts.soak import PHASES, PostOp, Report, SoakConfig, parse_args, phase_cycle, run_soak, tally
from scripts.soak.faults import ChaosState
from scripts.soak.load import LoadState
from scripts.soak.run import until_something_checked
from scripts.soak.timeline import draw_png, timeline_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The services run with the shipped settings: a fault soak that needs them changed would mean the
# defaults are wrong.
SHIPPED: dict[str, str] = {}


def explain(report: Report) -> str:
    """A failed soak assertion's message: the report, and when each fault happened."""
    return f"{report.render()}\ntimeline: {report.timeline}"


def op(text: str, outcome: str = "ok", *, started: float = 0.0, uuid: str | None = None) -> PostOp:
    """A finished POST as a client recorded it."""
    return PostOp(text=text, started=started, attempts=1, outcome=outcome,
                  uuid=uuid or (f"uuid-{text}" if outcome == "ok" else None))


def test_tally_sorts_every_post_into_its_category() -> None:
    """Each POST lands in exactly one Jepsen category: kept, lost, duplicated, unexpected, indeterminate."""
    ops = [op("kept"), op("lost"), op("late", "http-503"), op("gone", "timeout"), op("twice")]
    stored = ["kept", "late", "twice", "twice", "invented"]

    result = tally(ops, stored)

    assert (result.attempted, result.acknowledged, result.failed) == (5, 3, 2)
    assert (result.lost, result.duplicated, result.unexpected) == (1, 1, 1)
    assert (result.indeterminate, result.failed_and_absent) == (1, 1)
    assert result.examples == {"duplicated": ["twice"], "unexpected": ["invented"], "lost": ["lost"]}


def test_tally_of_a_clean_run_finds_nothing() -> None:
    """A run where every acknowledged message is stored once has nothing to report but clean failures."""
    ops = [op("a"), op("b", "connection-error"), op("c")]

    result = tally(ops, ["a", "c"])

    assert (result.lost, result.duplicated, result.unexpected, result.indeterminate) == (0, 0, 0, 0)
    assert result.failed_and_absent == 1
    assert result.checked == result.attempted == 3
    assert result.checked_acknowledged == 2


def test_tally_counts_what_a_logging_restart_lost_apart() -> None:
    """Acknowledged before the restart and gone: counted, but not as lost; after it: lost."""
    ops = [op("before", started=1.0), op("kept-before", started=2.0), op("after", started=6.0),
           op("lost-after", started=7.0)]

    result = tally(ops, ["kept-before", "after"], strict_since=5.0)

    assert result.lost_with_logging_restart == 1
    assert result.lost == 1
    assert result.examples["lost"] == ["lost-after"]
    assert (result.checked, result.checked_acknowledged) == (2, 2)


def test_tally_checks_each_acknowledged_uuid_against_the_logging_log() -> None:
    """An acknowledged UUID that logging never logged as storing that text is a mismatch."""
    ops = [op("a", uuid="u1"), op("b", uuid="u2"), op("c", "http-503")]

    result = tally(ops, ["a", "b"], stored_uuids={"u1": {"a"}, "u2": {"something else"}})

    assert result.uuid_mismatches == 1
    assert result.examples["uuid_mismatch"] == ["u2 b"]


def test_each_fault_phase_is_followed_by_a_clean_one() -> None:
    """Every fault gets its turn in a cycle, each followed by a clean phase so recovery is exercised."""
    cycle = phase_cycle(PHASES, random.Random(1))

    assert sorted(cycle[::2]) == sorted(set(PHASES) - {"clean"})
    assert cycle[1::2] == ["clean"] * (len(PHASES) - 1)
    assert sorted(phase_cycle(("drops", "refuse"), random.Random(1))) == ["drops", "refuse"]
    assert phase_cycle(("clean",), random.Random(1)) == ["clean"]


def test_command_line() -> None:
    """Every option reaches the soak's configuration; no options give the defaults."""
    config, as_json = parse_args(["--duration", "5", "--concurrency", "3", "--seed", "9", "--json",
                                  "--kill-logging", "--kill-logging-every", "1",
                                  "--env", "rpc_timeout=0.5", "--quiet",
                                  "--phases", "drops, refuse", "--plot", "run.png"])

    assert as_json
    assert (config.duration, config.concurrency, config.seed) == (5, 3, 9)
    assert (config.kill_logging, config.kill_logging_every) == (True, 1)
    assert config.service_env == {"RPC_TIMEOUT": "0.5"}
    assert config.progress_every == 0
    assert config.phases == ("drops", "refuse")
    assert config.plot == Path("run.png")
    assert parse_args([])[0] == SoakConfig(progress_every=10.0)


@pytest.mark.parametrize("argv", [["--env", "RPC_TIMEOUT=soon"], ["--env", "novalue"],
                                  ["--duration", "0"], ["--phase-min", "3", "--phase-max", "1"],
                                  ["--phases", "clean,flood"], ["--kill-logging", "--duration", "59"],
                                  ["--kill-logging", "--duration", "6", "--kill-logging-every", "2.1"]])
def test_command_line_refuses_what_cannot_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Options that cannot run are refused with a usage error (exit 2), not a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)

    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["--duration", "0"], "duration must be more than 0 and at most 86400 seconds, not 0"),
    (["--kill-logging", "--duration", "10"],
     "kill_logging needs a duration of at least 60 s with kill_logging_every 20 s"),
])
def test_refusals_say_what_the_rule_is(argv: list[str], says: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A refused option is told the rule it broke, in words that match the rule applied."""
    with pytest.raises(SystemExit):
        parse_args(argv)

    assert says in capsys.readouterr().err


def test_kill_logging_runs_as_short_as_its_first_kill_allows() -> None:
    """--kill-logging is accepted from a duration of three mean kill intervals (the first kill is due
    in the first half), the shortest run that is sure to kill logging."""
    config, _ = parse_args(["--kill-logging", "--duration", "6", "--kill-logging-every", "2"])

    assert (config.duration, config.kill_logging_every) == (6, 2)


async def test_load_goes_on_until_a_post_after_the_last_restart_is_acknowledged() -> None:
    """Past its duration, a --kill-logging run stops its load only once a POST sent after the last
    logging restart has been acknowledged: acknowledgements of earlier POSTs do not end it."""
    config = SoakConfig(duration=6.0, kill_logging=True, kill_logging_every=2.0)
    state, chaos = LoadState(), ChaosState(started=0.0, kills=Counter(logging=1), last_restart=10.0)
    waiting = asyncio.create_task(until_something_checked(config, state, chaos))
    await asyncio.sleep(0)  # let it look at the condition once

    state.finish(op("sent before the restart", started=9.0))
    await asyncio.sleep(0)
    still_waiting = not waiting.done()
    state.finish(op("sent after the restart", started=10.5))
    await asyncio.wait_for(waiting, 1.0)

    assert still_waiting
    assert chaos.timeline[-1][1].startswith("load went on")


# A small run: three seconds of POSTs, a refuse phase from 1 s to 2 s that opens the write breaker,
# and a messages kill.
SYNTHETIC_NOTES = [(0.0, "network clean"), (1.0, "network refuse"), (1.5, "messages SIGKILL"),
                   (1.8, "messages restarted"), (2.0, "network clean"), (3.0, "load stopped, faults cleared")]
SYNTHETIC_LINES = [
    {"event": "circuit breaker state changed", "timestamp": "2026-01-01T00:00:01.250Z",
     "breaker": "logging.write", "new_state": "open"},
    {"event": "circuit breaker state changed", "timestamp": "2026-01-01T00:00:02.250Z",
     "breaker": "logging.write", "new_state": "half-open"},
    {"event": "circuit breaker state changed", "timestamp": "2026-01-01T00:00:02.500Z",
     "breaker": "logging.write", "new_state": "closed"},
    {"event": "message stored", "timestamp": "2026-01-01T00:00:02.600Z"},
]


def synthetic_timeline() -> list[PostOp]:
    """POSTs answered at 0.5 s (two acknowledged), 1.5 s (a 503, a timeout) and 2.5 s (one acknowledged)."""
    answered = [(0.5, "ok"), (0.6, "ok"), (1.5, "http-503"), (1.6, "timeout"), (2.5, "ok")]
    return [PostOp(text=f"t{i}", started=100.0 + at - 0.1, outcome=outcome, ended=100.0 + at)
            for i, (at, outcome) in enumerate(answered)]


def test_timeline_counts_each_second_and_spans_each_state() -> None:
    """POSTs are counted in the second their client was told; breaker states, network faults and
    a service's down time become spans in seconds since the load started."""
    data = timeline_of(synthetic_timeline(), 100.0, SYNTHETIC_NOTES, SYNTHETIC_LINES,
                       "2026-01-01T00:00:00.000+00:00", end=3.0)

    assert data.per_second == {"acknowledged": [2, 0, 1], "503": [0, 1, 0], "failed": [0, 1, 0]}
    assert data.breakers == {"logging.write": [(0.0, 1.25, "closed"), (1.25, 2.25, "open"),
                                               (2.25, 2.5, "half-open"), (2.5, 3.0, "closed")]}
    assert data.faults == [(1.0, 2.0, "refuse")]
    assert data.outages == {"messages": [(1.5, 1.8, "down")]}


def test_timeline_picture_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    """draw_png writes a PNG (11 inches wide at 90 dpi) of a small synthetic run."""
    data = timeline_of(synthetic_timeline(), 100.0, SYNTHETIC_NOTES, SYNTHETIC_LINES,
                       "2026-01-01T00:00:00.000+00:00", end=3.0)
    path = tmp_path / "timeline.png"

    assert draw_png(data, path, "synthetic")

    png = path.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert int.from_bytes(png[16:20], "big") == 11 * 90  # the IHDR chunk's width


def test_timeline_picture_is_skipped_without_matplotlib(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib (an optional extra) draw_png writes nothing and says so; it never raises."""
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what an absent package imports as
    data = timeline_of(synthetic_timeline(), 100.0, SYNTHETIC_NOTES, [], "2026-01-01T00:00:00+00:00",
                       end=3.0)

    assert not draw_png(data, tmp_path / "timeline.png", "synthetic")
    assert not (tmp_path / "timeline.png").exists()


@pytest.mark.e2e
async def test_short_soak_loses_nothing_under_real_faults(tmp_path: Path) -> None:
    """A 6 s soak on the real processes loses, duplicates and invents nothing, and the faults happened."""
    config = SoakConfig(duration=6.0, concurrency=4, seed=3, phase_min=0.4, phase_max=0.8,
                        kill_messages_every=1.5, messages_downtime=0.3, service_env=SHIPPED,
                        log_dir=tmp_path)

    report = await run_soak(config)

    t = report.tally
    assert (t.lost, t.duplicated, t.unexpected, t.uuid_mismatches) == (0, 0, 0, 0), report.render()
    assert report.passed, report.render()
    # The faults happened, and the system had to work around them.
    assert t.acknowledged > 50
    assert report.faults["proxy_dropped"] > 0
    assert report.faults["kills"]["messages"] >= 1
    assert report.evidence["facade_retries"] > 0
    assert report.evidence["duplicates_ignored"] > 0  # a retry after a dropped reply, deduplicated
    assert report.outcomes.get("http-503", 0) + report.faults["proxy_errored"] > 0
    # Every process was stopped, cleanly.
    assert {name: s["exit"] for name, s in report.shutdown.items()} == {
        "facade": 0, "messages": 0, "logging": 0}
    assert sum(report.evidence["tracebacks"].values()) == 0
    assert report.picture == str(tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.e2e
async def test_kill_logging_counts_its_losses_apart(tmp_path: Path) -> None:
    """Killing logging loses what it held; that is reported, and everything sent after the restart
    is still held to the strict rule. (Network faults are limited to dropped replies here, so that
    the breaker does not refuse everything sent after the restart.)"""
    config = SoakConfig(duration=6.0, concurrency=4, seed=5, phases=("clean", "drops"),
                        phase_min=0.4, phase_max=0.8,
                        kill_messages_every=3.0, messages_downtime=0.3, kill_logging=True,
                        kill_logging_every=2.0, service_env=SHIPPED, log_dir=tmp_path)

    report = await run_soak(config)

    t = report.tally
    assert report.faults["kills"]["logging"] >= 1, explain(report)
    assert report.faults["proxy_dropped"] > 0, explain(report)
    assert t.lost_with_logging_restart > 0, explain(report)
    assert 0 < t.checked_acknowledged < t.acknowledged, explain(report)
    assert (t.lost, t.duplicated, t.unexpected, t.uuid_mismatches) == (0, 0, 0, 0), explain(report)
    assert report.passed, explain(report)
    assert "lost with logging restart" in report.render()
