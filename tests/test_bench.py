"""The benchmark's own logic, on fabricated figures: ratios, verdicts, tables, plans, summaries."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from aiohttp import web

from bench import profile, run
from bench.bare import create_app as bare_app
from bench.load import ROOT, LoadError, parse_summary, percentile
from bench.report import RESULTS_HEADING, checks, document, tables, throughput_table
from bench.results import (
    EVENTS_SYSTEM,
    REPLICA_COUNTS,
    LoadResult,
    Machine,
    Plan,
    RedisResult,
    Report,
    StoreResult,
    WrapperResult,
    bare_beside,
    redis_system,
)
from bench.run import System, sequential, throughput
from resilience.runtime.web import Handler
from tests.conftest import AiohttpServer

BARE_POST, BARE_GET = 1000.0, 2000.0
MACHINE = Machine(cpu="test CPU", cores=2, python="CPython 3.11", libraries="aiohttp 3",
                  load_tool="wrk 4 (1 thread)", date="2026-01-01")


def load(rps: float, p99_ms: float = 10.0) -> LoadResult:
    """A 10 s load run that served ``rps`` successful requests per second."""
    return LoadResult(requests=round(rps * 10), seconds=10.0, http_errors=0, socket_errors=0,
                      p50_ms=5.0, p99_ms=p99_ms)


def fabricated(*, post: float = 450.0, get: float = 600.0, p99_ms: float = 25.0,
               bytes_per_message: int = 300, wrapped_us: float = 88.0, redis_post: float = 300.0,
               events_post: float = 250.0, redis_skipped: str | None = None,
               events_skipped: str | None = None) -> Report:
    """A report with the given facade figures against bare rates of 1,000 POST/s and 2,000 GET/s;
    the defaults sit exactly on every target."""
    figures = {("bare", "POST"): load(BARE_POST), ("bare", "GET"): load(BARE_GET),
               ("facade", "POST"): load(post, p99_ms), ("facade", "GET"): load(get)}
    redis = RedisResult(skipped=redis_skipped)
    if redis_skipped is None:
        for replicas in REPLICA_COUNTS:
            figures[(redis_system(replicas), "POST")] = load(redis_post)
            figures[(redis_system(replicas), "GET")] = load(redis_post * 2)
            figures[(bare_beside(redis_system(replicas)), "POST")] = load(BARE_POST)
            figures[(bare_beside(redis_system(replicas)), "GET")] = load(BARE_GET)
        cpu_us = {(redis_system(1), "POST"): {"facade": 300.0, "logging": 100.0, "messages": 1.0}}
        if events_skipped is None:
            figures[(EVENTS_SYSTEM, "POST")] = load(events_post)
            figures[(EVENTS_SYSTEM, "GET")] = load(events_post * 2)
            figures[(bare_beside(EVENTS_SYSTEM), "POST")] = load(BARE_POST)
            figures[(bare_beside(EVENTS_SYSTEM), "GET")] = load(BARE_GET)
            cpu_us[(EVENTS_SYSTEM, "POST")] = {"facade": 360.0, "logging": 100.0, "messages1": 20.0,
                                                "messages2": 20.0, "nats1": 30.0, "nats2": 10.0,
                                                "nats3": 10.0}
        redis = RedisResult(version="7.0.15", stored={n: 20_000 for n in REPLICA_COUNTS},
                            bytes_per_message={n: 118.0 for n in REPLICA_COUNTS},
                            events_skipped=events_skipped, cpu_us=cpu_us)
    cpu = {(system, verb): {"facade": 300.0, "logging": 100.0, "messages": 50.0}
           for system in ("bare", "facade") for verb in ("POST", "GET")}
    return Report(
        machine=MACHINE, plan=Plan(), load=figures, cpu_us=cpu,
        store=StoreResult(baseline_rss=50_000_000,
                          rss={1_000: 50_000_000 + 1_000 * bytes_per_message},
                          get_median_ms={1_000: 1.5}),
        wrapper=WrapperResult(calls=100, raw_us=80.0, wrapped_us=wrapped_us, raw_cpu_us=40.0,
                              wrapped_cpu_us=44.0, policy_only_us=5.0, metrics_only_us=2.0),
        redis=redis, sequential_ms={"bare": (0.41, 0.9), "facade": (1.456, 3.2)})


def test_ratio_is_the_systems_rate_over_the_bare_rate_of_the_same_verb() -> None:
    """A facade at 500 POST/s and 500 GET/s against a bare 1,000 and 2,000 has ratios 0.5 and 0.25."""
    report = fabricated(post=500.0, get=500.0)

    assert (report.ratio("facade", "POST"), report.ratio("facade", "GET")) == (0.5, 0.25)


def test_a_redis_ratio_is_to_the_bare_runs_taken_in_turn_with_it() -> None:
    """Redis with 1 replica at 300 POST/s, beside bare runs of 600 POST/s (the first bare runs
    did 1,000), has a ratio of 0.5; a bare system's ratio is 1."""
    report = fabricated(redis_post=300.0)
    report.load[(bare_beside(redis_system(1)), "POST")] = load(600.0)

    assert report.ratio(redis_system(1), "POST") == 0.5
    assert report.ratio(bare_beside(redis_system(1)), "POST") == 1.0


