"""The adaptive concurrency limit against simulated servers (tests/support/simulated_server.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pytest_expertbench.adaptive import AdaptiveLimit, FixedLimit, limit_for
from pytest_expertbench.records import TargetError
from tests.helpers import Project, write_jsonl
from tests.support.fake_openai import FakeOpenAI
from tests.support.simulated_server import Clock, Simulation


def test_a_queueing_server_gets_its_capacity_and_no_more() -> None:
    simulation = Simulation("queue", capacity=32, service_s=0.2)
    simulation.run(60)
    assert simulation.limit.settled == 32
    assert simulation.answered / 60 >= 0.97 * 32 / 0.2
    assert simulation.limit.peak > 32  # it looked past the capacity and came back


def test_it_reaches_the_capacity_within_a_few_rounds() -> None:
    simulation = Simulation("queue", capacity=32, service_s=0.2)
    simulation.run(1319 * 0.2 / 32)  # the time 1319 answers take at the capacity
    assert simulation.answered >= 0.92 * 1319  # 32 in flight after 5 rounds of 0.2 s
    assert any(at <= 1.25 and limit == 32 for at, limit in simulation.limits)


@pytest.mark.parametrize("capacity", [5, 24, 100])
def test_it_settles_near_any_capacity(capacity: int) -> None:
    simulation = Simulation("queue", capacity=capacity, service_s=0.1)
    simulation.run(60)
    # Without a 429 or 503 it never goes below where it starts (8): nothing to compare.
    assert min(capacity, 8) <= simulation.limit.settled <= max(8, 1.5 * capacity)


def test_429_past_the_capacity_makes_it_back_off() -> None:
    simulation = Simulation("reject", capacity=32, service_s=0.2)
    simulation.run(60)
    assert simulation.limit.limit <= 32
    assert simulation.rejected < 0.05 * simulation.answered
    assert simulation.answered / 60 >= 0.7 * 32 / 0.2


def test_a_batching_server_is_given_more_while_throughput_grows() -> None:
    simulation = Simulation("batch", capacity=64, service_s=0.2)
    simulation.run(60)
    assert simulation.limit.settled >= 64


def test_never_above_the_maximum() -> None:
    simulation = Simulation("batch", capacity=1000, service_s=0.2, maximum=20)
    simulation.run(30)
    assert simulation.limit.peak == 20
    assert simulation.limit.settled == 20


def test_it_is_raised_only_when_requests_waited_for_a_slot() -> None:
    clock = Clock()
    limit = AdaptiveLimit(256, clock=clock)
    for _ in range(100):  # one request at a time: the limit of 8 is never reached
        assert limit.may_start(0)
        clock.now += 0.1
        limit.heard(0.1, None)
    assert limit.limit == 8


def test_an_overload_answer_to_an_old_request_does_not_cut_twice() -> None:
    clock = Clock(now=10.0)
    limit = AdaptiveLimit(256, clock=clock)
    clock.now += 1.0
    limit.heard(0.5, TargetError("HTTP 503", status=503))  # sent at 10.5
    assert limit.limit == 6
    clock.now += 0.1
    limit.heard(0.5, TargetError("HTTP 429", status=429))  # sent before the first cut
    assert limit.limit == 6
    limit.heard(0.5, TargetError("HTTP 500", status=500))  # not an overload
    assert limit.limit == 6


def test_a_fixed_limit_is_the_number() -> None:
    fixed = limit_for(3, adaptive=False)
    assert isinstance(fixed, FixedLimit)
    assert [fixed.may_start(n) for n in range(5)] == [True, True, True, False, False]
    assert fixed.figures() == (0, 0)
    assert isinstance(limit_for(3, adaptive=True), AdaptiveLimit)


# ---------------------------------------------------------------------------- runs

MANY = """\
name: many
dataset: {file: data/many.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
generation: {temperature: 0}
scorers: [{numeric_match: {target: "{answer}"}}]
metrics:
  accuracy: {of: numeric_match, direction: higher}
"""
OUT = "--expert-bench-report-dir=reports/out"
SETTLED = re.compile(r"concurrency auto: settled at (\d+) \(peak (\d+)\)")


def many_examples(project: Project, n: int) -> None:
    rows = [{"id": f"q{i}", "question": f"question {i}", "answer": str(i)} for i in range(n)]
    write_jsonl(project.bench_dir / "data" / "many.jsonl", rows)
    project.write("many.yaml", MANY)
    (project.bench_dir / "mini.yaml").unlink()


def settled_and_peak(output: str) -> tuple[int, int]:
    # the last: a slow run prints progress lines that start so too
    line = [line for line in output.splitlines() if line.startswith("requests many:")][-1]
    found = SETTLED.search(line)
    assert found is not None, line
    return int(found.group(1)), int(found.group(2))


def live_target(url: str, **keys: Any) -> dict[str, Any]:
    return {"live": {"kind": "openai", "base_url": url, "model": "m", **keys}}


def test_auto_raises_the_concurrency_a_server_takes(project: Project) -> None:
    # 64 answers a second at most: slow enough for a loaded test machine to keep up.
    many_examples(project, 200)
    with FakeOpenAI(latency_s=0.25, capacity=16) as server:
        project.targets(live_target(server.base_url, concurrency="auto"), "live")
        result = project.run("--expert-bench=quick", OUT)
        most = server.max_concurrent
    result.assert_outcomes(passed=200, skipped=1)
    settled, peak = settled_and_peak(result.stdout.str())
    assert 12 <= settled <= 32 and peak >= 16
    assert most >= 16  # twice the start of 8 reached the server at once


def test_auto_from_the_command_line_stops_at_max_concurrency(project: Project) -> None:
    many_examples(project, 100)
    with FakeOpenAI(latency_s=0.2) as server:  # 60 answers a second at 12: CPU to spare
        project.targets(live_target(server.base_url, max_concurrency=12), "live")
        result = project.run("--expert-bench=quick", "--expert-bench-concurrency=auto", OUT)
        most = server.max_concurrent
    result.assert_outcomes(passed=100, skipped=1)
    settled, peak = settled_and_peak(result.stdout.str())
    # It goes up to the maximum and never past it; whether the raise to 12 is kept depends
    # on the answers' latency, which a loaded machine (-n 2 of the whole suite) changes.
    assert peak == 12 and settled in (8, 12)
    assert most == 12


def test_auto_backs_off_on_429_and_503(project: Project) -> None:
    many_examples(project, 40)
    with FakeOpenAI(latency_s=0.02) as server:
        server.script(match="question", faults=["429", "503"] * 8)
        project.targets(live_target(server.base_url, concurrency="auto"), "live")
        result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=40, skipped=1)
    settled, peak = settled_and_peak(result.stdout.str())
    assert peak == 8 and settled < 8


def test_a_fixed_concurrency_says_nothing_of_auto(project: Project) -> None:
    many_examples(project, 10)
    with FakeOpenAI() as server:
        project.targets(live_target(server.base_url, concurrency=4), "live")
        result = project.run("--expert-bench=quick", "--expert-bench-concurrency=auto", OUT)
    result.assert_outcomes(passed=10, skipped=1)  # the target's own number wins
    assert "concurrency auto" not in result.stdout.str()


@pytest.mark.parametrize(
    ("keys", "key", "message"),
    [
        ({"concurrency": "fast"}, "targets.live.concurrency", "whole number"),
        ({"concurrency": 0}, "targets.live.concurrency", "1 or more, or auto"),
        ({"max_concurrency": 0}, "targets.live.max_concurrency", "1 or more"),
    ],
)
def test_a_bad_concurrency_names_the_file_and_key(
    project: Project, keys: dict[str, Any], key: str, message: str
) -> None:
    project.targets(live_target("http://127.0.0.1:9/v1", **keys), "live")
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret != 0
    text = result.stdout.str() + result.stderr.str()
    assert f"targets.yaml: {key}:" in text and message in text


def test_a_bad_concurrency_option_is_a_usage_error(project: Project) -> None:
    result = project.run("--expert-bench=quick", "--expert-bench-concurrency=fast", OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--expert-bench-concurrency: expected a whole number" in result.stderr.str()
