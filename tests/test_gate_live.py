"""The gate's verdicts against a real OpenAI-compatible server on 127.0.0.1, with JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.helpers import QUESTIONS, Project
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
RIGHT = {text: f"The answer is {answer.split()[-1]}." for _, text, answer in QUESTIONS}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=RIGHT) as fake:
        yield fake


def use(project: Project, server: FakeOpenAI) -> None:
    target = {"kind": "openai", "base_url": server.base_url, "model": "m", "max_retries": 0}
    project.targets({"live": target}, default="live")


def junit(project: Project) -> ET.Element:
    return ET.parse(project.root / "junit.xml").getroot()


def test_a_metric_over_the_few_survivors_of_a_failing_server_fails_the_gate(
    project: Project, server: FakeOpenAI
) -> None:
    use(project, server)
    assert project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT).ret == 0
    for _, text, _ in QUESTIONS[1:]:
        server.script(match=text, faults=["500"])  # five of six requests fail
    result = project.run("--expert-bench=quick", "--junitxml=junit.xml", OUT)
    assert result.ret == 1
    result.assert_outcomes(passed=1, errors=5, failed=1)  # the gate: incomplete
    result.stdout.fnmatch_lines(
        [
            "Gate failed: 0 regressions, 1 incomplete, 5 errored examples in 1 benchmark.",
            "INCOMPLETE mini.accuracy: only 1 of 6 examples scored (below 90%): the rest errored",
        ]
    )
    summary = (project.report_dir() / "summary.md").read_text()
    assert "No regressions" not in summary and "Gate failed" in summary
    suite = junit(project).find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("errors") == "5"
    gate = next(c for c in suite.iter("testcase") if c.get("name", "").endswith("gate"))
    failure = gate.find("failure")
    assert failure is not None and "INCOMPLETE mini.accuracy" in (failure.text or "")


def test_a_rerun_of_an_unchanged_model_passes_its_gate(
    project: Project, server: FakeOpenAI
) -> None:
    use(project, server)
    project.run("--expert-bench=quick", "--expert-bench-save-baseline", OUT)
    result = project.run("--expert-bench=quick", "--junitxml=junit.xml", OUT)
    assert result.ret == 0
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["No regressions in 1 benchmark (1 metric ok)."])
    assert server.total == 12  # the default cache asks a finished run's questions again
    suite = junit(project).find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("tests") == "7"