def test_slices_of_a_run_merge_into_one() -> None:
    """Three slices add up their requests, errors and seconds; p50 and p99 are the slices' medians."""
    slices = [LoadResult(requests=n, seconds=5.0, http_errors=e, socket_errors=1, p50_ms=p50,
                         p99_ms=p99)
              for n, e, p50, p99 in ((100, 0, 2.0, 9.0), (300, 4, 1.0, 30.0), (200, 0, 3.0, 10.0))]

    assert LoadResult.merged(slices) == LoadResult(requests=600, seconds=15.0, http_errors=4,
                                                   socket_errors=3, p50_ms=2.0, p99_ms=10.0)


def test_plan_slices_each_run_into_rounds_of_whole_seconds() -> None:
    """15 s in 3 rounds is 5 s slices; a run shorter than its rounds still gets 1 s slices."""
    assert Plan().slice_seconds == 5
    assert Plan(duration=2).slice_seconds == 1


def test_throughput_takes_the_systems_in_turn_round_by_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Per verb: each system warmed, then every round drives each system once, in turn; each
    system's figure is its slices merged."""
    driven: list[tuple[str, str, int]] = []

    def drive(tool: str, url: str, verb: str, *, connections: int, duration: int) -> LoadResult:
        driven.append((url.split("/")[2], verb, duration))
        return load(100.0 if "bare" in url else 40.0)

    async def seed(base_url: str, count: int) -> None:
        return None

    monkeypatch.setattr(run, "drive", drive)
    monkeypatch.setattr(run, "seed", seed)
    plan = Plan(duration=6, warmup=1, rounds=3)
    systems = [System("facade", "http://facade"), System("bare", "http://bare")]
    result, _ = throughput(plan, systems, lambda line: None)

    one_verb = [("facade", 1), ("bare", 1)] + [("facade", 2), ("bare", 2)] * 3
    assert driven == [(host, verb, seconds) for verb in ("GET", "POST") for host, seconds in one_verb]
    assert result[("facade", "POST")].requests == 3 * 400
    assert result[("bare", "GET")].seconds == 30.0


def test_single_requests_take_the_systems_in_turn_and_pool_their_latencies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """30 sequential POSTs in 3 rounds are 10 per system per round, in turn; the median and p99
    are of every latency of a system together."""
    rounds: list[tuple[str, int]] = []

    async def sequential(base_url: str, count: int) -> list[float]:
        rounds.append((base_url, count))
        return [float(len(rounds))] * count  # round i's latencies are all i ms

    monkeypatch.setattr(run, "sequential", sequential)
    systems = [System("bare", "http://bare"), System("facade", "http://facade")]
    figures = run.single_requests(Plan(sequential_posts=30, rounds=3), systems, lambda line: None)

    assert rounds == [("http://bare", 10), ("http://facade", 10)] * 3
    assert figures == {"bare": (3.0, 5.0), "facade": (4.0, 6.0)}


def test_rate_counts_only_successful_responses() -> None:
    """Responses with an HTTP error status do not count towards the rate."""
    result = LoadResult(requests=1_000, seconds=2.0, http_errors=200, socket_errors=5,
                        p50_ms=1.0, p99_ms=2.0)

    assert (result.rps, result.errors) == (400.0, 205)


def test_every_target_passes_when_met_exactly() -> None:
    """Figures exactly at each target (0.45, 0.30, 25 ms, 300 B, 10 %, Redis 0.30, events 0.25)
    all pass."""
    assert [check.verdict for check in checks(fabricated())] == ["PASS"] * 7


