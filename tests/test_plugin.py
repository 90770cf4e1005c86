"""The plugin as users run it: pytest sessions on a small benchmark project."""

from __future__ import annotations

import json

import pytest

from tests.helpers import MINI_YAML, QUESTIONS, Project, replay_rows, short_benchmark

OUT = "--expert-bench-report-dir=reports/out"


def test_without_the_option_the_plugin_adds_nothing(project: Project) -> None:
    project.pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = project.run()
    result.assert_outcomes(passed=1)
    assert "expertbench:" not in result.stdout.str()  # no header line, no summary
    assert not (project.root / "reports").exists()


def test_every_example_is_an_item_with_a_readable_id(project: Project) -> None:
    result = project.run("--expert-bench=quick", "--collect-only", "-q")
    lines = [line for line in result.stdout.lines if "::" in line]
    examples = [f"benchmarks_suites/mini.yaml::mini[{q}]" for q, _, _ in QUESTIONS]
    assert lines == [*examples, "benchmarks_suites/mini.yaml::mini::gate"]  # the gate last


def test_a_run_scores_aggregates_and_writes_reports(project: Project) -> None:
    project.set_replay(replay_rows("mini", wrong=["q1", "q4"]))
    result = project.run("--expert-bench=quick", OUT)
    # a wrong answer is a score, not a failure; the gate skips: no baseline yet
    result.assert_outcomes(passed=6, skipped=1)
    assert result.ret == 0
    rows = project.results()
    examples = [r for r in rows if r["type"] == "example"]
    assert [r["id"] for r in examples] == [q for q, _, _ in QUESTIONS]
    assert {r["id"]: r["scores"]["numeric_match"] for r in examples}["q1"] == 0.0
    accuracy = project.metric(rows, "mini.accuracy")
    assert accuracy["value"] == pytest.approx(4 / 6)
    assert accuracy["samples_used"] == 6
    assert accuracy["status"] == "new"
    low, high = accuracy["ci"]
    assert low < 4 / 6 < high
    summary = (project.report_dir() / "summary.md").read_text()
    assert "accuracy" in summary and "mini" in summary
    assert "expertbench" in result.stdout.str()
    assert not (project.report_dir() / "results.partial.jsonl").exists()


def test_a_regression_fails_the_session_even_when_every_item_passed(project: Project) -> None:
    saved = project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    saved.assert_outcomes(passed=6, skipped=1)
    assert saved.ret == 0
    baseline = project.root / "baselines" / "demo" / "quick" / "mini.json"
    doc = json.loads(baseline.read_text())
    assert doc["metrics"]["accuracy"]["value"] == 1.0
    assert doc["examples"]["q0"]["numeric_match"] == 1.0
    assert doc["dataset"]["n"] == 6

    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2", "q4", "q5"]))
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=6, failed=1)  # every example passed; the gate failed
    assert result.ret == 1
    result.stdout.fnmatch_lines(["FAILED benchmarks_suites/mini.yaml::mini::gate*"])
    result.stdout.fnmatch_lines(["*REGRESSION mini.accuracy*1.0000*0.1667*p = 0.031*McNemar*"])
    row = project.metric(project.results(), "mini.accuracy")
    assert (row["status"], row["test"], row["p_value"]) == ("regression", "mcnemar", 1 / 32)
    summary = (project.report_dir() / "summary.md").read_text()
    assert "Gate failed: 1 regression in 1 benchmark." in summary
    assert "**Flipped from right to wrong** (5): `q0`, `q1`, `q2`, `q4`, `q5`" in summary
    assert json.loads(baseline.read_text()) == doc  # the baseline is untouched


def test_a_drop_that_n_cannot_tell_from_noise_is_inconclusive(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    project.set_replay(replay_rows("mini", wrong=["q0", "q2"]))
    result = project.run("--expert-bench=quick", OUT)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "Gate passed: 0 regressions, 1 inconclusive in 1 benchmark.",
            "INCONCLUSIVE mini.accuracy: 1.0000 → 0.6667 (-33.3 %, threshold 5 %, p = 0.25, "
            "exact McNemar): could be noise; n = 6 detects only changes ≥ 83.3 %",
        ]
    )
    row = project.metric(project.results(), "mini.accuracy")
    assert (row["status"], row["band"], row["p_value"]) == ("inconclusive", "regression", 0.25)
    assert row["detectable_rel"] == pytest.approx(5 / 6)
    by_threshold = project.run("--expert-bench=quick", "--expert-bench-gate=threshold", OUT)
    assert by_threshold.ret == 1
    by_threshold.stdout.fnmatch_lines(["*REGRESSION mini.accuracy*"])


