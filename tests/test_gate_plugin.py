"""The gate as users meet it: comparability of runs, bad gate input, the headline."""

from __future__ import annotations

import json

import pytest

from tests.helpers import Project, replay_rows, short_benchmark

OUT = "--expert-bench-report-dir=reports/out"
SAVE = "--expert-bench-save-baseline"

TIMED_YAML = short_benchmark(
    "mini", "  latency_p95_ms: {of: latency_ms, agg: p95, direction: lower, unit: ms%s}\n"
)


EXPERT = """
import pathlib
import time


def answer(prompt):
    delay = pathlib.Path("delay_ms.txt")
    time.sleep(float(delay.read_text()) / 1000 if delay.exists() else 0)
    expression = prompt.removeprefix("What is ").removesuffix("?").replace("x", "*")
    return f"The answer is {int(eval(expression))}."
"""


def live_project(project: Project, metric_options: str = "") -> Project:
    """A model timed for real (a Python target), so that its latency is the setup's."""
    project.write("mini.yaml", TIMED_YAML % metric_options)
    project.pytester.makepyfile(expert=EXPERT)
    project.targets({"demo": {"kind": "python", "function": "expert:answer"}})
    project.pytester.makeini("[pytest]\npythonpath = .\n")
    return project


def slow_down(project: Project, delay_ms: float) -> None:
    (project.root / "delay_ms.txt").write_text(str(delay_ms))


def test_latency_across_a_changed_concurrency_is_not_compared(project: Project) -> None:
    live_project(project)
    assert project.run("--expert-bench=quick", "--expert-bench-concurrency=1", SAVE, OUT).ret == 0
    slow_down(project, 60.0)  # much slower, as at a higher load
    result = project.run("--expert-bench=quick", "--expert-bench-concurrency=8", OUT)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["NOT COMPARED mini.latency_p95_ms: concurrency 1 → 8: timing not comparable"]
    )
    rows = project.results()
    assert project.metric(rows, "mini.latency_p95_ms")["status"] == "not_compared"
    assert project.metric(rows, "mini.accuracy")["status"] == "ok"
    same = project.run("--expert-bench=quick", "--expert-bench-concurrency=1", OUT)
    assert same.ret == 1  # at the baseline's concurrency the slowdown is a regression
    same.stdout.fnmatch_lines(["REGRESSION mini.latency_p95_ms: *"])


def test_a_timing_metric_may_opt_out_of_the_setup_check(project: Project) -> None:
    live_project(project, ", across_setups: true")
    project.run("--expert-bench=quick", "--expert-bench-concurrency=1", SAVE, OUT)
    # Far slower than any baseline latency a loaded machine adds (the paired test needs
    # every one of the 6 examples slower: one baseline answer held up 60 ms made it flaky)
    slow_down(project, 250.0)
    result = project.run("--expert-bench=quick", "--expert-bench-concurrency=8", OUT)
    assert result.ret == 1
    assert project.metric(project.results(), "mini.latency_p95_ms")["status"] == "regression"


def test_a_recording_keeps_its_latencies_whatever_the_concurrency(project: Project) -> None:
    project.write("mini.yaml", TIMED_YAML % "")
    project.run("--expert-bench=quick", "--expert-bench-concurrency=1", SAVE, OUT)
    project.run("--expert-bench=quick", "--expert-bench-concurrency=8", OUT)
    assert project.metric(project.results(), "mini.latency_p95_ms")["status"] == "ok"


def test_a_changed_generation_is_not_compared_and_says_why(project: Project) -> None:
    project.run("--expert-bench=quick", SAVE, OUT)
    yaml = (project.bench_dir / "mini.yaml").read_text()
    project.write("mini.yaml", yaml.replace("{temperature: 0}", "{temperature: 0.7}"))
    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2", "q3", "q4"]))
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == 0  # a worse score under other settings is not a regression
    result.stdout.fnmatch_lines(["*note: generation: temperature 0 → 0.7: not comparable*"])
    result.assert_outcomes(passed=6, skipped=1)  # the gate: nothing compared
    assert project.metric(project.results(), "mini.accuracy")["status"] == "not_compared"
    summary = (project.report_dir() / "summary.md").read_text()
    assert summary.startswith("## pytest-expertbench\n\nGate passed: 0 regressions, 1 not compared")


