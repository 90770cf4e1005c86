"""The gate as a pytest item (…/mini.yaml::mini::gate): JUnit XML, --lf, xdist and -k see it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.helpers import Project, replay_rows

OUT = "--expert-bench-report-dir=reports/out"
GATE = "benchmarks_suites/mini.yaml::mini::gate"
REGRESSION = "REGRESSION mini.accuracy: 1.0000 → 0.1667"


@pytest.fixture
def regressed(project: Project) -> Project:
    """A baseline of six right answers, then five of them wrong: a significant regression
    (exact McNemar p = 1/32) that fails the gate while every example passes."""
    saved = project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    saved.assert_outcomes(passed=6, skipped=1)
    project.set_replay(replay_rows("mini", wrong=["q0", "q1", "q2", "q4", "q5"]))
    return project


def gate_cases(project: Project, name: str = "out.xml") -> tuple[ET.Element, list[ET.Element]]:
    """The JUnit XML's test suite and its test cases that are the mini gate."""
    suite = ET.parse(project.root / name).getroot().find("testsuite")
    assert suite is not None
    cases = [
        case
        for case in suite.iter("testcase")
        if (case.get("classname"), case.get("name")) == ("benchmarks_suites.mini.yaml.mini", "gate")
    ]
    return suite, cases


def assert_failed_gate_in_junit(project: Project) -> None:
    suite, cases = gate_cases(project)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("7", "1", "0")
    assert len(cases) == 1, "the gate is reported once"
    (failure,) = cases[0].findall("failure")
    assert REGRESSION in (failure.get("message") or "")
    assert REGRESSION in (failure.text or "")
    examples = [case for case in suite.iter("testcase") if case.get("name", "").startswith("mini[")]
    assert len(examples) == 6 and not any(case.findall("failure") for case in examples)


def test_a_regression_is_a_failed_gate_in_junit_xml_and_lf_runs_the_benchmark_again(
    regressed: Project,
) -> None:
    # with the cache provider (Project.run turns it off): --lf needs last run's failures
    run = regressed.pytester.runpytest
    result = run("--expert-bench=quick", "--junitxml=out.xml", OUT)
    result.assert_outcomes(passed=6, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"FAILED {GATE} - *", "=*= 1 failed, 6 passed in *s =*="])
    assert_failed_gate_in_junit(regressed)

    again = run("--expert-bench=quick", "--lf", "--junitxml=out.xml", OUT)
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])
    again.assert_outcomes(passed=6, failed=1)  # the gate brought back the examples it judges
    assert again.ret == 1
    again.stdout.fnmatch_lines([f"*{REGRESSION}*", f"FAILED {GATE} - *"])
    assert_failed_gate_in_junit(regressed)
    examples = [r for r in regressed.results() if r["type"] == "example"]
    assert [r["id"] for r in examples] == ["q0", "q1", "q2", "q3", "q4", "q5"]


@pytest.mark.parametrize("dist", ["load", "loadfile"])
def test_under_xdist_the_controller_reports_the_failed_gate_once(
    regressed: Project, dist: str
) -> None:
    result = regressed.run(
        "--expert-bench=quick", "-n", "2", "--dist", dist, "--junitxml=out.xml", OUT,
        subprocess=True,
    )  # fmt: skip
    result.assert_outcomes(passed=6, failed=1)
    assert result.ret == 1
    assert result.stdout.str().count(f"FAILED {GATE}") == 1
    result.stdout.fnmatch_lines([f"*{REGRESSION}*", "=*= 1 failed, 6 passed in *s =*="])
    assert_failed_gate_in_junit(regressed)


def test_deselecting_the_gate_runs_the_examples_and_a_regression_still_fails_the_session(
    regressed: Project,
) -> None:
    result = regressed.run("--expert-bench=quick", "-k", "not gate", "--junitxml=out.xml", OUT)
    result.assert_outcomes(passed=6, deselected=1)
    assert result.ret == 1
    assert "mini::gate" not in result.stdout.str()
    result.stdout.fnmatch_lines([f"*{REGRESSION}*"])
    suite, cases = gate_cases(regressed)
    assert cases == [] and (suite.get("tests"), suite.get("failures")) == ("6", "0")
    row = regressed.metric(regressed.results(), "mini.accuracy")
    assert row["status"] == "regression"