def test_a_small_drop_within_the_threshold_passes(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    project.set_replay(replay_rows("mini", wrong=["q3"]))
    strict = project.run("--expert-bench=quick", "--expert-bench-gate=threshold", OUT)
    assert strict.ret == 1  # 1.0 -> 0.833 is a 16.7 % drop
    loose = project.run(
        "--expert-bench=quick", "--expert-bench-gate=threshold", "--expert-bench-threshold=20%", OUT
    )
    assert loose.ret == 0


def test_an_improvement_is_reported_not_failed(project: Project) -> None:
    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2"]))
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    project.set_replay(replay_rows("mini"))
    result = project.run("--expert-bench=quick", "--expert-bench-gate=threshold", OUT)
    assert result.ret == 0
    assert project.metric(project.results(), "mini.accuracy")["status"] == "improvement"
    assert project.run("--expert-bench=quick", OUT).ret == 0  # three of six: inconclusive
    assert project.metric(project.results(), "mini.accuracy")["status"] == "inconclusive"


def test_suite_sample_is_seeded_and_stable(project: Project) -> None:
    first = project.run("--expert-bench=small", "--collect-only", "-q")
    second = project.run("--expert-bench=small", "--collect-only", "-q")
    other_seed = project.run(
        "--expert-bench=small", "--expert-bench-seed=5", "--collect-only", "-q"
    )

    def ids(result: pytest.RunResult) -> list[str]:
        return [line for line in result.stdout.lines if "::" in line]

    assert len(ids(first)) == 4  # three examples and the gate
    assert ids(first)[-1] == "benchmarks_suites/mini.yaml::mini::gate"
    assert ids(first) == ids(second)
    assert ids(other_seed) != ids(first)  # seeds 0 and 5 draw different rows of six


def test_limit_caps_every_benchmark(project: Project) -> None:
    result = project.run("--expert-bench=quick", "--expert-bench-limit=2", "--collect-only", "-q")
    lines = [line for line in result.stdout.lines if "::" in line]
    assert len(lines) == 3  # two examples and the gate
    assert lines[-1] == "benchmarks_suites/mini.yaml::mini::gate"


def test_yaml_markers_become_marks_and_strict_markers_is_clean(project: Project) -> None:
    project.write("heavy.yaml", MINI_WITH_MARKERS)
    project.set_replay(replay_rows("mini") + replay_rows("gpu_mini"))
    result = project.run("--expert-bench=quick", "--strict-markers", "-m", "not gpu", OUT)
    result.assert_outcomes(passed=6, skipped=1, deselected=7)  # gpu_mini's gate is marked too
    rows = project.results()
    assert {r["benchmark"] for r in rows if r["type"] == "example"} == {"mini"}


MINI_WITH_MARKERS = short_benchmark("gpu_mini", "markers: [gpu, slow]\n")


def test_k_selects_examples_and_a_partial_run_is_not_compared(project: Project) -> None:
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    project.set_replay(replay_rows("mini", wrong=["q0"]))
    result = project.run("--expert-bench=quick", "-k", "q0 or q1", OUT)
    result.assert_outcomes(passed=2, deselected=5)  # the gate is not selected
    assert result.ret == 0  # other examples than the baseline's: not compared
    assert "not compared" in result.stdout.str()


def test_x_and_junitxml_behave_as_usual(project: Project) -> None:
    project.write("mini.yaml", MINI_YAML_ITEM_PASS)
    project.set_replay(replay_rows("mini", wrong=["q1"]))
    result = project.run("--expert-bench=quick", "-x", "--junitxml=junit.xml", OUT)
    result.assert_outcomes(passed=1, failed=1)
    xml = (project.root / "junit.xml").read_text()
    assert 'name="mini[q1]"' in xml
    assert "numeric_match = 0 &lt; 1" in xml or "numeric_match = 0 < 1" in xml


MINI_YAML_ITEM_PASS = short_benchmark("mini", "item_pass: {score: numeric_match, min: 1}\n")


def test_item_pass_fails_wrong_items_with_one_line(project: Project) -> None:
    project.write("mini.yaml", MINI_YAML_ITEM_PASS)
    project.set_replay(replay_rows("mini", wrong=["q1"]))
    result = project.run("--expert-bench=quick", OUT)
    result.assert_outcomes(passed=5, failed=1, skipped=1)  # the gate skips: no baseline
    result.stdout.fnmatch_lines(["*mini[[]q1[]]: item_pass: numeric_match = 0 < 1*"])
    assert "Traceback" not in result.stdout.str()


def test_last_failed_reruns_only_the_failed_items(project: Project) -> None:
    project.write("mini.yaml", MINI_YAML_ITEM_PASS)
    project.set_replay(replay_rows("mini", wrong=["q2"]))
    project.pytester.runpytest("--expert-bench=quick", OUT)
    result = project.pytester.runpytest("--expert-bench=quick", "--lf", OUT)
    result.assert_outcomes(failed=1)
    assert "mini[q2]" in result.stdout.str()


EXPERT = """
def answer(prompt):
    expression = prompt.removeprefix("What is ").removesuffix("?").replace("x", "*")
    return f"The answer is {int(eval(expression))}."
"""


def test_record_writes_a_replay_file_that_reproduces_the_run(project: Project) -> None:
    project.pytester.makepyfile(expert=EXPERT)
    project.targets(
        {
            "local": {"kind": "python", "function": "expert:answer"},
            "again": {"kind": "replay", "path": "../recorded.jsonl"},
        },
        default="local",
    )
    project.pytester.makeini("[pytest]\npythonpath = .\n")
    first = project.run("--expert-bench=quick", "--expert-bench-record=recorded.jsonl", OUT)
    first.assert_outcomes(passed=6, skipped=1)
    rows = [json.loads(line) for line in (project.root / "recorded.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {q for q, _, _ in QUESTIONS}
    again = project.run(
        "--expert-bench=quick", "--expert-bench-target=again", "--expert-bench-report-dir=reports/b"
    )
    again.assert_outcomes(passed=6, skipped=1)
    assert project.metric(project.results("b"), "mini.accuracy")["value"] == pytest.approx(
        project.metric(project.results(), "mini.accuracy")["value"]
    )


def test_a_missing_recorded_answer_errors_only_that_item(project: Project) -> None:
    project.set_replay([r for r in replay_rows("mini") if r["id"] != "q3"])
    result = project.run("--expert-bench=quick", OUT)
    # 5 of 6 scored is below the 90 % coverage: the gate fails the metric as incomplete
    result.assert_outcomes(passed=5, errors=1, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*mini[[]q3[]]: model request failed: *q3*",
            "INCOMPLETE mini.accuracy: only 5 of 6 examples scored (below 90%): the rest errored",
        ]
    )
    accuracy = project.metric(project.results(), "mini.accuracy")
    assert accuracy["samples_used"] == 5


def test_an_interrupted_run_keeps_what_it_has_and_saves_no_baseline(project: Project) -> None:
    project.pytester.makeconftest(
        """
        from pytest_expertbench.records import Score

        def stop_at_q3(options, context):
            def score(completion, example):
                if example.id == "q3":
                    raise KeyboardInterrupt
                return Score(1.0)
            return score

        def pytest_expertbench_register_scorers(register):
            register("stop_at_q3", stop_at_q3)
        """
    )
    project.write("mini.yaml", MINI_YAML.replace("metrics:", "  - stop_at_q3: {}\nmetrics:"))
    result = project.run(
        "--expert-bench=quick", "--expert-bench-save-baseline", OUT, subprocess=True
    )  # in-process, the interrupt would stop this test session too
    assert result.ret == pytest.ExitCode.INTERRUPTED
    examples = [r["id"] for r in project.results() if r["type"] == "example"]
    assert examples == ["q0", "q1", "q2"]
    assert not (project.root / "baselines").exists()
    assert "not saved: the run was interrupted" in result.stdout.str()