def test_every_target_misses_just_beyond_it() -> None:
    """Figures just on the wrong side of each target all miss."""
    report = fabricated(post=449.0, get=599.0, p99_ms=25.1, bytes_per_message=301,
                        wrapped_us=88.1, redis_post=299.0, events_post=249.0)

    assert [check.verdict for check in checks(report)] == ["MISS"] * 7


def test_redis_target_is_not_run_when_the_phase_was_skipped() -> None:
    """Without a Redis phase its target is NOT RUN (neither passed nor missed) and the tables say why."""
    report = fabricated(redis_skipped="redis-server is not on PATH")

    redis_check, events_check = checks(report)[-2:]
    assert (redis_check.passed, redis_check.verdict) == (None, "NOT RUN")
    assert (events_check.passed, events_check.verdict) == (None, "NOT RUN")
    assert "### On Redis\n\nSkipped: redis-server is not on PATH." in tables(report)


def test_redis_section_gives_every_replica_count_and_memory_per_message() -> None:
    """The Redis section has a POST and a GET row per replica count, and Redis bytes per message."""
    text = tables(fabricated(redis_post=350.0))
    cells = [[cell.strip() for cell in line.split("|")[1:3]] for line in text.splitlines()]

    for replicas in ("1 replica", "2 replicas", "3 replicas"):
        assert ["POST /facade", f"facade, {replicas} on Redis"] in cells
        assert ["GET /facade", f"facade, {replicas} on Redis"] in cells
        assert f"{replicas} 118 B (over 20,000)" in text


def test_the_events_run_says_what_an_event_costs_or_why_it_did_not_run() -> None:
    """With events on: its rows, each process's CPU with and without, and the difference per POST;
    without nats-server, NOT RUN and why."""
    text = tables(fabricated())
    cells = [[cell.strip() for cell in line.split("|")[1:3]] for line in text.splitlines()]

    assert ["POST /facade", "facade, 1 replica on Redis, events on"] in cells
    assert "An event costs 149 µs of CPU per POST over the whole cluster" in text
    skipped = fabricated(events_skipped="nats-server is not installed")
    assert checks(skipped)[-1].verdict == "NOT RUN"
    assert "Events run skipped: nats-server is not installed." in tables(skipped)


def test_throughput_table_is_a_pipe_table_with_numbers_right_aligned() -> None:
    """The throughput table is Markdown with its figures right-aligned and each ratio to bare."""
    lines = throughput_table(fabricated(post=500.0)).splitlines()

    assert lines[0].split("|")[1:-1] == [
        " request      ", " served by                    ", "   requests/s ", "   p50 ms ",
        "   p99 ms ", "   errors ", "   ratio to bare "]
    assert lines[1] == "|:-------------|:-----------------------------|-------------:|---------:|" \
                       "---------:|---------:|----------------:|"
    assert lines[3] == "| POST /facade | facade -> logging + messages |          500 |     5.00 |" \
                       "    25.00 |        0 |        **0.50** |"


def test_document_keeps_the_description_and_replaces_the_results() -> None:
    """Writing the document keeps everything above ``## Results`` and replaces what is below."""
    report = fabricated()
    current = "# Benchmark\n\nHow it is measured.\n\n## Results\n\nold figures\n"

    written = document(report, current)

    assert written == "# Benchmark\n\nHow it is measured.\n\n## Results\n\n" + tables(report)


def test_benchmark_page_has_one_results_heading_for_write_to_replace_below() -> None:
    """docs/benchmark.md has exactly one ``## Results`` line, where ``--write`` puts the new figures."""
    page = (ROOT / "docs" / "benchmark.md").read_text()

    assert page.splitlines().count(RESULTS_HEADING) == 1


def test_quick_plan_scales_every_phase_down() -> None:
    """``--quick`` shortens the load runs and shrinks the store, the samples and the wrapper calls."""
    full = Plan.build(tool="wrk", quick=False, duration=None, connections=32)
    quick = Plan.build(tool="wrk", quick=True, duration=None, connections=32)

    def scale(plan: Plan) -> tuple[int, int, int, int]:
        return plan.duration, plan.warmup, max(plan.store_sizes), plan.wrapper_calls

    assert (scale(full), scale(quick)) == ((15, 2, 100_000, 5_000), (3, 1, 10_000, 1_000))
    assert quick.get_samples < full.get_samples