def test_a_baseline_without_a_context_is_still_compared(project: Project) -> None:
    project.run("--expert-bench=quick", SAVE, OUT)
    path = project.root / "baselines" / "demo" / "quick" / "mini.json"
    doc = json.loads(path.read_text())
    del doc["context"]  # as written before the context was recorded (the shipped ones)
    path.write_text(json.dumps(doc))
    project.run("--expert-bench=quick", OUT)
    assert project.metric(project.results(), "mini.accuracy")["status"] == "ok"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--expert-bench-threshold=50", "a relative threshold is at most 1 (100 %), got 50.0"),
        ("--expert-bench-threshold=500%", "a relative threshold is at most 1 (100 %)"),
        ("--expert-bench-threshold=-0.1", "expected a fraction (0.05)"),
        ("--expert-bench-threshold=nan", "expected a fraction (0.05)"),
        ("--expert-bench-threshold=five", "expected a fraction (0.05)"),
        ("--expert-bench-alpha=0", "--expert-bench-alpha: expected a number between 0 and 1"),
        ("--expert-bench-alpha=nan", "--expert-bench-alpha: expected a number between 0 and 1"),
        ("--expert-bench-alpha=x", "--expert-bench-alpha: expected a number between 0 and 1"),
        ("--expert-bench-coverage=1.5", "--expert-bench-coverage: expected a number from 0 to 1"),
        ("--expert-bench-gate=strict", "--expert-bench-gate: expected threshold, significant"),
    ],
)
def test_bad_gate_options_stop_the_run_before_anything_runs(
    project: Project, option: str, message: str
) -> None:
    result = project.run("--expert-bench=quick", option, OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert not project.report_dir().exists()


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("threshold: 50", "metrics.accuracy.threshold: a relative threshold is at most 1"),
        ("threshold: {rel: -1}", "metrics.accuracy.threshold: expected a fraction"),
        ("alpha: 1.5", "metrics.accuracy.alpha: expected a number between 0 and 1"),
        ("gate: sometimes", "metrics.accuracy.gate: expected threshold, significant or both"),
        ("across_setups: maybe", "metrics.accuracy.across_setups: expected true or false"),
    ],
)
def test_bad_gate_keys_in_a_benchmark_name_the_file_and_key(
    project: Project, metric: str, message: str
) -> None:
    yaml = (project.bench_dir / "mini.yaml").read_text()
    project.write(
        "mini.yaml",
        yaml.replace(
            "accuracy: {of: numeric_match, agg: mean, direction: higher, unit: ratio}",
            f"accuracy: {{of: numeric_match, agg: mean, direction: higher, {metric}}}",
        ),
    )
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "mini.yaml" in result.stderr.str() and message in result.stderr.str()


def test_an_ini_file_sets_the_gate(project: Project) -> None:
    project.run("--expert-bench=quick", SAVE, OUT)
    project.set_replay(replay_rows("mini", wrong=["q0", "q2"]))
    assert project.run("--expert-bench=quick", OUT).ret == 0  # two of six: inconclusive
    project.pytester.makeini("[pytest]\nexpert_bench_gate = threshold\n")
    assert project.run("--expert-bench=quick", OUT).ret == 1
    assert project.run("--expert-bench=quick", "--expert-bench-gate=both", OUT).ret == 0


def test_names_with_dots_are_names_not_paths(project: Project) -> None:
    project.targets({"qwen2.5-7b": {"kind": "replay", "path": "recorded/demo.jsonl"}}, "qwen2.5-7b")
    yaml = (project.bench_dir / "mini.yaml").read_text()
    project.write("mini.yaml", yaml.replace("  accuracy: {", "  accuracy.v2: {"))
    assert project.run("--expert-bench=quick", SAVE, OUT).ret == 0
    assert (project.root / "baselines" / "qwen2.5-7b" / "quick" / "mini.json").is_file()
    again = project.run("--expert-bench=quick", OUT)
    assert again.ret == 0
    assert project.metric(project.results(), "mini.accuracy.v2")["status"] == "ok"


VERSIONED_SCORER = """
from pytest_expertbench.records import Score


def pytest_expertbench_register_scorers(register):
    def factory(options, context):
        def right(completion, example):
            return Score(1.0)

        right.version = {version}
        return right

    register("always_right", factory)
"""


def test_a_scorer_whose_rule_changed_is_not_compared(project: Project) -> None:
    """Same name, same options, another ``version``: its scores mean something else."""
    project.write(
        "mini.yaml",
        short_benchmark("mini", "  right: {of: always_right, direction: higher}\n").replace(
            "scorers: [", "scorers: [always_right, "
        ),
    )
    project.pytester.makeconftest(VERSIONED_SCORER.format(version=1))
    assert project.run("--expert-bench=quick", SAVE, OUT).ret == 0
    same = project.run("--expert-bench=quick", OUT)
    assert project.metric(project.results(), "mini.right")["status"] == "ok", same.stdout.str()
    project.pytester.makeconftest(VERSIONED_SCORER.format(version=2))
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == 0
    assert project.metric(project.results(), "mini.right")["status"] == "not_compared"
    result.stdout.fnmatch_lines(["*scorers changed: not comparable*"])