def test_explicit_duration_wins_over_quick() -> None:
    """``--duration`` sets the load runs' length whether or not ``--quick`` is given."""
    assert Plan.build(tool="aiohttp", quick=True, duration=7, connections=8).duration == 7


def test_summary_line_becomes_a_load_result() -> None:
    """The ``BENCH {...}`` line wrk.lua and the bundled generator print is read in ms and seconds."""
    output = ('Running 3s test\nBENCH {"requests": 3000, "duration_us": 3000000, "http_errors": 3, '
              '"socket_errors": 1, "p50_us": 4200, "p99_us": 18500}\n')

    assert parse_summary(output) == LoadResult(requests=3000, seconds=3.0, http_errors=3,
                                               socket_errors=1, p50_ms=4.2, p99_ms=18.5)


def test_output_without_a_summary_line_is_a_load_error() -> None:
    """A load tool that printed no summary fails the run with what it printed."""
    with pytest.raises(LoadError, match=r"no summary line.*connection refused"):
        parse_summary("unable to connect: connection refused\n")


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..10 is 5, p99 is 10, and no samples give 0."""
    values = [float(n) for n in range(1, 11)]

    assert (percentile(values, 0.50), percentile(values, 0.99), percentile([], 0.5)) == (5.0, 10.0, 0.0)


def test_store_memory_per_message_is_growth_over_the_largest_size() -> None:
    """Bytes per message is the RSS growth from the baseline at the largest size, over that size."""
    store = StoreResult(baseline_rss=1_000, rss={10: 9_000, 100: 26_000}, get_median_ms={10: 1.0, 100: 1.0})

    assert store.bytes_per_message == 250.0


def test_redis_phase_is_skipped_without_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-server on PATH the Redis phase has a reason to skip that says how to get it."""
    monkeypatch.setattr(run.shutil, "which", lambda name: None)

    assert run.redis_skip_reason() == "redis-server is not on PATH (Debian: apt-get install redis-server)"


def test_profile_counts_samples_by_component_activity_and_function() -> None:
    """py-spy's collapsed stacks are summed per innermost function, component and activity."""
    collapsed = ("run (aiohttp/web.py:10);emit (structlog/_log.py:5);dumps (orjson:1) 3\n"
                 "run (aiohttp/web.py:10);call (tenacity/__init__.py:7) 1\n")

    summary = profile.summarize(collapsed)

    assert summary.samples == 4
    assert summary.self_time["dumps (orjson)"] == 3
    assert summary.components == {"orjson": 3, "tenacity": 1}
    assert summary.activities["retry loop (tenacity)"] == 1
    assert summary.activities["log lines (structlog: processors, JSON, write)"] == 3


def test_profile_without_py_spy_says_so_and_leaves_no_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without py-spy, ``python -m bench.profile`` exits with how to get it and makes no directory."""
    monkeypatch.setattr(profile.shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    with pytest.raises(SystemExit, match="py-spy not found: pip install py-spy"):
        profile.main([])

    assert list(tmp_path.iterdir()) == []


def test_the_single_request_table_gives_each_systems_median_and_p99() -> None:
    """The sequential POSTs' latency is printed per system, in milliseconds to the hundredth."""
    printed = tables(fabricated())
    section = printed.split("### Single request (2,100 sequential POSTs from one client, in 3 rounds")[1]
    section = section.split("###")[0]
    assert "| bare handler (1 process)     |        0.41 |     0.90 |" in section
    assert "| facade -> logging + messages |        1.46 |     3.20 |" in section


async def test_sequential_posts_time_one_request_at_a_time(aiohttp_server: AiohttpServer) -> None:
    """Against a real bare handler, ``sequential`` sends warm-up plus the count, one at a time
    (never two in flight), and gives the latency of each counted one."""
    app = bare_app()
    in_flight, most, served = 0, 0, 0

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight, most, served
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await handler(request)
        finally:
            in_flight -= 1
            served += 1

    app.middlewares.append(count)
    server = await aiohttp_server(app)
    latencies = await sequential(str(server.make_url("")).rstrip("/"), 50)
    assert (served, most) == (55, 1)
    assert len(latencies) == 50
    assert min(latencies) > 0
